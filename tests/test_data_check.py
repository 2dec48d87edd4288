"""`vgrpo data check` reports every problem of a file with its line, and exits 1; a clean file exits 0."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import vgrpo
from vgrpo import cli


def test_check_reports_all_problems_with_line_numbers(tmp_path, capsys):
    Image.new("RGB", (40, 30)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    lines = [
        json.dumps({"id": "1", "image": "ok.png", "solution": [1, 2, 3, 4], "image_size": [40, 30]}),
        "{not json",
        json.dumps({"id": "3", "image": "ok.png"}),
        json.dumps({"id": "4", "image": "missing.png", "solution": [1, 2, 3, 4]}),
        json.dumps({"id": "5", "image": "broken.png", "solution": [1, 2, 3, 4]}),
        json.dumps({"id": "6", "image": "ok.png", "solution": [1, 2, 3, 4], "image_size": [400, 300]}),
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert cli.main(["data", "check", "--task", "rec", str(f), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    by_line = {p["line"]: p for p in problems}
    assert set(by_line) == {2, 3, 4, 5, 6}
    assert "invalid JSON" in by_line[2]["problem"]
    assert by_line[3]["field"] == "solution"
    assert by_line[4]["field"] == "image" and "not found" in by_line[4]["problem"]
    assert by_line[5]["field"] == "image"
    assert by_line[6]["field"] == "image_size"


def test_repeated_ids_are_reported_with_both_lines_and_training_still_loads_them(tmp_path, capsys):
    lines = [
        json.dumps({"id": "a", "solution": 1}),
        json.dumps({"id": "b", "solution": 2}),
        json.dumps({"id": "a", "solution": 3}),
        json.dumps({"id": "b", "solution": "many"}),  # a bad record's id is still its id
        json.dumps({"id": "a", "solution": 4}),
        json.dumps({"id": 7, "solution": 5}),
        json.dumps({"id": "7", "solution": 6}),  # ids are strings: 7 and "7" are the same record id
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert cli.main(["data", "check", "--task", "count", str(f), "--json"]) == 1
    problems = [
        (p["line"], p["field"], p["problem"]) for p in json.loads(capsys.readouterr().out)["problems"]
    ]
    assert [p for p in problems if p[1] == "id"] == [
        (3, "id", "id 'a' already used on line 1"),
        (4, "id", "id 'b' already used on line 2"),
        (5, "id", "id 'a' already used on line 1"),
        (7, "id", "id '7' already used on line 6"),
    ]
    assert [p[:2] for p in problems if p[1] != "id"] == [(4, "solution")]  # other problems are still found
    f.write_text(
        "\n".join(lines[:3]) + "\n"
    )  # training's loader accepts repeats: they are not an error there
    assert [s.id for s in vgrpo.load_jsonl(f, vgrpo.get_registry().task("count"))] == ["a", "b", "a"]


def test_a_clean_synthetic_file_passes(tmp_path, capsys):
    assert cli.main(["data", "synth", str(tmp_path / "d"), "--n", "4", "--tasks", "count"]) == 0
    capsys.readouterr()
    assert cli.main(["data", "check", "--task", "count", str(tmp_path / "d" / "count" / "train.jsonl")]) == 0
    assert "no problems" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert cli.main(["data", "check", str(tmp_path / "x.jsonl")]) == 2  # no --task
    assert cli.main(["data", "check", "--task", "rec", str(tmp_path / "missing.jsonl")]) == 2


def test_check_runs_the_tasks_own_record_check(tmp_path, capsys):
    """rec's check_record: a box outside the image (here written in 0-1000 for a 224 px image) is a problem."""
    Image.new("RGB", (224, 224)).save(tmp_path / "ok.png")
    lines = [
        json.dumps({"id": "1", "image": "ok.png", "solution": [10, 20, 200, 220], "image_size": [224, 224]}),
        json.dumps({"id": "2", "image": "ok.png", "solution": [45, 89, 893, 982], "image_size": [224, 224]}),
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert cli.main(["data", "check", "--task", "rec", str(f), "--json"]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert (problem["file"], problem["line"], problem["field"]) == (str(f), 2, "solution")
    assert "inside the 224x224 image (image_size), got [45, 89, 893, 982]" in problem["problem"]
    assert cli.main(["data", "check", "--task", "rec", str(f)]) == 1  # the table names the line too
    out = capsys.readouterr().out
    assert "inside the 224x224" in out and "d.jsonl" in out
    with pytest.raises(vgrpo.DataError, match=r"d\.jsonl:2: field 'solution': expected a box"):
        vgrpo.load_jsonl(f, vgrpo.get_registry().task("rec"), read_sizes=True)  # training start-up


def test_check_reports_a_missing_template_field_with_its_line(tmp_path):
    class Shapes(vgrpo.Task):
        name = "shapes"
        description = "shapes"
        template = vgrpo.PromptTemplate(user="{question} One of: {classes}")
        rewards = (vgrpo.format_reward,)
        default_weights = {"format": 1.0}

        def parse(self, completion, params):
            return None

        def metric(self, predictions, samples, params):
            return {}

    f = tmp_path / "d.jsonl"
    f.write_text(
        json.dumps({"id": "a", "solution": "x", "classes": ["x"]})
        + "\n"
        + json.dumps({"id": "b", "solution": "x"})
        + "\n"
    )
    [problem] = vgrpo.data.check_jsonl(f, Shapes())
    assert (problem.line, problem.field) == (2, "classes")
    expected = f"{f}:2: field 'classes': missing; the prompt template needs it, but record 'b'"
    assert str(problem).startswith(expected)
