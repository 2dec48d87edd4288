"""The worked examples in docs/rewards.md give exactly the values the page states (computed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import vgrpo
from vgrpo.data import sample_from_record

DOC = Path(__file__).resolve().parents[1] / "docs" / "rewards.md"
EXAMPLE = re.compile(
    r"<!-- score (?P<task>\S+)(?: (?P<params>\{.*?\}))? -->\s*"
    r"```json\n(?P<case>.*?)\n```.*?```json\n(?P<want>.*?)\n```",
    re.DOTALL,
)
EXAMPLES = [m.groupdict() for m in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_page_has_examples_for_every_builtin_task():
    assert {e["task"] for e in EXAMPLES} == {"rec", "ovd", "count", "math"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e['task']}-{i}" for i, e in enumerate(EXAMPLES)])
def test_worked_example(example):
    task = vgrpo.get_registry().task(example["task"])
    case = json.loads(example["case"])
    completion = case.pop("completion")
    sample = sample_from_record({"id": "doc", **case}, task)
    params = json.loads(example["params"]) if example["params"] else None
    [result] = vgrpo.score(task, [completion], [sample], params)
    assert result.errors == []
    for name, value in json.loads(example["want"]).items():
        assert result.rewards[name] == pytest.approx(value, abs=1e-6), name
