"""Every hook a plugin can implement is documented: a docstring in vgrpo.hookspecs and a mention in the plugin
guide (docs/plugins/writing-a-task.md). A new hook without both fails here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from vgrpo import hookspecs

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "writing-a-task.md"
SPECS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if callable(obj) and hasattr(obj, f"{hookspecs.PROJECT}_spec")
)


def test_there_are_hooks_and_hook_names_lists_all_of_them():
    assert "vgrpo_tasks" in SPECS
    assert sorted(hookspecs.HOOK_NAMES) == SPECS, "add the new hook to hookspecs.HOOK_NAMES"


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_has_a_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc.strip()) > 20, f"hookspec {name} needs a docstring saying what it returns"


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_is_in_the_plugin_guide(name):
    text = GUIDE.read_text(encoding="utf-8")
    hooks_section = text.split("## The hooks", 1)[-1].split("\n## ", 1)[0]
    assert f"`{name}()`" in hooks_section, f"document {name} in the 'The hooks' section of {GUIDE.name}"
