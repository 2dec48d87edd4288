"""The reward benchmark: valid, realistic inputs for each task; each timed pass scores a fresh batch and the
report describes what was scored; the CLI reports every task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vgrpo
from vgrpo.bench import rewards as bench_rewards
from vgrpo.bench.rewards import GENERATORS, GROUP, TARGETS, make_batch, measure
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


def test_measure_scores_a_fresh_batch_each_pass_and_reports_the_last(monkeypatch):
    calls: list[tuple[list[str], list[vgrpo.Score]]] = []

    def recording_score(task, completions, samples):
        results = vgrpo.score(task, completions, samples)
        results[0].errors.append("injected")  # one failing item per batch: counted, not hidden
        calls.append((list(completions), results))
        return results

    monkeypatch.setattr(bench_rewards, "score", recording_score)
    row = measure("count", n=16, min_seconds=0.0)
    (warm, _), *timed = calls
    assert len(warm) == GROUP and row["passes"] == len(timed) >= 3
    assert all(len(c) == 16 for c, _ in timed)
    assert len({tuple(c) for c, _ in timed}) == len(timed) and tuple(warm) not in {tuple(c) for c, _ in timed}
    last = timed[-1][1]
    assert row["mean_reward"] == round(sum(r.reward for r in last) / len(last), 4)
    assert 1.0 < row["mean_reward"] < 2.0  # well formatted (format 1), a mix of right and wrong counts
    assert row["items_with_failures"] == 1
    assert row["task"] == "count" and row["target"] == TARGETS["count"]
    assert 0 < row["median_per_second"] <= row["per_second"]


def test_cli_json():
    command = [sys.executable, "-m", "vgrpo.bench", "rewards", "--tasks", "count,rec", "-n", "16", "--json"]
    out = subprocess.run([*command, "--seconds", "0"], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert [r["task"] for r in doc["results"]] == ["count", "rec"] and doc["cpu"].startswith("pinned")
    assert all(r["completions"] == 16 and r["items_with_failures"] == 0 for r in doc["results"])
