"""docs/reference/tasks.md is generated from the params models and must stay in sync."""

from pathlib import Path

import vgrpo
from vgrpo.docgen import config_reference, task_reference

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "tasks.md"
CONFIG = REFERENCE.parent / "config.md"


def test_task_reference_is_up_to_date():
    expected = task_reference(vgrpo.get_registry())
    assert REFERENCE.read_text(encoding="utf-8") == expected, "run `make docs-ref` and commit the result"


def test_reference_lists_every_param_of_every_builtin_task():
    text = REFERENCE.read_text(encoding="utf-8")
    registry = vgrpo.get_registry()
    for name in ("rec", "ovd", "count", "math"):
        task = registry.task(name)
        assert f"## `{name}`" in text
        for field in task.Params.model_fields:
            assert f"| `{field}` |" in text


def test_config_reference_is_up_to_date_and_complete():
    from vgrpo.config import GrpoConfig, TaskEntry

    text = CONFIG.read_text(encoding="utf-8")
    assert text == config_reference(), "run `make docs-ref` and commit the result"
    for key in GrpoConfig.model_fields:
        assert f"| `grpo.{key}` |" in text
    for key in TaskEntry.model_fields:
        assert f"| `tasks.N.{key}` |" in text


def test_cli_reference_is_up_to_date_and_lists_every_command():
    import argparse

    from vgrpo.cli import build_parser
    from vgrpo.docgen import cli_reference

    text = (REFERENCE.parent / "cli.md").read_text(encoding="utf-8")
    assert text == cli_reference(), "run `make docs-ref` and commit the result"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"## `vgrpo {name}`" in text
        for action in sub._actions:
            documented = action.help != argparse.SUPPRESS and "--help" not in action.option_strings
            if documented and action.option_strings:
                assert f"| `{', '.join(action.option_strings)}" in text, (name, action.option_strings)


def test_the_task_page_lists_the_built_in_distributions_tasks_whatever_else_is_installed(fake_site):
    from vgrpo.docgen import builtin_tasks

    fake_site.task_plugin("acme-echo", "acme.echo")
    registry = vgrpo.load_plugins()
    assert "acme.echo" in registry.tasks
    assert builtin_tasks(registry) == ["count", "math", "ovd", "rec"]
    assert task_reference(registry) == REFERENCE.read_text(encoding="utf-8")
    assert "## `acme.echo`" in task_reference(registry, ["acme.echo"])
