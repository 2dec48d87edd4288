"""vgrpo-acme-docqa: an example third-party vgrpo plugin for document and chart question answering.

It registers one task, ``acme.docqa`` (third-party names are dotted), through the ``vgrpo_tasks`` hook.
"""

from __future__ import annotations

import vgrpo
from acme_docqa.anls import anls, exact_match
from acme_docqa.task import DocQAParams, DocQATask

__all__ = ["DocQAParams", "DocQATask", "anls", "exact_match"]


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    """The ``acme.docqa`` task."""
    return [DocQATask()]
