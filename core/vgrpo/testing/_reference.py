"""``check_task``'s check of a task's reference completion (the target of ``vgrpo sft``): for every example
record and params variant, it parses back to an answer the task calls correct and scores the maximum of every
reward the task weighs by default."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from vgrpo.rewards import Reward, RewardFailure
from vgrpo.task import Sample, Task, TaskParams, call_parse

#: How far below its declared maximum a reward of a reference completion may land (boxes written to 0.01 px).
TOLERANCE = 1e-3


class _Sink(Protocol):
    def add(self, kind: str, detail: str = "") -> None: ...


def _short(value: Any, limit: int = 90) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}…{text[-10:]}"


def implements_reference(task: Task) -> bool:
    """Whether the task overrides :meth:`vgrpo.Task.reference_completion` (the default gives none)."""
    method = getattr(type(task), "reference_completion", None)
    return method is not None and method is not Task.reference_completion


def _value(reward: Reward, parsed: Any, sample: Sample, params: TaskParams, text: str) -> float | str:
    """The reward of one completion, or why there is none."""
    try:
        value = reward([parsed], [sample], params, [text])[0]
    except Exception as exc:  # noqa: BLE001 - plugin code
        return f"raised {type(exc).__name__}: {exc}"
    if isinstance(value, RewardFailure):
        return f"failed ({value.kind})"
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return f"returned {_short(value)}"
    return number if math.isfinite(number) else f"returned {number}"


def check_reference(
    task: Task, samples: Sequence[Sample], variants: Sequence[TaskParams], v: _Sink, note: Any
) -> None:
    """Report into ``v`` every example record (``samples``) whose reference completion, under any params
    variant, raises, is no string, does not parse, is not ``correct``, or misses a weighted reward's maximum.
    ``None`` (no reference for that record) is allowed. ``note(params)`` says which variant."""
    if not implements_reference(task):
        return
    weighted = [
        r for r in task.rewards if isinstance(r, Reward) and task.default_weights.get(r.name, 0.0) > 0
    ]
    for sample in samples:
        for params in variants:
            where = f"record {sample.id!r}{note(params)}"
            try:
                text = task.reference_completion(sample, params)
            except Exception as exc:  # noqa: BLE001 - plugin code
                v.add(f"reference_completion raised {type(exc).__name__}", f"on {where}: {exc}")
                continue
            if text is None:
                continue
            if not isinstance(text, str):
                v.add(
                    "reference_completion returned no string (expected str or None):",
                    f"{_short(text)} on {where}",
                )
                continue
            try:
                parsed = call_parse(task, text, params, sample)
            except Exception:  # noqa: BLE001 - the parser check reports it
                parsed = None
            if parsed is None:
                v.add("reference_completion does not parse back to an answer:", f"{_short(text)} on {where}")
                continue
            try:
                right = bool(task.correct([parsed], [sample], params)[0])
            except Exception:  # noqa: BLE001 - the metric check reports it
                right = True
            if not right:
                v.add(
                    "reference_completion is not a correct answer (correct() is False):",
                    f"{_short(text)} parsed as {_short(parsed, 60)} on {where}",
                )
            for reward in weighted:
                value = _value(reward, parsed, sample, params, text)
                best = reward.range[1]
                if isinstance(value, str) or value < best - TOLERANCE:
                    got = value if isinstance(value, str) else f"scores {value:.6g}"
                    v.add(
                        f"reference_completion misses the maximum of reward {reward.name!r} ({best:g}):",
                        f"{_short(text)} {got} on {where}",
                    )
