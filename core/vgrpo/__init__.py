"""vgrpo: a small, fast GRPO engine for vision-language models whose tasks are plugins.

The public names are listed in ``__all__``; everything else is private and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vgrpo.completion import extract_answer, is_well_formatted, strip_code_fence
from vgrpo.data import load_jsonl
from vgrpo.errors import (
    CheckpointError,
    DataError,
    MissingPluginsError,
    NameConflictError,
    ParamsError,
    PluginError,
    PluginLoadError,
    TrainingError,
    UnknownNameError,
    VgrpoError,
)
from vgrpo.hookspecs import hookimpl
from vgrpo.plugins import PluginRegistry, get_registry, load_plugins
from vgrpo.rewards import Reward, RewardFailure, format_reward, reward
from vgrpo.scoring import Score, score
from vgrpo.task import PromptTemplate, Sample, Task, TaskParams

if TYPE_CHECKING:
    from vgrpo.models.adapters import ModelAdapter

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``vgrpo.ModelAdapter`` is imported on first use: it needs torch, which scoring rewards does not."""
    if name == "ModelAdapter":
        from vgrpo.models.adapters import ModelAdapter

        return ModelAdapter
    raise AttributeError(f"module 'vgrpo' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "DataError",
    "MissingPluginsError",
    "ModelAdapter",
    "NameConflictError",
    "ParamsError",
    "PluginError",
    "PluginLoadError",
    "PluginRegistry",
    "PromptTemplate",
    "Reward",
    "RewardFailure",
    "Sample",
    "Score",
    "Task",
    "TaskParams",
    "TrainingError",
    "UnknownNameError",
    "VgrpoError",
    "__version__",
    "extract_answer",
    "format_reward",
    "get_registry",
    "hookimpl",
    "is_well_formatted",
    "load_jsonl",
    "load_plugins",
    "reward",
    "score",
    "strip_code_fence",
]
