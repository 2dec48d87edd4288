"""vgrpo's pytest plugin (entry point ``pytest11``): fixtures for testing vgrpo plugins.

pytest loads it in every run wherever vgrpo is installed, so it imports nothing heavy (no torch) and loads
no vgrpo plugin until a test asks for a fixture: a broken plugin never breaks anyone's test session.

- ``vgrpo_registry``: the registry of the installed plugins (``vgrpo.load_plugins()``), loaded once.
- ``score_completions``: score completions with a task, e.g.
  ``score_completions("count", ["<think>.</think><answer>3</answer>"], solution=3)[0].rewards["accuracy"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from vgrpo.plugins import PluginRegistry
    from vgrpo.scoring import Score
    from vgrpo.task import Sample, Task

_UNSET: Any = object()


@pytest.fixture(scope="session")
def vgrpo_registry() -> PluginRegistry:
    """The installed vgrpo plugins (``vgrpo.load_plugins()``: broken ones are listed in ``.errors``)."""
    from vgrpo.plugins import load_plugins

    return load_plugins()


@pytest.fixture
def score_completions(vgrpo_registry: PluginRegistry) -> Callable[..., list[Score]]:
    """A function ``(task, completions, solution=…, *, sample=None, params=None, weights=None) -> [Score]``.

    ``task`` is a registered task name or a :class:`vgrpo.Task`; ``completions`` a string or a list. Every
    completion is scored against one sample: ``sample`` (a record or :class:`vgrpo.Sample`; default the
    task's example record) with its solution replaced by ``solution`` when given (checked by the task).
    ``weights`` may name plugin rewards (``{"accuracy": 1, "acme.brevity": 0.5}``).
    """

    def score_completions(
        task: str | Task,
        completions: str | Sequence[str],
        solution: Any = _UNSET,
        *,
        sample: Mapping[str, Any] | Sample | None = None,
        params: Mapping[str, Any] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[Score]:
        from vgrpo.data import sample_from_record
        from vgrpo.scoring import score
        from vgrpo.task import Sample

        task_obj = vgrpo_registry.task(task) if isinstance(task, str) else task
        if isinstance(sample, Sample):
            if solution is not _UNSET:
                sample = dataclasses.replace(sample, solution=task_obj.check_solution(solution))
        else:
            record = dict(task_obj.example if sample is None else sample)
            if solution is not _UNSET:
                record["solution"] = solution
            sample = sample_from_record(record, task_obj, default_id="sample")
        texts = [completions] if isinstance(completions, str) else list(completions)
        return score(
            task_obj, texts, [sample] * len(texts), params, weights, plugin_rewards=vgrpo_registry.rewards
        )

    return score_completions
