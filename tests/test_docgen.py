"""docs/reference/tasks.md is generated from the params models and must stay in sync."""

from pathlib import Path

import vgrpo
from vgrpo.docgen import task_reference

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "tasks.md"


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
