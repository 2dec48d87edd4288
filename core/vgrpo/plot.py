"""The plot of a run (``vgrpo plot RUN_DIR``): its metrics.jsonl as one PNG, readable at a glance.

Panels, each over optimizer steps: the reward (GRPO) or the loss (SFT) of the run and of each task; one panel
per task with its reward parts (the ``tasks/<task>/<name>`` values between 0 and 1: accuracy, format, ...);
the parse rate and the completion length per task; the task statistics outside [0, 1] (e.g. OVD's
``pred_count``); the KL; and the evaluations (``eval/<task>/<metric>``). Noisy per-step values are drawn
faintly with a moving average over them. ``vgrpo train`` and ``vgrpo sft`` write ``plot.png`` into their
output_dir at the end.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vgrpo.data import jsonl_lines
from vgrpo.errors import DataError

__all__ = ["PLOT", "plot_run", "read_metrics"]

PLOT = "plot.png"
#: Per-task keys that are not reward parts.
_TASK_STATS = ("reward", "parse_rate", "completion_length", "loss")
PALETTE = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)
#: Evaluation keys that are counts, not metrics.
_EVAL_COUNTS = ("n", "unparsed")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` (a line cut by a kill is skipped); a :class:`DataError` when
    there is no such file or it holds no row."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = jsonl_lines(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise DataError(
            f"no metrics to plot ({exc.strerror or exc}): expected the output_dir of a `vgrpo train` or "
            "`vgrpo sft` run",
            file=path,
        ) from None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    if not rows:
        raise DataError("holds no metrics rows yet: plot a run after its first logged step", file=path)
    return rows


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` where it is a finite number."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _line(
    ax: Any, rows: Sequence[dict[str, Any]], key: str, label: str, colour: Any, *, bold: bool = False
) -> bool:
    """Draw one series (faint raw values under a moving average when noisy); False when it has no value."""
    steps, values = _series(rows, key)
    if not values:
        return False
    window = max(1, len(values) // 10)
    width = 2.2 if bold else 1.4
    if window > 1:
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(steps, _smooth(values, window), color=colour, linewidth=width, label=label)
    else:
        ax.plot(
            steps,
            values,
            color=colour,
            linewidth=width,
            marker="o" if len(values) < 20 else None,
            markersize=3,
            label=label,
        )
    return True


def _panels(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(key, label), ...]) of each panel worth drawing, in reading order."""
    keys = sorted({k for r in rows for k in r})
    tasks = sorted({k.split("/")[1] for k in keys if k.startswith("tasks/") and k.count("/") == 2})
    per_task: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        if k.startswith("tasks/") and k.count("/") == 2:
            per_task[k.split("/")[1]].append(k.split("/")[2])
    grpo = any("reward" in r for r in rows)
    main = "reward" if grpo else "loss"
    panels = [
        (main, [(main, "all tasks")] + [(f"tasks/{t}/{main}", t) for t in tasks if main in per_task[t]])
    ]
    bounded = {}
    for t in tasks:
        parts = [n for n in per_task[t] if n not in _TASK_STATS]
        bounded[t] = [n for n in parts if all(0.0 <= v <= 1.0 for v in _series(rows, f"tasks/{t}/{n}")[1])]
        if bounded[t]:
            panels.append((f"{t}: reward parts", [(f"tasks/{t}/{n}", n) for n in bounded[t]]))
    for stat, title in (("parse_rate", "parse rate"), ("completion_length", "completion length (tokens)")):
        lines = [(f"tasks/{t}/{stat}", t) for t in tasks if stat in per_task[t]]
        if lines:
            panels.append((title, lines))
    other = [
        (f"tasks/{t}/{n}", f"{t} {n}")
        for t in tasks
        for n in per_task[t]
        if n not in _TASK_STATS and n not in bounded[t]
    ]
    if other:
        panels.append(("task statistics", other))
    if grpo and any(v != 0.0 for v in _series(rows, "kl")[1]):  # beta 0 (no reference): no KL to draw
        panels.append(("kl", [("kl", "kl to the reference")]))
    evals = [
        (k, k.removeprefix("eval/"))
        for k in keys
        if k.startswith("eval/") and k.rsplit("/", 1)[-1] not in _EVAL_COUNTS
    ]
    if evals:
        panels.append(("evaluation", evals))
    return panels


def plot_run(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Draw ``run_dir/metrics.jsonl`` (see the module) into ``out`` (default ``run_dir/plot.png``); returns
    the PNG's path. Needs matplotlib (drawn without pyplot: no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    panels = _panels(rows)
    cols = 3 if len(panels) > 4 else 2 if len(panels) > 1 else 1
    n_rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.3 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    colours = _colours(rows)
    by_task = {"reward", "loss", "parse rate", "completion length (tokens)"}  # a line per task: its colour
    for i, (name, lines) in enumerate(panels):
        ax = fig.add_subplot(n_rows, cols, i + 1)
        drawn = 0
        for j, (key, label) in enumerate(lines):
            task = key.split("/")[1] if key.startswith("tasks/") else None
            colour = colours.get(task, "black") if name in by_task else PALETTE[j % len(PALETTE)]
            drawn += _line(ax, rows, key, label, colour, bold=label == "all tasks")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="best")
    kind = "GRPO" if any("reward" in r for r in rows) else "SFT"
    last = rows[-1]["step"]
    fig.suptitle(title or f"{run_dir}: {kind}, {last} steps", fontsize=12)
    path = Path(out) if out is not None else run_dir / PLOT
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _colours(rows: Sequence[dict[str, Any]]) -> dict[str | None, Any]:
    """One colour per task, the same in every panel."""
    tasks = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("tasks/") and k.count("/") == 2})
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}
