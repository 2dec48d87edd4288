"""Training metrics: a step's statistics gathered in one place (:class:`StepStats`), and one logger interface
for them (:class:`MetricsLogger`: metrics.jsonl always, TensorBoard and wandb when enabled)."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vgrpo.distributed import Distributed

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    """Per-completion statistics of a step — rewards, lengths, each task's reward parts, parse rate and own
    statistics — and the run's event counters, reduced over processes in one place.

    Each rank adds what it saw; :meth:`reduce` gathers every rank's values (in rank order) and sums the
    counters, so :meth:`row` means the same on one process or on many.
    """

    rewards: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    tasks: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    counters: Counter[str] = field(default_factory=Counter)
    """The run's event totals (skipped samples, non-finite steps, plugin failures), summed over ranks."""
    failures: Counter[str] = field(default_factory=Counter)
    """This step's plugin failures by ``<task>/<parse|reward name|step_stats>/<kind>``."""
    first_errors: dict[str, str] = field(default_factory=dict)
    """An error message for each key of ``failures``: what the console shows the first time it happens."""

    def add(self, task: str, values: dict[str, float], *, reward: float, length: float) -> None:
        """One completion of ``task``: its total reward, its length in tokens and its named statistics."""
        self.rewards.append(float(reward))
        self.lengths.append(float(length))
        stats = self.tasks[task]
        for key, value in {"reward": reward, **values, "completion_length": length}.items():
            stats[key].append(float(value))

    def extend(self, other: StepStats) -> None:
        """Append the completions of ``other`` (another micro-batch of the same step)."""
        self.rewards += other.rewards
        self.lengths += other.lengths
        for task, stats in other.tasks.items():
            for key, values in stats.items():
                self.tasks[task][key] += values
        self.failures.update(other.failures)
        self.first_errors = {**other.first_errors, **self.first_errors}

    def reduce(self, dist: Distributed, counters: Counter[str] | None = None) -> StepStats:
        """Every rank's completions in rank order, with ``counters`` (each rank's own) summed over ranks."""
        part = {
            "rewards": self.rewards,
            "lengths": self.lengths,
            "tasks": {t: dict(s) for t, s in self.tasks.items()},
            "counters": dict(counters or {}),
            "failures": dict(self.failures),
            "first_errors": self.first_errors,
        }
        out = StepStats()
        for other in dist.gather_objects(part):
            out.rewards += other["rewards"]
            out.lengths += other["lengths"]
            for task, stats in other["tasks"].items():
                for key, values in stats.items():
                    out.tasks[task][key] += values
            out.counters.update(other["counters"])
            out.failures.update(other["failures"])
            out.first_errors = {**other["first_errors"], **out.first_errors}
        return out

    def row(self, seconds: float) -> dict[str, Any]:
        """The statistics part of a metrics row: reward (mean, std), completion length, tokens/s, per-task means
        ``tasks/<task>/<key>``, the run totals ``counters/<event>`` and this step's ``step_counters/<event>``."""
        n = len(self.rewards)
        mean = sum(self.rewards) / n if n else float("nan")
        std = math.sqrt(sum((r - mean) ** 2 for r in self.rewards) / (n - 1)) if n > 1 else 0.0
        tokens = sum(self.lengths)
        row: dict[str, Any] = {
            "reward": mean,
            "reward_std": std,
            "completion_length": tokens / len(self.lengths) if self.lengths else float("nan"),
            "step_time_s": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        }
        for task, stats in sorted(self.tasks.items()):
            for key, values in stats.items():
                row[f"tasks/{task}/{key}"] = sum(values) / len(values)
        row.update({f"counters/{key}": count for key, count in sorted(self.counters.items())})
        row.update({f"step_counters/{key}": count for key, count in sorted(self.failures.items())})
        return row

    def report(self, seen: set[str], owner: Callable[[str], str]) -> None:
        """Log the first occurrence of each plugin failure (``seen``: the keys already reported) with the plugin
        (``owner(task)``) and the error, and a warning when a task parsed nothing this step while its parser
        raised."""
        for key in sorted(self.failures):
            if key not in seen:
                seen.add(key)
                task = key.split("/", 1)[0]
                log.warning(
                    "task %s (%s): %s — first occurrence this run (%d this step; counted under counters/%s)",
                    task,
                    owner(task),
                    self.first_errors.get(key, key),
                    self.failures[key],
                    key,
                )
        for task, stats in sorted(self.tasks.items()):
            rate = stats.get("parse_rate", [])
            if (
                rate
                and max(rate) == 0.0
                and self.failures.get(f"{task}/parse/error")
                and f"{task}/parse=0" not in seen
            ):
                seen.add(f"{task}/parse=0")
                log.warning(
                    "task %s (%s): no completion parsed this step and its parser raised on %d: check its "
                    "parse()",
                    task,
                    owner(task),
                    self.failures[f"{task}/parse/error"],
                )


def write_completions(path: Path, rows: list[dict[str, Any]], dist: Distributed) -> None:
    """Append every rank's completion rows (in rank order) to ``path`` (completions.jsonl), from the main process.
    Collective: every rank calls it."""
    everyone = dist.gather_objects(rows)
    if not dist.is_main:
        return
    with Path(path).open("a", encoding="utf-8") as f:
        for part in everyone:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


class MetricsLogger:
    """Writes a row per optimizer step to ``output_dir/metrics.jsonl`` and mirrors it to the enabled sinks."""

    def __init__(
        self, output_dir: Path, *, tensorboard: bool = True, wandb: bool = False, config: Any = None
    ) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tb"))
            except ImportError:
                log.warning(
                    "TensorBoard is not installed (pip install tensorboard); logging to metrics.jsonl only"
                )
        if wandb:
            import wandb as wandb_module  # a clear ImportError is the right message when asked for and missing

            self._wandb = wandb_module.init(config=config, dir=str(output_dir))

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def truncate_after(self, step: int) -> None:
        """Drop rows after ``step`` (a resumed run re-logs the steps after its checkpoint; a cut line goes too)."""
        from vgrpo.run_dir import truncate_jsonl

        self._file.close()
        truncate_jsonl(self.path, step)
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
