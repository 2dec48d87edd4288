"""Helpers for testing vgrpo plugins: contract checks, a fuzzer of model output, a reward caller.

``check_task(task)`` and ``check_reward(reward)`` run everything vgrpo relies on (template, total parser,
rewards inside their ranges, params defaults, metric at its best on perfect predictions) and fail with one
``AssertionError`` listing every violation; ``call_reward(reward, completion=..., sample=..., params=...)``
calls one reward on one completion as vgrpo does, for unit tests of its values. vgrpo also registers a
pytest plugin (:mod:`vgrpo.testing.pytest_plugin`) with the fixtures ``vgrpo_registry`` and
``score_completions``.
"""

from __future__ import annotations

from vgrpo.testing._call import call_reward
from vgrpo.testing._contract import check_reward, check_task
from vgrpo.testing._fuzz import fuzz_completions

__all__ = ["call_reward", "check_reward", "check_task", "fuzz_completions"]
