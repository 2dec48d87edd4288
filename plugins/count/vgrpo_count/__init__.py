"""vgrpo-count: object counting, a built-in vgrpo task plugin."""

from __future__ import annotations

import vgrpo
from vgrpo_count.task import CountTask

__all__ = ["CountTask"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``count`` task."""
    return [CountTask()]
