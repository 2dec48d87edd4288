"""``vgrpo train``, ``vgrpo eval`` and ``vgrpo config``: the commands that run a config."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from vgrpo.cli._common import cells, console, json_arg, out, registry_of
from vgrpo.errors import ParamsError

if TYPE_CHECKING:
    from vgrpo.config import TrainConfig
    from vgrpo.evaluate import EvalSplit
    from vgrpo.models.adapters import ModelAdapter
    from vgrpo.plugins import PluginRegistry
    from vgrpo.task import Task


#: The eval section's fields that `vgrpo eval` options set.
EVAL_FLAGS = {
    "--samples": "num_samples",
    "--k": "pass_k",
    "--temperature": "temperature",
    "--batch-size": "batch_size",
    "--max-new-tokens": "max_new_tokens",
}


def _with_eval_flags(config: TrainConfig, flags: dict[str, Any]) -> TrainConfig:
    """``config`` with the eval options given on the command line (``None``: not given); a bad value is
    reported under its option's name with what is allowed, e.g. ``--samples: must be >= 1, got 0``."""
    from pydantic import ValidationError

    from vgrpo.config import EvalConfig

    given = {EVAL_FLAGS[flag]: value for flag, value in flags.items() if value is not None}
    try:
        section = EvalConfig.model_validate({**config.eval.model_dump(), **given})
    except ValidationError as exc:
        names = {field: flag for flag, field in EVAL_FLAGS.items() if field in given}
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            name = names.get(field, f"eval.{field}")
            problems.append(f"{name}: {_allowed(err)}")
        raise ParamsError("; ".join(problems)) from None
    return config.model_copy(update={"eval": section})


def _allowed(err: Any) -> str:
    """One pydantic error as what is allowed and what was given."""
    ctx, got = err.get("ctx") or {}, err.get("input")
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if err["type"] in bounds:
        op, key = bounds[err["type"]]
        return f"must be {op} {ctx[key]}, got {got!r}"
    if err["type"] == "value_error":  # our validators' messages say what they got
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


#: The file in an eval folder that names the protocol its predictions were parsed under (absent: the default).
PROTOCOL_FILE = "protocol.json"


def _protocol_params(task: Task, protocol: str | None) -> dict[str, Any]:
    """The params ``protocol`` sets for ``task``: its optional ``protocols`` class attribute
    (``{name: {param: value}}``); ``{}`` without a protocol or when the task has none of that name."""
    if protocol is None:
        return {}
    return dict((getattr(task, "protocols", None) or {}).get(protocol, {}))


