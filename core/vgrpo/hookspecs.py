"""The hooks a vgrpo plugin may implement (pluggy project ``vgrpo``).

Implementations may accept fewer arguments than a spec, so specs can grow new arguments without
breaking existing plugins. Each hook returns a list; vgrpo merges the lists of all plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vgrpo.models.adapters import ModelAdapter
    from vgrpo.rewards import Reward
    from vgrpo.task import Task

PROJECT = "vgrpo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def vgrpo_tasks() -> list[Task | type[Task]]:
    """Return the tasks (instances or classes of :class:`vgrpo.Task`) this plugin provides."""


@hookspec
def vgrpo_rewards() -> list[Reward]:
    """Return named rewards (:class:`vgrpo.Reward`) that any task may use from a config."""


@hookspec
def vgrpo_model_adapters() -> list[ModelAdapter]:
    """Return model adapters (:class:`vgrpo.ModelAdapter` instances) that drive a family of vision-language models."""


HOOK_NAMES: tuple[str, ...] = ("vgrpo_tasks", "vgrpo_rewards", "vgrpo_model_adapters")
