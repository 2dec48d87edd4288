"""Scoring completions: parse, run every reward with a safety net, weight and sum — for one task's batch
(:func:`score`) or a whole rollout of a task mixture (:func:`score_rollout`).

A reward that raises, returns a non-finite value or a :class:`~vgrpo.rewards.RewardFailure` scores its
minimum for that item and the failure is counted; values outside the declared range are clipped and counted.
Nothing a plugin does to one completion can abort the batch.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vgrpo.errors import NameConflictError, ParamsError
from vgrpo.metrics import StepStats
from vgrpo.rewards import Reward, RewardFailure, RewardWeights, reward_setting
from vgrpo.task import Sample, Task, TaskParams, call_parse

if TYPE_CHECKING:
    from vgrpo.mixture import MixtureEntry
    from vgrpo.reward_pool import RewardPool

log = logging.getLogger(__name__)


@dataclass
class Score:
    """The result for one completion."""

    parsed: Any
    rewards: dict[str, float]
    reward: float
    errors: list[str] = field(default_factory=list)


def safe_parse(
    task: Task, completion: str, params: TaskParams, sample: Sample | None = None
) -> tuple[Any, str | None]:
    """The task's parse (given ``sample`` when it asks for it, see :func:`~vgrpo.task.call_parse`), with any
    exception turned into (None, message). Every caller that scores or evaluates parses through it."""
    try:
        return call_parse(task, completion, params, sample), None
    except Exception as exc:  # noqa: BLE001 - a parser that raises breaks the contract, not the run
        log.debug("task %s: parse raised", task.name, exc_info=True)
        return None, f"parse raised {type(exc).__name__}: {exc}"


def _check_value(reward: Reward, value: Any) -> tuple[float, str | None]:
    lo, hi = reward.range
    if isinstance(value, RewardFailure):
        return lo, value.kind + (f": {value.message}" if value.message else "")
    if isinstance(value, (str, bytes)):  # "0.75" is text, not a score: a reward bug to count, not to guess
        return lo, f"error: returned {type(value).__name__} {value[:40]!r}, expected a number"
    try:
        value = float(value)  # numpy scalars too
    except OverflowError:
        return lo, "non_finite: returned an integer too large for a float"
    except (TypeError, ValueError):
        return lo, f"error: returned {type(value).__name__}, expected a number"
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
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a reward that calls sys.exit() is a failing reward
        if len(parsed) > 1:  # find which items fail: retry one by one
            values, errors = [], []
            for i in range(len(parsed)):
                v, e = apply_reward(
                    reward, parsed[i : i + 1], samples[i : i + 1], params, completions[i : i + 1]
                )
                values += v
                errors += e
            return values, errors
        log.debug("reward %s raised", reward.name, exc_info=True)
        return [reward.minimum], [f"error: {type(exc).__name__}: {exc}"]
    checked = [_check_value(reward, v) for v in raw]
    return [v for v, _ in checked], [e for _, e in checked]


def resolve_weights(
    task: Task,
    weights: Mapping[str, Any] | None,
    plugin_rewards: Mapping[str, Reward] | None = None,
    *,
    key: str = "rewards",
) -> RewardWeights:
    """Reward weights for ``task``: its defaults, or exactly the given mapping (unlisted rewards weigh 0).

    A weight is a number, or ``{"weight": w, "params": {...}}`` for a reward with a params model; those params
    are validated here (``.params`` of the result), errors naming the key path from ``key``, e.g.
    ``tasks[0].rewards.acme.length_penalty.params.max_words``. A name two plugins register
    (``plugin_rewards.conflicts`` of ``PluginRegistry.rewards``) raises
    :class:`~vgrpo.errors.NameConflictError` naming both; an unknown name, a ``ParamsError`` with the closest.
    """
    if weights is None:
        return RewardWeights({k: float(v) for k, v in task.default_weights.items()})
    valid = list(task.reward_map()) + [n for n in (plugin_rewards or {}) if n not in task.reward_map()]
    conflicts = getattr(plugin_rewards, "conflicts", {})
    resolved = weights.params if isinstance(weights, RewardWeights) else {}
    out = RewardWeights()
    for name, w in weights.items():
        w, given = reward_setting(w, f"{key}.{name}")
        given = resolved.get(name, given)
        if name not in valid and name in conflicts:
            raise NameConflictError(f"reward weights for task {task.name!r}: {conflicts[name]}")
        if name not in valid:
            hint = difflib.get_close_matches(str(name), valid, n=1)
            raise ParamsError(
                f"reward weights: unknown reward {name!r} for task {task.name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid: {valid}"
            )
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ParamsError(f"reward weights: {name!r} must be a finite number, got {w!r}")
        out[name] = float(w)
        if given is not None:
            reward = task.reward_map().get(name) or (plugin_rewards or {})[name]
            out.params[name] = reward.make_params(given, key=f"{key}.{name}.params")
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
    is the weighted sum. ``failures`` (if given) counts reward failures by ``<reward>/<kind>`` and parsers that
    raise as ``parse/error``.
    """
    if len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
    params = task.params(params)
    w = resolve_weights(task, weights, plugin_rewards)
    rewards = list(task.rewards) + [
        plugin_rewards[n] for n in w if n not in task.reward_map() and plugin_rewards is not None
    ]
    parsed, errors = [], []
    for c, sample in zip(completions, samples):
        p, e = safe_parse(task, c, params, sample)
        parsed.append(p)
        errors.append([e] if e else [])
        if e and failures is not None:
            failures["parse/error"] += 1
    table: dict[str, list[float]] = {}
    for r in rewards:
        values, errs = apply_reward(r.with_params(w.params.get(r.name)), parsed, samples, params, completions)
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