def _check_protocol(protocol: str, tasks: list[Task], registry: PluginRegistry) -> None:
    """``ParamsError`` when no task of the evaluation has ``protocol``; a console note for each that has not
    (it is evaluated by its own rules)."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", protocol):
        raise ParamsError(f"--protocol: expected a name such as vlm-r1, got {protocol!r}")
    has = [t.name for t in tasks if _protocol_params(t, protocol)]
    if not has:
        known: dict[str, list[str]] = {}
        for name, task in sorted(registry.tasks.items()):
            for p in getattr(task, "protocols", None) or {}:
                known.setdefault(p, []).append(name)
        listed = "; ".join(f"{p} ({', '.join(names)})" for p, names in sorted(known.items())) or "none"
        raise ParamsError(f"--protocol: no task of this evaluation has protocol {protocol!r}; known {listed}")
    for t in tasks:
        if t.name not in has:
            note = f"task {t.name}: no {protocol!r} protocol; evaluated by its own rules"
            console(stderr=True).print(Text(note, style="dim"), soft_wrap=True)


def _protocol_name(protocol: str | None) -> str:
    return "the default protocol" if protocol is None else f"protocol {protocol!r}"


def _claim_eval_dir(eval_dir: Path, protocol: str | None) -> None:
    """Predictions are reused with the ``parsed`` they were made with, so a folder holds one protocol's:
    ``ParamsError`` when its ``predictions.jsonl`` was parsed under another; with a protocol, it is recorded
    in :data:`PROTOCOL_FILE`."""
    marker = eval_dir / PROTOCOL_FILE
    recorded = json.loads(marker.read_text(encoding="utf-8")).get("protocol") if marker.is_file() else None
    if (eval_dir / "predictions.jsonl").is_file() and recorded != protocol:
        raise ParamsError(
            f"{eval_dir} holds predictions parsed under {_protocol_name(recorded)}; evaluate "
            f"{_protocol_name(protocol)} into another folder (--output-dir)"
        )
    if protocol is not None:
        eval_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"protocol": protocol}) + "\n", encoding="utf-8")


@dataclass
class _EvalInputs:
    """What ``vgrpo eval`` evaluates: the model, its adapter, the task splits, and where results go."""

    config: TrainConfig
    model_path: str
    adapter: ModelAdapter
    splits: list[EvalSplit]
    eval_dir: Path


def _eval_inputs(args: argparse.Namespace, registry: PluginRegistry) -> _EvalInputs:
    """The model (a config's latest checkpoint, else its model; or ``--model``), the adapter chosen from the
    model's config.json, then the splits, whose ``coords`` param defaults to that adapter's convention.
    ``--protocol`` sets each task's params of that protocol over the config's (or ``--params``), and the
    default folder becomes ``eval-<protocol>``."""
    from vgrpo.checkpoint import latest_intact_checkpoint
    from vgrpo.config import load_config
    from vgrpo.data import load_jsonl
    from vgrpo.evaluate import EvalSplit, build_eval_splits
    from vgrpo.mixture import task_params
    from vgrpo.models.adapters import adapter_for

    flags = {"--samples": args.samples, "--k": args.k, "--temperature": args.temperature}
    protocol = args.protocol
    folder = "eval" if protocol is None else f"eval-{protocol}"
    if args.config is not None:
        config = _with_eval_flags(load_config(args.config, args.overrides), flags)
        if protocol is not None:
            registry.require(config.required_plugins)
            _check_protocol(protocol, [registry.task(e.task) for e in config.tasks], registry)
            entries = []
            for e in config.tasks:
                params = {**e.params, **_protocol_params(registry.task(e.task), protocol)}
                entries.append(e.model_copy(update={"params": params}))
            config = config.model_copy(update={"tasks": entries})
        out = Path(config.output_dir)
        checkpoint = latest_intact_checkpoint(out)
        model_path = str(checkpoint or config.model.name_or_path)
        adapter = adapter_for(registry.model_adapters, config.model.adapter, model_path)
        splits = build_eval_splits(config, registry, adapter)
        return _EvalInputs(config, model_path, adapter, splits, out / folder)
    if not (args.model and args.task and args.data):
        raise ParamsError("eval: expected CONFIG, or --model PATH --task TASK --data FILE")
    flags |= {"--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens}
    config = _with_eval_flags(load_config(None), flags)
    task = registry.task(args.task)
    given = json_arg(args.params, "--params")
    if protocol is not None:
        _check_protocol(protocol, [task], registry)
        given = {**(given or {}), **_protocol_params(task, protocol)}
    task.params(given)  # a bad --params is reported before the model is read
    adapter = adapter_for(registry.model_adapters, config.model.adapter, args.model)
    params = task_params(task, given, adapter)
    samples = load_jsonl(args.data, task, image_root=args.image_root)
    split = EvalSplit(task, params, samples)
    return _EvalInputs(config, args.model, adapter, [split], Path(args.output_dir or folder))


def cmd_eval(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vgrpo.evaluate import COUNT_KEYS, METRICS, eval_settings, evaluate

    run = _eval_inputs(args, registry_of(args))
    _claim_eval_dir(run.eval_dir, args.protocol)
    mcfg = run.config.model
    model, processor = run.adapter.load(
        run.model_path,
        dtype=getattr(torch, mcfg.dtype),
        attn_implementation=mcfg.attn_implementation,
        min_pixels=mcfg.min_pixels,
        max_pixels=mcfg.max_pixels,
        seed=run.config.seed,
    )
    if torch.cuda.is_available():
        model.to("cuda")
    settings = eval_settings(run.config)
    columns = (TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console(stderr=True)) as progress:
        metrics = evaluate(
            model, processor, run.adapter, run.splits, run.eval_dir, progress=progress, **settings
        )
    n = settings["num_samples"]
    how = "greedy" if n == 1 else f"{n} samples per record at temperature {settings['temperature']:g}"
    how += f", protocol {args.protocol}" if args.protocol else ""
    table = Table(
        title=f"eval of {run.model_path} ({how}) → {run.eval_dir / METRICS}",
        title_justify="left",
        caption="parsed, unparsed: of all completions; one that does not parse counts as wrong",
    )
    for col in ("task", "records", "parsed", "unparsed", "metric", "value"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task_name, values in metrics.items():
        shown = [(k, f"{v:.4f}") for k, v in values.items() if k not in COUNT_KEYS] or [("", "")]
        counts = (task_name, f"{values['n']:.0f}", f"{values['parse_rate']:.1%}", f"{values['unparsed']:.0f}")
        for i, (key, value) in enumerate(shown):
            table.add_row(*cells(*(counts if i == 0 else ("",) * 4), key, value))
    console().print(table)
    return 0


# -- vgrpo train / config ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from vgrpo.config import load_config
    from vgrpo.trainer import Trainer

    config = load_config(args.config, args.overrides)
    registry = registry_of(args)
    if int(os.environ.get("RANK", "0")) == 0 and not args.verbose:  # with -v the trainer logs the same lines
        from vgrpo.env import plugin_summary_lines, version_summary

        err = console(stderr=True)
        for line in [version_summary(), *plugin_summary_lines(registry)]:
            err.print(Text(line, style="dim"))
    trainer = Trainer(config, registry)
    trainer.setup()
    main = (
        int(os.environ.get("RANK", "0")) == 0
    )  # under accelerate/torchrun the first process reports for all
    if main:
        for line in trainer.summary():  # the model adapter, each task's box convention, a resume
            console(stderr=True).print(Text(line, style="dim"), soft_wrap=True)
    out = trainer.train()
    if trainer.interrupted_by is not None:
        if main:
            done = (
                f"checkpoint-{trainer.step} written"
                if trainer.step
                else "before the first step: nothing to save"
            )
            message = f"interrupted at step {trainer.step}, {done}; resume with the same command"
            console(stderr=True).print(Text.assemble(("stopped: ", "yellow"), message), soft_wrap=True)
        return 128 + trainer.interrupted_by  # 130 for SIGINT, 143 for SIGTERM
    if main:
        where = f"metrics in {out / 'metrics.jsonl'}, checkpoints in {out}/checkpoint-*"
        where += f", plot {trainer.plot_path}" if trainer.plot_path else ""
        console().print(Text.assemble(("done: ", "bold green"), where))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from vgrpo.config import TrainConfig, dump_config, load_config

    if args.action == "schema":
        print(json.dumps(TrainConfig.model_json_schema(), indent=2), file=out())
        return 0
    out().write(dump_config(load_config(args.config, args.overrides)))
    return 0
