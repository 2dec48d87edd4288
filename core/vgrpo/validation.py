"""Checks that a task honours the contract, run when a plugin registers it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel

from vgrpo.data import sample_from_record
from vgrpo.rewards import Reward, RewardFailure
from vgrpo.scoring import _check_value
from vgrpo.task import TASK_NAME_RE, Task, TaskParams, call_parse


def validate_task(task: Task) -> list[str]:
    """Problems that make ``task`` unusable, as sentences; empty when it honours the contract."""
    problems: list[str] = []
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not TASK_NAME_RE.match(name):
        problems.append(
            f"name {name!r} is invalid: expected lowercase words of [a-z0-9_], dot-separated (e.g. 'acme.chartqa')"
        )
    try:
        Version(str(task.version))
    except InvalidVersion:
        problems.append(f"version {task.version!r} is not a PEP 440 version")
    if (
        not isinstance(task.description, str)
        or not task.description.strip()
        or "\n" in task.description.strip()
    ):
        problems.append("description must be one non-empty line")

    params = None
    if not (isinstance(task.Params, type) and issubclass(task.Params, BaseModel)):
        problems.append("Params must be a pydantic model (subclass vgrpo.TaskParams)")
    else:
        missing = [k for k, f in task.Params.model_fields.items() if f.is_required()]
        if missing:
            problems.append(f"Params fields without a default: {missing}")
        else:
            params = task.Params()
        if not issubclass(task.Params, TaskParams):
            problems.append("Params must subclass vgrpo.TaskParams")

    for method in ("parse", "metric"):
        if getattr(type(task), method, None) is getattr(Task, method):
            problems.append(f"{method}() is not implemented")

    rewards = list(task.rewards or ())
    if not rewards:
        problems.append("declares no rewards")
    if not all(isinstance(r, Reward) for r in rewards):
        problems.append("rewards must be vgrpo.Reward objects (use the @vgrpo.reward decorator)")
        rewards = [r for r in rewards if isinstance(r, Reward)]
    names = [r.name for r in rewards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate reward names {dupes}")
    if not isinstance(task.default_weights, Mapping):
        problems.append("default_weights must map reward names to weights")
    else:
        unknown = [k for k in task.default_weights if k not in names]
        if unknown:
            problems.append(f"default_weights name unknown rewards {unknown}; rewards are {names}")
        bad = [
            k
            for k, w in task.default_weights.items()
            if not isinstance(w, (int, float)) or not math.isfinite(w)
        ]
        if bad:
            problems.append(f"default_weights must be finite numbers: {bad}")

    if problems or params is None:
        return problems

    # The example record must load, render and score: this catches broken templates and parsers early.
    try:
        sample = sample_from_record(task.example, task, default_id="example")
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin's code raised
        return [f"example record does not load: {exc}"]
    try:
        messages = task.build_prompt(sample, params)
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            problems.append("build_prompt must return a non-empty list of chat messages (dicts)")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"template does not render on the example: {exc}")
    for text in ("", task.example_completion):
        try:
            parsed = call_parse(task, text, params, sample)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"parse() raised {type(exc).__name__} on {text[:40]!r}: {exc}")
            continue
        for r in rewards:
            try:
                (value,) = r([parsed], [sample], params, [text])
                _, failure = (None, None) if isinstance(value, RewardFailure) else _check_value(r, value)
                if failure is not None:  # numpy scalars are numbers, as when scoring
                    problems.append(f"reward {r.name!r} gave {value!r} on the example ({failure})")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"reward {r.name!r} raised {type(exc).__name__} on the example: {exc}")
    return problems
