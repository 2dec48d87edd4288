"""Call one reward on one completion the way vgrpo does, for a plugin's unit tests."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from vgrpo.data import sample_from_record
from vgrpo.errors import UnknownNameError
from vgrpo.rewards import Reward
from vgrpo.scoring import _check_value
from vgrpo.task import Sample, Task, call_parse

_UNSET: Any = object()


class _AnyTask(Task):
    """Loads a record (and validates params) for :func:`call_reward` when no task is given."""

    name = "any"


def call_reward(
    reward: Reward | str,
    *,
    completion: str = "",
    sample: Mapping[str, Any] | Sample | None = None,
    params: Mapping[str, Any] | BaseModel | None = None,
    task: Task | str | None = None,
    parsed: Any = _UNSET,
) -> float:
    """``reward``'s value for one completion, called as vgrpo calls it in training.

    vgrpo calls a :class:`~vgrpo.Reward` on a batch, ``reward([parsed], [sample], params, [completion])``,
    passing the function only the arguments it declares; this makes that call for one completion and returns
    the value.

    - Without ``task`` nothing is parsed: the reward gets ``parsed`` (default ``None``), ``sample`` (a record
      dict, its ``solution`` optional, or a :class:`~vgrpo.Sample`; default: an empty one) and ``params`` (a
      pydantic model as it is, or a mapping of :class:`~vgrpo.TaskParams` fields; default ``TaskParams()``).
    - With ``task`` (a :class:`~vgrpo.Task` or a registered task name) the completion is parsed by the task's
      parser, given the sample when it asks for it, unless ``parsed`` is passed; a record is checked by the
      task (default: the task's ``example``) and ``params`` are the task's (a mapping validated, missing keys
      default). ``reward`` may then be the name of one of the task's rewards.
    - ``reward`` may be the name of an installed plugin's reward (``"acme.length"``).

    Unlike training, nothing is caught, so a test sees the real failure: what the parser or the reward raises
    propagates, and a value vgrpo would replace (not a finite number, outside the declared range, a
    :class:`~vgrpo.RewardFailure`) raises ``AssertionError`` saying what vgrpo would score instead.
    """
    task_obj = _task(task)
    reward_obj = _reward(reward, task_obj)
    loader = task_obj or _AnyTask()
    if isinstance(sample, Sample):
        item = sample
    elif sample is None and task_obj is None:
        item = Sample(id="sample")
    elif task_obj is None:  # a record of any shape: no ground truth is checked, none is required
        item = sample_from_record({"solution": None, **sample}, loader, default_id="sample")
    else:
        record = task_obj.example if sample is None else sample
        item = sample_from_record(dict(record), task_obj, default_id="sample")
    if isinstance(params, BaseModel) and task_obj is None:
        task_params = params
    else:
        task_params = loader.params(params)
    if parsed is _UNSET:
        parsed = None if task_obj is None else call_parse(task_obj, completion, task_params, item)
    [value] = reward_obj([parsed], [item], task_params, [completion])
    checked, problem = _check_value(reward_obj, value)
    if problem is not None:
        shown = completion if len(completion) <= 80 else completion[:77] + "..."
        raise AssertionError(
            f"reward {reward_obj.name!r} on {shown!r} (parsed {parsed!r}): {problem}; vgrpo would score "
            f"{checked} and count it"
        )
    return checked


def _task(task: Task | str | None) -> Task | None:
    if task is None or isinstance(task, Task):
        return task
    if isinstance(task, type) and issubclass(task, Task):
        return task()
    from vgrpo.plugins import get_registry

    return get_registry().task(task)


def _reward(reward: Reward | str, task: Task | None) -> Reward:
    if isinstance(reward, Reward):
        return reward
    if isinstance(reward, str):
        from vgrpo.plugins import get_registry

        own = task.reward_map() if task is not None else {}
        if reward in own:
            return own[reward]
        registry = get_registry()
        if reward in registry.rewards or not own:
            return registry.reward(reward)  # a conflicted or unknown name raises, saying so
        known = [*own, *registry.rewards]
        hint = difflib.get_close_matches(reward, known, n=1)
        raise UnknownNameError(
            f"unknown reward {reward!r} for task {task.name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; the task's: {list(own)}, installed plugins': {list(registry.rewards)}"
        )
    raise TypeError(
        f"expected a vgrpo.Reward (decorate the function with @vgrpo.reward) or a reward name, got {reward!r}"
    )
