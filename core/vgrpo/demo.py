"""The demo that learns (``make demo``, ``vgrpo demo CONFIG``), in one process: synthetic data → evaluate
the untrained model → SFT cold start (:mod:`vgrpo.sft`) → evaluate → GRPO from the SFT checkpoint
(:mod:`vgrpo.trainer`) → evaluate → one table of the three evaluations per task, and the plots.

Each evaluation runs on the config's eval splits (``eval.data``), decoded as its ``eval:`` section says
(greedy, or ``num_samples`` completions per record sampled at ``temperature``): every task's own metric, its
parse rate, and the mean over the completions of the format reward and of the task's weighted rewards, scored
exactly as in training. Everything lands in ``<output_dir>``: the SFT run in ``sft/`` (``sft.output_dir``), the GRPO
run at the top, and the evaluations and ``summary.json`` in ``demo/``. The demo always starts new runs: the
files of an earlier demo are moved to ``previous-runs/`` (never deleted), as ``checkpoint.overwrite`` does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vgrpo.config import TrainConfig, load_config
from vgrpo.data import jsonl_lines
from vgrpo.plugins import PluginRegistry, get_registry

__all__ = ["STAGES", "DemoResult", "evaluate_stage", "reward_thirds", "run_demo"]

log = logging.getLogger(__name__)

#: The three evaluations, in order.
STAGES = ("untrained", "after SFT", "after GRPO")
#: Overrides every run of the demo gets: a new run each time (an earlier demo's files are moved aside).
FRESH = ("checkpoint.resume=never", "checkpoint.overwrite=true")


@dataclass
class DemoResult:
    """What the demo measured: each stage's metrics per task, GRPO's reward trend, where things are."""

    evals: dict[str, dict[str, dict[str, float]]]
    """The greedy evaluations: stage → task → metric (the task's own, ``parse_rate``, ``format``, ``reward``)."""
    thirds: dict[str, tuple[float, float]]
    """task → (mean reward over the first third of the GRPO steps, over the last third)."""
    primary: dict[str, str]
    """task → its first metric (``metric_names[0]``)."""
    plots: list[Path]
    output_dir: Path
    sampled: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """The sampled evaluations (with ``eval.num_samples > 1``), as ``evals``: the policy as it is trained."""
    sampling: str = ""
    """How the sampled evaluations sample (how many completions per record at which temperature)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each part, and ``total``."""
    interrupted_by: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "evals": self.evals,
            "grpo_reward_thirds": {t: list(v) for t, v in self.thirds.items()},
            "primary_metric": self.primary,
            "plots": [str(p) for p in self.plots],
            "sampled_evals": self.sampled,
            "sampling": self.sampling,
            "seconds": self.seconds,
            "interrupted_by": self.interrupted_by,
        }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def evaluate_stage(
    config: TrainConfig,
    registry: PluginRegistry,
    model_path: str,
    out_dir: Path,
    progress: Any = None,
    *,
    greedy: bool = True,
) -> dict[str, dict[str, float]]:
    """Evaluation of ``model_path`` on the config's eval splits into ``out_dir`` (predictions.jsonl,
    eval_metrics.json), greedy or (``greedy=False``) sampled as the config's ``eval:`` section says
    (``num_samples`` completions per record at ``temperature``): each task's metrics plus ``format`` and
    ``reward``, the means over every completion of the format reward and of the weighted total, with the
    config's reward weights."""
    import torch

    from vgrpo.evaluate import PREDICTIONS, build_eval_splits, eval_settings, evaluate
    from vgrpo.models.adapters import adapter_for
    from vgrpo.models.loading import load_model
    from vgrpo.scoring import score

    adapter = adapter_for(registry.model_adapters, config.model.adapter, model_path)
    splits = build_eval_splits(config, registry, adapter)
    model, processor = load_model(adapter, model_path, config.model, config.seed)
    if torch.cuda.is_available():
        model.to("cuda")
    settings = {**eval_settings(config), **({"num_samples": 1} if greedy else {})}
    metrics = evaluate(model, processor, adapter, splits, out_dir, progress=progress, **settings)
    lines = jsonl_lines((out_dir / PREDICTIONS).read_text(encoding="utf-8"))
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in map(json.loads, lines):
        rows.setdefault((r["task"], r["id"]), []).append(r)
    for split, item in zip(splits, config.tasks):
        made = [(x, r) for x in split.samples for r in rows[split.task.name, x.id]]
        samples = [
            replace(x, input_size=tuple(r["input_size"])) if r.get("input_size") else x for x, r in made
        ]
        scores = score(
            split.task,
            [r["completion"] for _, r in made],
            samples,
            split.params,
            item.rewards,
            plugin_rewards=registry.rewards,
        )
        values = metrics[split.task.name]
        values["format"] = _mean([s.rewards["format"] for s in scores if "format" in s.rewards])
        values["reward"] = _mean([s.reward for s in scores])
    (out_dir / "eval_metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def sampling(config: TrainConfig) -> str:
    """How the sampled evaluation samples under ``config``, in words ("" when ``eval.num_samples`` is 1)."""
    ev = config.eval
    if ev.num_samples == 1:
        return ""
    nucleus = f", top_p {ev.top_p:g}" if ev.top_p < 1 else ""
    return f"{ev.num_samples} completions per record sampled at temperature {ev.temperature:g}{nucleus}"


def reward_thirds(run_dir: Path) -> dict[str, tuple[float, float]]:
    """Per task, the mean of ``tasks/<task>/reward`` over the first and over the last third of a GRPO run's
    logged steps: whether GRPO raised it."""
    from vgrpo.plot import read_metrics

    rows = read_metrics(run_dir)
    last = max(r["step"] for r in rows)
    tasks = sorted(
        {k.split("/")[1] for r in rows for k in r if k.startswith("tasks/") and k.endswith("/reward")}
    )
    out = {}
    for task in tasks:
        key = f"tasks/{task}/reward"
        first = [r[key] for r in rows if r.get(key) is not None and r["step"] <= last / 3]
        final = [r[key] for r in rows if r.get(key) is not None and r["step"] > 2 * last / 3]
        out[task] = (_mean(first), _mean(final))
    return out


def _fresh(output_dir: Path) -> Path:
    """The demo's folder, empty: an earlier demo's evaluations move to previous-runs/ (nothing is deleted)."""
    from vgrpo.run_dir import move_aside

    demo_dir = output_dir / "demo"
    if demo_dir.exists():
        move_aside(output_dir, [demo_dir])
    demo_dir.mkdir(parents=True)
    return demo_dir


def run_demo(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: PluginRegistry | None = None,
    synth_dir: str | Path | None = None,
    synth: dict[str, Any] | None = None,
    threads: int | None = 1,
    progress: Callable[[], Any] | None = None,
) -> DemoResult:
    """The whole demo (see the module). ``synth_dir``: write the synthetic dataset there first (reused when
    its settings match; ``synth``: :func:`vgrpo.synth.synthesize`'s settings). ``threads``: torch's CPU
    threads (1 by default: for the tiny model more threads cost more in synchronisation than they save).
    ``progress``: a factory of rich Progress bars for the evaluations."""
    import torch

    from vgrpo.checkpoint import latest_intact_checkpoint
    from vgrpo.sft import SFTTrainer
    from vgrpo.synth import synthesize
    from vgrpo.trainer import Trainer

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    registry = registry or get_registry()
    if synth_dir is not None:
        synthesize(synth_dir, reuse=True, registry=registry, **(synth or {}))
    config = load_config(config_path, [*overrides, *FRESH])
    out = Path(config.output_dir)
    demo_dir = _fresh(out)
    primary = {e.task: names[0] for e in config.tasks if (names := registry.task(e.task).metric_names)}
    result = DemoResult(
        {}, {}, primary, [], out, {}, sampling(config), {"synth": round(time.perf_counter() - start, 1)}
    )
    bars = progress or _no_progress
    clock = [time.perf_counter()]

    def timed(name: str) -> None:
        now = time.perf_counter()
        result.seconds[name] = round(now - clock[0], 1)
        clock[0] = now

    def evaluation(stage: str, cfg: TrainConfig, model: str, folder: str) -> None:
        with bars() as bar:
            result.evals[stage] = evaluate_stage(cfg, registry, model, demo_dir / folder, bar)
            if result.sampling:
                where = demo_dir / f"{folder}-sampled"
                result.sampled[stage] = evaluate_stage(cfg, registry, model, where, bar, greedy=False)
        timed(f"eval {stage}")

    try:
        evaluation(STAGES[0], config, config.model.name_or_path, "eval-untrained")
        sft = SFTTrainer(config, registry)
        sft.train()
        timed("sft")
        result.plots += [p for p in [sft.plot_path] if p]
        result.interrupted_by = sft.interrupted_by
        sft_checkpoint = latest_intact_checkpoint(sft.output_dir)
        if sft.interrupted_by is not None or sft_checkpoint is None:
            return result
        evaluation(STAGES[1], config, str(sft_checkpoint), "eval-sft")
        grpo_config = load_config(config_path, [*overrides, *FRESH, f"model.name_or_path={sft_checkpoint}"])
        grpo = Trainer(grpo_config, registry)
        grpo.train()
        timed("grpo")
        result.plots += [p for p in [grpo.plot_path] if p]
        result.interrupted_by = grpo.interrupted_by
        grpo_checkpoint = latest_intact_checkpoint(out)
        if grpo.interrupted_by is None and grpo_checkpoint is not None:
            evaluation(STAGES[2], grpo_config, str(grpo_checkpoint), "eval-grpo")
            result.thirds = reward_thirds(out)
        return result
    finally:
        result.seconds["total"] = round(time.perf_counter() - start, 1)
        (demo_dir / "summary.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")


class _no_progress:  # noqa: N801 - used like a Progress factory
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def stage_means(result: DemoResult, *, sampled: bool = False) -> dict[str, dict[str, float]]:
    """stage → {format, reward, metric}: the means over tasks (metric: each task's first metric) of the
    greedy evaluations, or of the sampled ones."""
    out = {}
    for stage, per_task in (result.sampled if sampled else result.evals).items():
        out[stage] = {
            "format": _mean([v["format"] for v in per_task.values()]),
            "reward": _mean([v["reward"] for v in per_task.values()]),
            "metric": _mean([v[result.primary[t]] for t, v in per_task.items() if t in result.primary]),
        }
    return out


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
