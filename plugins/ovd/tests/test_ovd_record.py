"""ovd's check_record: every ground-truth box inside the image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vgrpo

CAT = "cat"


@pytest.fixture(scope="module")
def task():
    return vgrpo.get_registry().task("ovd")


def record(*boxes: list, image_size: list | None = (224, 224)) -> dict:
    solution = [{"bbox_2d": b, "label": CAT} for b in boxes]
    out = {"id": "r", "question": "Find every cat.", "solution": solution}
    return out if image_size is None else {**out, "image_size": list(image_size)}


@pytest.mark.parametrize(
    "rec",
    [
        record(),  # no objects
        record([0, 0, 224, 224], [10, 10, 20, 20]),
        record([-1, -1, 225, 225]),  # 1 px of slack (1 % of 224 is 2.24 px)
        record([0, 0, 900, 900], image_size=None),  # no image_size: nothing to compare with
    ],
)
def test_boxes_inside_the_image_pass(task, rec: dict) -> None:
    task.check_record(rec, task.params())


def test_a_box_outside_the_image_is_refused_with_its_item(task) -> None:
    with pytest.raises(vgrpo.DataError) as info:
        task.check_record(record([10, 10, 20, 20], [100, 200, 900, 800]), task.params())
    assert info.value.field == "solution"
    expected = "expected item 1 bbox_2d inside the 224x224 image (image_size), got [100.0, 200.0, 900.0, 800."
    assert expected in str(info.value)


def test_loading_and_data_check_report_the_line(task, tmp_path: Path) -> None:
    data = tmp_path / "ovd.jsonl"
    records = [record([1, 1, 5, 5]), {**record([1, 1, 500, 5]), "id": "b"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(vgrpo.DataError) as info:
        vgrpo.load_jsonl(data, task)
    assert (info.value.line, info.value.field) == (2, "solution")
    assert [(p.line, p.field) for p in vgrpo.data.check_jsonl(data, task)] == [(2, "solution")]


def test_synthetic_records_pass(task, tmp_path: Path) -> None:
    from vgrpo.synth import synthesize

    paths = synthesize(tmp_path, n_per_task=20, seed=3, tasks=["ovd"])
    assert vgrpo.data.check_jsonl(paths["ovd"], task) == []
