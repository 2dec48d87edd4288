"""Scoring completions: parse, run every reward with a safety net, weight and sum.

A reward that raises, returns a non-finite value or a :class:`~vgrpo.rewards.RewardFailure` scores its
minimum for that item and the failure is counted; values outside the declared range are clipped and counted.
Nothing a plugin does to one completion can abort the batch.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vgrpo.errors import ParamsError
from vgrpo.rewards import Reward, RewardFailure
from vgrpo.task import Sample, Task, TaskParams

log = logging.getLogger(__name__)


@dataclass
class Score:
    """The result for one completion."""

    parsed: Any
    rewards: dict[str, float]
    reward: float
    errors: list[str] = field(default_factory=list)


def safe_parse(task: Task, completion: str, params: TaskParams) -> tuple[Any, str | None]:
    """The task's parse, with any exception turned into (None, message)."""
    try:
        return task.parse(completion, params), None
    except Exception as exc:  # noqa: BLE001 - a parser that raises breaks the contract, not the run
        log.debug("task %s: parse raised", task.name, exc_info=True)
        return None, f"parse raised {type(exc).__name__}: {exc}"


def _check_value(reward: Reward, value: Any) -> tuple[float, str | None]:
    lo, hi = reward.range
    if isinstance(value, RewardFailure):
        return lo, value.kind + (f": {value.message}" if value.message else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            return lo, f"error: returned {type(value).__name__}, expected a number"
    value = float(value)
    if not math.isfinite(value):
        return lo, f"non_finite: returned {value}"
    if value < lo or value > hi:
        return min(max(value, lo), hi), f"out_of_range: returned {value}, range is {reward.range}"
    return value, None


def apply_reward(
    reward: Reward,
    parsed: Sequence[Any],
    samples: Sequence[Sample],
    params: TaskParams,
    completions: Sequence[str],
) -> tuple[list[float], list[str | None]]:
    """Values and per-item failure messages (``None`` = fine) for one reward over a batch."""
    try:
        raw = reward(parsed, samples, params, completions)
    except Exception as exc:  # noqa: BLE001
        if len(parsed) > 1:  # find which items fail: retry one by one
            values, errors = [], []
            for i in range(len(parsed)):
                v, e = apply_reward(reward, parsed[i : i + 1], samples[i : i + 1], params, completions[i : i + 1])
                values += v
                errors += e
            return values, errors
        log.debug("reward %s raised", reward.name, exc_info=True)
        return [reward.minimum], [f"error: {type(exc).__name__}: {exc}"]
    checked = [_check_value(reward, v) for v in raw]
    return [v for v, _ in checked], [e for _, e in checked]


def resolve_weights(
    task: Task, weights: Mapping[str, Any] | None, plugin_rewards: Mapping[str, Reward] | None = None
) -> dict[str, float]:
    """Reward weights for ``task``: its defaults, or exactly the given mapping (unlisted rewards weigh 0)."""
    if weights is None:
        return {k: float(v) for k, v in task.default_weights.items()}
    valid = list(task.reward_map()) + [n for n in (plugin_rewards or {}) if n not in task.reward_map()]
    out = {}
    for name, w in weights.items():
        if name not in valid:
            raise ParamsError(f"reward weights: unknown reward {name!r} for task {task.name!r}; valid: {valid}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ParamsError(f"reward weights: {name!r} must be a finite number, got {w!r}")
        out[name] = float(w)
    return out


def score(
    task: Task,
    completions: Sequence[str],
    samples: Sequence[Sample],
    params: TaskParams | Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
    *,
    plugin_rewards: Mapping[str, Reward] | None = None,
    failures: Counter[str] | None = None,
) -> list[Score]:
    """Parse and reward a batch of completions for one task.

    Every task reward is computed (for reporting); plugin rewards are computed when weighted. The total
    is the weighted sum. ``failures`` (if given) counts reward failures by ``<reward>/<kind>``.
    """
    if len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
    params = task.params(params)
    w = resolve_weights(task, weights, plugin_rewards)
    rewards = list(task.rewards) + [
        plugin_rewards[n] for n in w if n not in task.reward_map() and plugin_rewards is not None
    ]
    parsed, errors = [], []
    for c in completions:
        p, e = safe_parse(task, c, params)
        parsed.append(p)
        errors.append([e] if e else [])
    table: dict[str, list[float]] = {}
    for r in rewards:
        values, errs = apply_reward(r, parsed, samples, params, completions)
        table[r.name] = values
        for i, e in enumerate(errs):
            if e:
                errors[i].append(f"reward {r.name!r} {e}")
                if failures is not None:
                    failures[f"{r.name}/{e.split(':', 1)[0]}"] += 1
    out = []
    for i in range(len(completions)):
        values = {name: table[name][i] for name in table}
        total = float(sum(weight * values[name] for name, weight in w.items()))
        out.append(Score(parsed=parsed[i], rewards=values, reward=total, errors=errors[i]))
    return out
