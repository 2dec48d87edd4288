"""vgrpo-rec: referring expression comprehension (one box per phrase), a built-in vgrpo task plugin."""

from __future__ import annotations

import vgrpo
from vgrpo_rec.parse import parse_box
from vgrpo_rec.task import RecParams, RecTask

__all__ = ["RecParams", "RecTask", "parse_box"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``rec`` task."""
    return [RecTask()]
