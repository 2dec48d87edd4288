"""``vgrpo sft``, ``vgrpo plot`` and ``vgrpo demo``: the cold start before GRPO, a run's plot, and the demo
that does both and shows what they learned."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from vgrpo.cli._common import cells, console, out, registry_of

if TYPE_CHECKING:
    from vgrpo.demo import DemoResult


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, command: Callable) -> None:
    """Register the commands of this module (``command`` is the parser's subcommand factory)."""
    p = command(
        sub, common, "sft", cmd_sft, "supervised fine-tuning (the cold start before GRPO) on a config's tasks"
    )
    p.add_argument("config", help="YAML config, e.g. examples/tiny.yaml (its tasks: and sft: sections)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.steps=50 sft.lr=1e-4")

    p = command(
        sub, common, "plot", cmd_plot, "plot a run's metrics (reward parts, parse rate, lengths, kl, eval)"
    )
    p.add_argument("run_dir", help="output_dir of a `vgrpo train` or `vgrpo sft` run")
    p.add_argument("-o", "--output", help="PNG file to write (default RUN_DIR/plot.png)")

    about = "synthetic data, eval, SFT, eval, GRPO, eval: the table of what the tiny model learned"
    p = command(sub, common, "demo", cmd_demo, about)
    p.add_argument("config", help="YAML config, e.g. examples/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. seed=1 output_dir=runs/demo-1")
    p.add_argument("--synth", metavar="DIR", help="write the synthetic dataset the config reads here first")
    p.add_argument("--n", type=int, default=100, help="train records per task (--synth, default 100)")
    p.add_argument("--n-val", type=int, help="val records per task (--synth, default a tenth of --n)")
    p.add_argument("--image-size", type=int, default=224, help="image side in pixels (--synth, default 224)")
    p.add_argument("--max-shapes", type=int, default=6, help="shapes per scene at most (--synth, default 6)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's choice)")


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun the first process reports


def cmd_sft(args: argparse.Namespace) -> int:
    from vgrpo.config import load_config
    from vgrpo.sft import SFTTrainer

    config = load_config(args.config, args.overrides)
    registry = registry_of(args)
    if _main_process() and not args.verbose:
        from vgrpo.env import plugin_summary_lines, version_summary

        for line in [version_summary(), *plugin_summary_lines(registry)]:
            console(stderr=True).print(Text(line, style="dim"))
    trainer = SFTTrainer(config, registry)
    trainer.setup()
    if _main_process() and trainer.resumed is not None:
        console(stderr=True).print(Text(str(trainer.resumed), style="dim"), soft_wrap=True)
    run = trainer.train()
    if trainer.interrupted_by is not None:
        if _main_process():
            done = (
                f"checkpoint-{trainer.step} written"
                if trainer.step
                else "before the first step: nothing to save"
            )
            message = f"interrupted at step {trainer.step}, {done}; resume with the same command"
            console(stderr=True).print(Text.assemble(("stopped: ", "yellow"), message), soft_wrap=True)
        return 128 + trainer.interrupted_by
    if _main_process():
        checkpoint = run / f"checkpoint-{trainer.step}"
        plot = f", plot {trainer.plot_path}" if trainer.plot_path else ""
        console().print(
            Text.assemble(
                ("done: ", "bold green"), f"metrics in {run / 'metrics.jsonl'}{plot}, checkpoint {checkpoint}"
            ),
            soft_wrap=True,
        )
        console().print(
            Text(f"GRPO from it: vgrpo train {args.config} model.name_or_path={checkpoint}"), soft_wrap=True
        )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vgrpo.plot import plot_run

    print(plot_run(args.run_dir, args.output), file=out())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vgrpo.demo import run_demo

    def bars() -> Progress:
        columns = (TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        return Progress(*columns, console=console(stderr=True))

    synth = {
        "n_per_task": args.n,
        "n_val": args.n_val,
        "image_size": args.image_size,
        "max_shapes": args.max_shapes,
    }
    result = run_demo(
        args.config,
        args.overrides,
        registry=registry_of(args),
        synth_dir=args.synth,
        synth=synth,
        threads=args.threads or None,
        progress=bars,
    )
    console().print(demo_table(result))
    if result.sampled:
        console().print(demo_table(result, sampled=True))
    for line in demo_notes(result):
        console().print(Text(line), soft_wrap=True)
    return 128 + result.interrupted_by if result.interrupted_by is not None else 0


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def demo_table(result: DemoResult, *, sampled: bool = False) -> Table:
    """The three evaluations side by side (the greedy ones, or the sampled ones): per task its format reward,
    mean reward, parse rate and metrics, then their means over the tasks."""
    from vgrpo.demo import STAGES, stage_means
    from vgrpo.evaluate import COUNT_KEYS

    evals = result.sampled if sampled else result.evals
    stages = [s for s in STAGES if s in evals]
    how = result.sampling if sampled else "greedy"
    table = Table(
        title=f"evaluation on each task's val split: {how}",
        title_justify="left",
        caption="reward: the task's weighted rewards (accuracy + format), as in training; "
        "metric: each task's own (evaluation)",
        caption_justify="left",
    )
    for col in ("task", "metric", *stages):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    tasks = list(evals[stages[0]]) if stages else []
    for task in tasks:
        first = evals[stages[0]][task]
        shown = ("format", "reward", "parse_rate")
        keys = [*shown, *(k for k in first if k not in (*COUNT_KEYS, *shown))]
        for i, key in enumerate(keys):
            values = [_cell(evals[s].get(task, {}).get(key)) for s in stages]
            table.add_row(*cells(task if i == 0 else "", key, *values))
        table.add_section()
    means = stage_means(result, sampled=sampled)
    for i, key in enumerate(("format", "reward", "metric")):
        label = "metric (each task's first)" if key == "metric" else key
        table.add_row(*cells("mean" if i == 0 else "", label, *(_cell(means[s][key]) for s in stages)))
    return table


def demo_notes(result: DemoResult) -> list[str]:
    """The lines under the table: GRPO's reward trend per task, where the plots are, how long it took."""
    lines = []
    if result.thirds:
        trend = ", ".join(f"{t} {a:.3f} → {b:.3f}" for t, (a, b) in result.thirds.items())
        lines.append(f"GRPO training reward, first → last third of the steps: {trend}")
    if result.plots:
        lines.append("plots: " + ", ".join(str(p) for p in result.plots))
    lines.append(f"evaluations and summary.json in {result.output_dir / 'demo'}")
    if "total" in result.seconds:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items() if k != "total")
        lines.append(f"took {result.seconds['total']:.0f} s ({parts})")
    return lines
