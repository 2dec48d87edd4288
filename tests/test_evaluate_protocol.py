"""``vgrpo eval --protocol NAME``: a task's protocol params applied, its own folder, mixing refused.

The rows of ``predictions.jsonl`` are written beforehand (the tiny model's completions would not parse), so
the metric is known by hand: rec's VLM-R1 rules are IoU > 0.5, the last box, integer boxes only.
"""

from __future__ import annotations

import json

import pytest

import vgrpo
from vgrpo import cli

GT = [0, 0, 10, 10]
#: answer -> (hit under vgrpo's rules, hit under VLM-R1's)
ANSWERS = {
    '{"bbox_2d": [0, 0, 10, 5]}': (True, False),  # IoU exactly 0.5
    '{"bbox_2d": [50, 50, 60, 60]} no, {"bbox_2d": [0, 0, 10, 10]}': (False, True),  # last box right
    '{"bbox_2d": [0.0, 0.0, 10.0, 10.0]}': (True, False),  # a float box: no box for VLM-R1
    '{"bbox_2d": [0, 0, 10, 9]}': (True, True),  # IoU 0.9
}


@pytest.fixture
def split(tmp_path):
    data = tmp_path / "rec.jsonl"
    records = [{"id": f"r{i}", "solution": GT, "image_size": [100, 100]} for i in range(len(ANSWERS))]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


def predictions(out, protocol):
    """The rows an earlier run of ``protocol`` would have written (parsed under its params)."""
    task = vgrpo.get_registry().task("rec")
    params = task.params(task.protocols[protocol] if protocol else {})
    rows = []
    for i, answer in enumerate(ANSWERS):
        text = f"<think>.</think><answer>{answer}</answer>"
        row = {"task": "rec", "id": f"r{i}", "sample": 0, "sampling": None, "max_new_tokens": 256}
        rows.append({**row, "completion": text, "parsed": task.parse(text, params), "input_size": None})
    out.mkdir(parents=True)
    (out / "predictions.jsonl").write_text("".join(json.dumps(r | {"error": None}) + "\n" for r in rows))
    if protocol:
        (out / "protocol.json").write_text(json.dumps({"protocol": protocol}))


def run(split, *extra):
    return cli.main(["eval", "--model", "tiny", "--task", "rec", "--data", str(split), *extra])


def test_the_vlm_r1_protocol_scores_rec_by_its_rules(split, tmp_path, capsys):
    for protocol, column in ((None, 0), ("vlm-r1", 1)):
        out = tmp_path / (protocol or "default")
        predictions(out, protocol)
        assert run(split, "--output-dir", str(out), *(["--protocol", protocol] if protocol else [])) == 0
        metrics = json.loads((out / "eval_metrics.json").read_text())["rec"]
        assert metrics["acc@0.5"] == sum(hits[column] for hits in ANSWERS.values()) / len(ANSWERS)
    assert "protocol vlm-r1" in " ".join(capsys.readouterr().out.split())


def test_a_folder_holds_one_protocols_predictions(split, tmp_path, capsys):
    out = tmp_path / "e"
    predictions(out, None)
    assert run(split, "--output-dir", str(out), "--protocol", "vlm-r1") == 2
    assert "parsed under the default protocol" in " ".join(capsys.readouterr().err.split())
    (out / "protocol.json").write_text(json.dumps({"protocol": "vlm-r1"}))
    assert run(split, "--output-dir", str(out)) == 2
    assert "parsed under protocol 'vlm-r1'" in " ".join(capsys.readouterr().err.split())


def test_the_default_folder_names_the_protocol(split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predictions(tmp_path / "eval-vlm-r1", "vlm-r1")
    assert run(split, "--protocol", "vlm-r1") == 0
    assert (tmp_path / "eval-vlm-r1" / "eval_metrics.json").is_file() and not (tmp_path / "eval").exists()


def test_a_protocol_no_task_has_is_refused_before_the_model_loads(split, tmp_path, capsys):
    count = tmp_path / "count.jsonl"
    count.write_text('{"id": "1", "solution": 3}\n')
    args = ["eval", "--model", "nope", "--task", "count", "--data", str(count), "--protocol", "vlm-r1"]
    assert cli.main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no task of this evaluation has protocol 'vlm-r1'" in err and "vlm-r1 (rec)" in err
    assert run(split, "--protocol", "Bad/Name") == 2
