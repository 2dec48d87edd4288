"""vgrpo-math: math answers checked with math-verify, a built-in vgrpo task plugin."""

from __future__ import annotations

import vgrpo
from vgrpo_math.task import MathParams, MathTask

__all__ = ["MathParams", "MathTask"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``math`` task."""
    return [MathTask()]
