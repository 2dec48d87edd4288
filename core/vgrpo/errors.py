"""vgrpo's exception tree. Every error says what was expected and where.

VgrpoError
├── PluginError                 a plugin could not be used
│   ├── PluginLoadError         import failed, bad hook, invalid task (strict mode raises it)
│   ├── NameConflictError       the same task/reward name from two distributions
│   ├── UnknownNameError        a task/reward/adapter name nobody registered
│   └── MissingPluginsError     ``required_plugins`` not satisfied
├── ParamsError                 bad task params, reward weights or config keys
├── TrainingError               training cannot go on (non-finite loss, out of memory)
├── CheckpointError             a checkpoint that cannot be resumed (missing parts, another layout)
└── DataError                   a bad JSONL record: file, line, field, what was expected
    └── TemplateFieldError      a record lacks a field the prompt template needs (also a KeyError)
"""

from __future__ import annotations

from pathlib import Path


class VgrpoError(Exception):
    """Base class of every error vgrpo raises on purpose."""


class PluginError(VgrpoError):
    """A plugin could not be loaded or used."""


class PluginLoadError(PluginError):
    """A plugin failed to import, declared a bad hook, or registered an invalid task."""


class NameConflictError(PluginError):
    """Two distributions registered the same task or reward name."""


class UnknownNameError(PluginError, KeyError):
    """A task, reward or model adapter name that no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingPluginsError(PluginError):
    """The plugins a config requires are not installed at the required versions."""


class TrainingError(VgrpoError):
    """Training cannot continue (a loss that stays non-finite, out of memory); the message says what to change."""


class CheckpointError(VgrpoError):
    """A checkpoint that cannot be resumed here: not a checkpoint, written under another set-up, missing parts."""


class ParamsError(VgrpoError, ValueError):
    """Task params or reward weights that do not validate."""


class DataError(VgrpoError, ValueError):
    """A dataset record that does not validate; carries file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = ":".join(str(p) for p in (self.file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        fld = f"field '{field}': " if field else ""
        super().__init__(f"{prefix}{fld}{message}")


class TemplateFieldError(DataError, KeyError):
    """A record lacks a field its task's prompt template needs; names the record, the field and the fields
    there are. Also a ``KeyError``, which it was before it became a data error."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Interrupted(KeyboardInterrupt):
    """A second SIGINT or SIGTERM during training: stop now, without finishing the step or checkpointing it.

    A ``KeyboardInterrupt``, not a :class:`VgrpoError`, so no ``except Exception`` in plugin code swallows it."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum = signum
        self.step = step
        super().__init__(
            f"stopped by a second signal {signum} during step {step + 1}; resume continues from the "
            "last checkpoint"
        )
