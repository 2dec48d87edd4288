"""What every command shares: the consoles, the plugin registry, table cells and JSON arguments."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from vgrpo.errors import ParamsError
from vgrpo.plugins import PluginRegistry, load_plugins

#: vgrpo's own stdout while a command runs (the stream :func:`vgrpo.cli.main` found); meanwhile ``sys.stdout``
#: is stderr, so whatever plugin code prints cannot corrupt ``--json`` or ``vgrpo score``'s JSONL.
_OUT: list[TextIO] = []


def out() -> TextIO:
    """The stream a command writes its output to (machine-readable or not): the real stdout."""
    return _OUT[-1] if _OUT else sys.stdout


@contextlib.contextmanager
def own_stdout() -> Iterator[None]:
    """Run a command: its output goes to :func:`out` (the stdout found here), everything else printed on
    stdout (plugin code at import or in any call) to stderr."""
    _OUT.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _OUT.pop()


def console(stderr: bool = False) -> Console:
    """A rich console on the command's stdout (or stderr) that never wraps: logs and pipes keep whole lines."""
    return Console(stderr=True, soft_wrap=False) if stderr else Console(file=out(), soft_wrap=False)


def registry_of(args: argparse.Namespace, *, quiet: bool = False) -> PluginRegistry:
    """The installed plugins (``--strict-plugins`` makes a problem fatal); ``quiet`` when the command shows
    plugin problems itself."""
    level = logging.getLogger("vgrpo.plugins").level
    if quiet:
        logging.getLogger("vgrpo.plugins").setLevel(logging.ERROR)
    try:
        return load_plugins(strict=True if args.strict_plugins else None)
    finally:
        logging.getLogger("vgrpo.plugins").setLevel(level)


def cells(*values: str) -> list[Text]:
    """Table cells as plain text: plugin and user strings are never parsed as rich markup."""
    return [Text(v) for v in values]


def json_arg(text: str | None, flag: str) -> dict[str, Any] | None:
    """A command-line JSON object (``--params``, ``--weights``); ``ParamsError`` naming the flag if not."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at column {exc.colno}"
        raise ParamsError(f"{flag}: expected a JSON object, got invalid JSON ({where})") from None
    if not isinstance(value, dict):
        raise ParamsError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def dumps(obj: Any) -> str:
    """One line of JSON; values JSON cannot hold (NaN, objects) written as their repr."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(obj, ensure_ascii=False, default=repr)
