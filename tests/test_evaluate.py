"""Evaluation: resumable predictions, each task's dataset-level metric, the CLI forms."""

from __future__ import annotations

import json

import pytest

import vgrpo
from vgrpo import cli
from vgrpo.data import load_jsonl
from vgrpo.evaluate import EvalSplit, evaluate
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.synth import synthesize


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=6, seed=2, tasks=["count", "rec"])


@pytest.fixture(scope="module")
def tiny():
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    return adapter, model, processor


def test_existing_predictions_are_kept_and_scored_with_the_whole_split(data, tiny, tmp_path):
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    samples = load_jsonl(data["count"], task)
    out = tmp_path / "eval"
    out.mkdir()
    # a previous (interrupted) run predicted the first four perfectly; the last line was cut mid-write
    rows = [{"task": "count", "id": s.id, "completion": f"<answer>{s.solution}</answer>", "parsed": s.solution,
             "input_size": None, "error": None} for s in samples[:4]]  # fmt: skip
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"task": "cou')
    metrics = evaluate(model, processor, adapter, [EvalSplit(task, task.params(), samples)], out, max_new_tokens=4)
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()[5:]]
    assert sorted(r["id"] for r in lines) == sorted(s.id for s in samples[4:])  # only the missing ones generated
    # the random model's two predictions can only lower the score: at least the 4 kept perfect ones count
    assert 4 / 6 <= metrics["count"]["accuracy"] <= 1.0 and metrics["count"]["n"] == 6
    assert json.loads((out / "eval_metrics.json").read_text()) == metrics
    again = evaluate(model, processor, adapter, [EvalSplit(task, task.params(), samples)], out, max_new_tokens=4)
    assert again == metrics  # nothing left to predict: the same metrics


def test_cli_eval_with_model_task_and_data(data, tmp_path, capsys):
    out = tmp_path / "e"
    code = cli.main(["eval", "--model", "tiny", "--task", "rec", "--data", str(data["rec"]), "--output-dir", str(out),
                     "--max-new-tokens", "4"])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert set(metrics["rec"]) >= {"acc@0.5", "mean_iou", "parse_rate", "n"} and metrics["rec"]["n"] == 6
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6


def test_cli_eval_errors_before_any_generation(tmp_path, capsys):
    assert cli.main(["eval", "--model", "tiny", "--task", "nope", "--data", "x.jsonl"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "solution": -3}\n')
    assert cli.main(["eval", "--model", "tiny", "--task", "count", "--data", str(bad)]) == 2
    assert "bad.jsonl:1" in " ".join(capsys.readouterr().err.split())
    assert cli.main(["eval", "--model", str(tmp_path / "no-model"), "--task", "count", "--data", str(bad)]) == 2
