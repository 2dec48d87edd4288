"""The reward benchmark's inputs are valid for each task and its CLI reports every task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vgrpo
from vgrpo.bench.rewards import GENERATORS, GROUP, make_batch, measure
from vgrpo.data import sample_from_record


@pytest.mark.parametrize("task_name", sorted(GENERATORS))
def test_generated_completions_are_realistic_and_valid(task_name):
    task = vgrpo.get_registry().task(task_name)
    completions, records = make_batch(task_name, 4 * GROUP)
    assert len(completions) == len(records) == 4 * GROUP
    samples = [sample_from_record({**r, "id": str(i)}, task) for i, r in enumerate(records)]
    results = vgrpo.score(task, completions, samples)
    assert all(vgrpo.is_well_formatted(c) and len(c.split()) >= 100 for c in completions)
    assert all(r.parsed is not None and not r.errors for r in results)
    accuracies = [r.rewards["accuracy"] for r in results]
    assert 0 < sum(accuracies) < len(accuracies)  # a mix of right and wrong answers


def test_measure_reports_throughput_against_the_target():
    row = measure("count", n=16, min_seconds=0.0)
    assert row["task"] == "count" and row["per_second"] > 0 and row["passes"] >= 3
    assert row["target"] == 20_000 and row["items_with_failures"] == 0


def test_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "vgrpo.bench", "rewards", "--tasks", "count,rec", "-n", "16", "--seconds", "0", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    assert [r["task"] for r in doc["results"]] == ["count", "rec"] and doc["cpu"].startswith("pinned")