@dataclass
class RolloutScores:
    """A rollout's weighted rewards (one per row) and its per-completion statistics."""

    rewards: list[float]
    stats: StepStats


def score_rollout(
    entries: Sequence[MixtureEntry],
    entry_of_row: Sequence[int],
    completions: Sequence[str],
    samples: Sequence[Sample],
    lengths: Sequence[float],
    *,
    plugin_rewards: Mapping[str, Reward] | None = None,
    pool: RewardPool | None = None,
    failures: Counter[str] | None = None,
) -> RolloutScores:
    """Each completion scored by its own mixture entry's task (parser, rewards, weights) — in the reward workers
    when a pool is given — with the statistics the metrics report: reward parts, parse rate, the task's own."""
    calls, rows_of = [], []
    for e, entry in enumerate(entries):
        rows = [i for i, x in enumerate(entry_of_row) if x == e]
        if rows:
            rows_of.append((entry, rows))
            calls.append(
                {
                    "task": entry.task,
                    "completions": [completions[i] for i in rows],
                    "samples": [samples[i] for i in rows],
                    "params": entry.params,
                    "weights": entry.weights,
                    "plugin_rewards": plugin_rewards,
                    "failures": Counter(),
                }
            )
    if pool is not None:
        results = pool.score_many(calls)
    else:
        results = [score(**call) for call in calls]
    totals = [0.0] * len(completions)
    stats = StepStats()
    for (entry, rows), scores, call in zip(rows_of, results, calls):
        task_failures: Counter[str] = call["failures"]
        for i, r in zip(rows, scores):
            totals[i] = r.reward
            values = {
                "parse_rate": float(r.parsed is not None),
                **_task_stats(entry.task, r.parsed, task_failures),
                **r.rewards,
            }
            stats.add(entry.task.name, values, reward=r.reward, length=float(lengths[i]))
        for key, n in task_failures.items():  # every failure named by its task: <task>/<parse|reward>/<kind>
            stats.failures[f"{entry.task.name}/{key}"] += n
            if failures is not None:
                failures[f"{entry.task.name}/{key}"] += n
        stats.first_errors.update(_first_errors(entry.task.name, task_failures, scores))
    return RolloutScores(totals, stats)


def _task_stats(task: Task, parsed: Any, failures: Counter[str] | None) -> dict[str, float]:
    """The task's own statistics of one parsed answer (optional ``Task.step_stats``); plugin code, guarded."""
    method = getattr(task, "step_stats", None)
    if method is None or parsed is None:
        return {}
    try:
        return {str(k): float(v) for k, v in dict(method(parsed) or {}).items()}
    except Exception as exc:  # noqa: BLE001 - a plugin's statistics never stop a run
        if failures is not None:
            failures["step_stats/error"] += 1
        log.debug("task %s: step_stats raised %s", task.name, exc)
        return {}


def _first_errors(task: str, failures: Counter[str], scores: Sequence[Score]) -> dict[str, str]:
    """For each failure key of a call (``parse/error``, ``<reward>/<kind>``), the first error message that
    explains it, under ``<task>/<key>``."""
    found = {}
    for key in failures:
        what = key.split("/", 1)[0]
        marker = "parse" if what in ("parse", "step_stats") else f"{what!r}"
        message = next((e for s in scores for e in s.errors if marker in e), None)
        if message is None:  # a whole failed call: every row carries its cause
            message = next((e for s in scores for e in s.errors), "")
        found[f"{task}/{key}"] = message
    return found
