"""Evaluation: resumable predictions, each task's dataset-level metric, the CLI forms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vgrpo
from vgrpo import cli
from vgrpo.data import load_jsonl
from vgrpo.errors import DataError
from vgrpo.evaluate import EvalSplit, build_eval_splits, eval_settings, evaluate, flat_metrics
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.synth import synthesize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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
    rows = [
        {
            "task": "count",
            "id": s.id,
            "max_new_tokens": 4,
            "completion": f"<answer>{s.solution}</answer>",
            "parsed": s.solution,
            "input_size": None,
            "error": None,
        }
        for s in samples[:4]
    ]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"task": "cou')
    metrics = evaluate(
        model, processor, adapter, [EvalSplit(task, task.params(), samples)], out, max_new_tokens=4
    )
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()[5:]]
    assert sorted(r["id"] for r in lines) == sorted(
        s.id for s in samples[4:]
    )  # only the missing ones generated
    # the random model's two predictions can only lower the score: at least the 4 kept perfect ones count
    assert 4 / 6 <= metrics["count"]["accuracy"] <= 1.0 and metrics["count"]["n"] == 6
    assert json.loads((out / "eval_metrics.json").read_text()) == metrics
    again = evaluate(
        model, processor, adapter, [EvalSplit(task, task.params(), samples)], out, max_new_tokens=4
    )
    assert again == metrics  # nothing left to predict: the same metrics


def test_rows_are_reused_only_when_made_with_the_same_max_new_tokens(data, tiny, tmp_path):
    """A re-run with another length limit predicts again; a row that does not say its limit is not trusted."""
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    split = EvalSplit(task, task.params(), load_jsonl(data["count"], task)[:2])
    out = tmp_path / "eval"
    out.mkdir()
    # an older file's row, which does not record its max_new_tokens
    old = {
        "task": "count",
        "id": split.samples[0].id,
        "completion": "<answer>1</answer>",
        "parsed": 1,
        "input_size": None,
        "error": None,
    }
    (out / "predictions.jsonl").write_text(json.dumps(old) + "\n")

    def rows() -> list[dict]:
        return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]

    evaluate(model, processor, adapter, [split], out, max_new_tokens=3)
    assert [(r["id"], r["max_new_tokens"]) for r in rows()[1:]] == [(x.id, 3) for x in split.samples]
    evaluate(model, processor, adapter, [split], out, max_new_tokens=3)
    assert len(rows()) == 3  # same settings: nothing generated
    evaluate(model, processor, adapter, [split], out, max_new_tokens=5)
    assert [(r["id"], r["max_new_tokens"]) for r in rows()[3:]] == [(x.id, 5) for x in split.samples]


def test_cli_eval_with_model_task_and_data(data, tmp_path, capsys):
    out = tmp_path / "e"
    code = cli.main(
        [
            "eval",
            "--model",
            "tiny",
            "--task",
            "rec",
            "--data",
            str(data["rec"]),
            "--output-dir",
            str(out),
            "--max-new-tokens",
            "4",
        ]
    )
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
    assert (
        cli.main(["eval", "--model", str(tmp_path / "no-model"), "--task", "count", "--data", str(bad)]) == 2
    )


def test_a_missing_image_fails_before_any_generation(data, tiny, tmp_path, capsys):
    records = [json.loads(x) for x in Path(data["count"]).read_text().splitlines()]
    records[1]["image"] = "images/gone.png"
    moved = Path(data["count"]).parent / "moved.jsonl"  # beside the images, so the others resolve
    moved.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "e"
    assert (
        cli.main(
            [
                "eval",
                "--model",
                "tiny",
                "--task",
                "count",
                "--data",
                str(moved),
                "--output-dir",
                str(out),
                "--max-new-tokens",
                "4",
            ]
        )
        == 2
    )
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"record {records[1]['id']!r}: image not found" in err
        and "gone.png" in err
        and "Traceback" not in err
    )
    assert not (out / "predictions.jsonl").exists() or not (out / "predictions.jsonl").read_text()
    from vgrpo.config import load_config

    config = load_config(
        None, [f"tasks=[{{task: count, data: {data['count']}}}]", f"eval.data={{count: [{moved}]}}"]
    )
    with pytest.raises(DataError, match="image not found"):  # evaluation during training: at setup
        build_eval_splits(config, vgrpo.get_registry())


def test_cli_eval_of_the_tiny_example_writes_metrics_for_all_four_tasks(tmp_path, capsys):
    """`vgrpo eval examples/tiny.yaml output_dir=X`, on a copy beside freshly synthesised data."""
    synthesize(tmp_path / "data" / "tiny", n_per_task=4, n_val=3, seed=1)
    config = tmp_path / "tiny.yaml"
    shutil.copy(EXAMPLES / "tiny.yaml", config)
    out = tmp_path / "run"
    code = cli.main(["eval", str(config), f"output_dir={out}", "eval.max_samples=2", "eval.max_new_tokens=4"])
    assert code == 0
    metrics = json.loads((out / "eval" / "eval_metrics.json").read_text())
    registry = vgrpo.get_registry()
    assert list(metrics) == ["rec", "ovd", "count", "math"]
    for name, values in metrics.items():
        assert set(values) == {*registry.task(name).metric_names, "parse_rate", "unparsed", "n"}
        assert values["n"] == 2 and values["unparsed"] == 2 * (1 - values["parse_rate"])
    rows = [json.loads(x) for x in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all("-val-" in r["id"] for r in rows)  # the held-out split of eval.data
    assert "unparsed" in capsys.readouterr().out


def test_unparsable_predictions_count_as_wrong_and_show_in_the_table(data, tmp_path, capsys):
    task = vgrpo.get_registry().task("count")
    samples = load_jsonl(data["count"], task)
    out = tmp_path / "e"
    out.mkdir()
    wrong = ["3", "<answer>many</answer>", "<answer>99</answer>"]  # no answer block, no number, wrong
    completions = [f"<answer>{s.solution}</answer>" for s in samples[:3]] + wrong
    rows = [
        {
            "task": "count",
            "id": s.id,
            "max_new_tokens": 256,
            "completion": c,
            "parsed": task.parse(c, task.params()),
            "input_size": None,
            "error": None,
        }
        for s, c in zip(samples, completions)
    ]
    assert [r["parsed"] is None for r in rows] == [False, False, False, True, True, False]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = cli.main(
        ["eval", "--model", "tiny", "--task", "count", "--data", str(data["count"]), "--output-dir", str(out)]
    )
    assert code == 0
    metrics = json.loads((out / "eval_metrics.json").read_text())["count"]
    assert metrics == {"accuracy": 0.5, "parse_rate": pytest.approx(4 / 6), "unparsed": 2.0, "n": 6.0}
    table = capsys.readouterr().out
    assert "unparsed" in table and "66.7%" in table
    count_row = next(line for line in table.splitlines() if "count" in line)
    assert count_row.split("│")[1:5] == [" count ", "       6 ", "  66.7% ", "        2 "]


def test_in_memory_evaluation_writes_nothing_and_is_deterministic(data, tiny, tmp_path, monkeypatch):
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("rec")
    split = EvalSplit(task, task.params(), load_jsonl(data["rec"], task))
    monkeypatch.chdir(tmp_path)
    model.train()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = evaluate(model, processor, adapter, [split], max_new_tokens=5, batch_size=4)
    assert list(tmp_path.iterdir()) == []  # no files
    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert evaluate(model, processor, adapter, [split], max_new_tokens=5, batch_size=4) == first  # greedy
    to_files = evaluate(model, processor, adapter, [split], tmp_path / "x", max_new_tokens=5, batch_size=4)
    assert to_files == first
    assert flat_metrics(first) == {f"eval/rec/{k}": v for k, v in first["rec"].items()}
    model.eval()


def test_build_eval_splits_from_a_config(data, tmp_path):
    from vgrpo.config import load_config

    val = str(data["rec"]).replace("train.jsonl", "val.jsonl")
    config = load_config(
        None,
        [
            f"tasks=[{{task: count, data: {data['count']}}}, {{task: rec, data: {data['rec']}, "
            "params: {coords: norm1000}}]",
            f"eval.data={{rec: [{val}]}}",
            "eval.max_samples=3",
            "eval.num_samples=2",
            "seed=9",
        ],
    )
    registry = vgrpo.get_registry()
    splits = build_eval_splits(config, registry)
    assert [s.task.name for s in splits] == ["count", "rec"]
    assert [len(s.samples) for s in splits] == [3, 1]  # rec: its one val record; count: training data, capped
    assert all("-val-" in x.id for x in splits[1].samples) and splits[1].params.coords == "norm1000"
    settings = eval_settings(config)
    assert settings["num_samples"] == 2 and settings["max_new_tokens"] == 256 and settings["seed"] == 9
    first = Path(data["count"]).read_text().splitlines()[0]
    dup = tmp_path / "dup.jsonl"
    dup.write_text(f"{first}\n{first}\n")  # the same record twice
    config = load_config(
        None, [f"tasks=[{{task: count, data: {data['count']}}}]", f"eval.data={{count: [{dup}]}}"]
    )
    with pytest.raises(DataError, match="appears twice"):
        build_eval_splits(config, registry)
