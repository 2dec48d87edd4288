"""vgrpo-ovd: open-vocabulary detection, a built-in vgrpo task plugin."""

from __future__ import annotations

import vgrpo
from vgrpo_ovd.task import OvdParams, OvdTask

__all__ = ["OvdParams", "OvdTask"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``ovd`` task."""
    return [OvdTask()]
