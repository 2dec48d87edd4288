"""vgrpo-acme-cls: an example third-party vgrpo plugin for classification among candidate classes.

It registers one task, ``acme.cls``, through the ``vgrpo_tasks`` hook.
"""

from __future__ import annotations

import vgrpo
from acme_cls.task import ClsTask, macro_accuracy, normalise, resolve

__all__ = ["ClsTask", "macro_accuracy", "normalise", "resolve"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``acme.cls`` task."""
    return [ClsTask()]
