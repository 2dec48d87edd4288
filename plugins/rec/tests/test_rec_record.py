"""rec's check_record: a ground truth inside the image, and a way to convert normalised coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vgrpo
from vgrpo_rec import RecTask

TASK = RecTask()
PARAMS = TASK.params()


@pytest.mark.parametrize(
    "solution, image_size",
    [
        ([10, 20, 110, 220], [640, 480]),
        ([0, 0, 640, 480], [640, 480]),  # the whole image
        ([-1, -0.5, 641, 481], [640, 480]),  # 1 px of slack for rounding (1 % of the side: 6.4 and 4.8 px)
        ([-6, -4, 646, 484], [640, 480]),
        ([0, 0, 224.9, 225], [224, 224]),  # small image: at least 1 px (1 % is 2.24 px)
        ([[0, 0], [224, 0], [112, 224]], [224, 224]),  # a polygon
        ([100, 200, 900, 800], None),  # no image_size: nothing to compare with
    ],
)
def test_a_ground_truth_inside_the_image_passes(solution: list, image_size: list | None) -> None:
    record = {"id": "r", "image": "a.png", "solution": solution}
    TASK.check_record(record if image_size is None else {**record, "image_size": image_size}, PARAMS)


@pytest.mark.parametrize(
    "solution, image_size",
    [
        ([45, 89, 893, 982], [224, 224]),  # written in 0-1000 for a 224 px image
        ([10, 20, 110, 230], [640, 200]),  # past the bottom by 30 px (1 % of 200 is 2 px)
        ([-10, 20, 110, 120], [640, 480]),  # left of the image by more than 6.4 px
        ([[0, 0], [300, 0], [112, 224]], [224, 224]),  # a polygon point outside
    ],
)
def test_a_ground_truth_outside_the_image_is_refused(solution: list, image_size: list) -> None:
    with pytest.raises(vgrpo.DataError) as info:
        TASK.check_record({"id": "r", "solution": solution, "image_size": image_size}, PARAMS)
    assert info.value.field == "solution"
    w, h = image_size
    assert f"inside the {w}x{h} image (image_size), got {solution}" in str(info.value)


def test_normalised_coords_need_an_image_size_or_an_image() -> None:
    text_only = {"id": "t", "question": "the cat", "solution": [1, 2, 3, 4]}
    TASK.check_record(text_only, PARAMS)  # abs: model pixels are image pixels
    TASK.check_record({**text_only, "image": "a.png"}, TASK.params({"coords": "norm1000"}))  # read from it
    TASK.check_record({**text_only, "image_size": [10, 10]}, TASK.params({"coords": "norm1"}))
    with pytest.raises(vgrpo.DataError, match="with coords 'norm1000' the model's box cannot be") as info:
        TASK.check_record(text_only, TASK.params({"coords": "norm1000"}))
    assert info.value.field == "image_size"


def test_the_default_checks_still_run() -> None:
    with pytest.raises(ValueError, match="x2 > x1"):
        TASK.check_record({"id": "r", "solution": [5, 5, 0, 0], "image_size": [10, 10]}, PARAMS)


def test_loading_reports_the_line(tmp_path: Path) -> None:
    data = tmp_path / "rec.jsonl"
    records = [
        {"id": "a", "solution": [0, 0, 5, 5], "image_size": [10, 10]},
        {"id": "b", "solution": [0, 0, 50, 50], "image_size": [10, 10]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(vgrpo.DataError) as info:
        vgrpo.load_jsonl(data, TASK)
    assert (info.value.file, info.value.line, info.value.field) == (str(data), 2, "solution")


def test_synthetic_records_pass(tmp_path: Path) -> None:
    from vgrpo.synth import synthesize

    paths = synthesize(tmp_path, n_per_task=20, seed=3, tasks=["rec"])
    assert vgrpo.data.check_jsonl(paths["rec"], TASK) == []
