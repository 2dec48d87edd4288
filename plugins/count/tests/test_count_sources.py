"""The count task's optional methods: synthetic records and VLM-R1 import."""

from __future__ import annotations

import random

import pytest

from vgrpo.convert import VlmR1Record
from vgrpo.synth import COLOURS, SynthItem, draw_scene
from vgrpo_count.task import CountTask


def r1(answer):
    return VlmR1Record(
        1, "x", ("a.png",), "How many?", "conversations[0].value", answer, "conversations[1].value"
    )


def test_synth_record_counts_the_shapes_it_asks_about_and_sometimes_asks_about_absent_ones():
    task, zeros = CountTask(), 0
    for index in range(40):
        _, scene = draw_scene(1, "val", index)
        item = SynthItem("val", index, random.Random(index), lambda s=scene: (s, "../i.png"))
        record = task.synth_record(item)
        words = record["question"].removeprefix("How many ").removesuffix(" are there?").split()
        colour = words[0] if words[0] in COLOURS else None
        kind = None if words[-1] == "shapes" else words[-1].removesuffix("s")
        assert record["solution"] == scene.count(colour=colour, kind=kind)
        assert task.check_solution(record["solution"]) == record["solution"]
        zeros += record["solution"] == 0
    assert zeros > 0


@pytest.mark.parametrize("answer, solution", [("3", 3), (3, 3), ("4.0", 4), (0, 0), (" 12 ", 12), (7.0, 7)])
def test_a_whole_number_answer_looks_like_count_and_converts(answer, solution):
    task = CountTask()
    assert task.vlm_r1_match(r1(answer)) == (0.5, "a whole-number answer")
    assert task.vlm_r1_solution(r1(answer)) == solution


@pytest.mark.parametrize("answer", ["2.5", "-1", "three", True, None, "[1, 2, 3, 4]"])
def test_anything_else_is_no_count(answer):
    task = CountTask()
    assert task.vlm_r1_match(r1(answer)) is None
    with pytest.raises(ValueError, match="expected a whole number >= 0, got"):
        task.vlm_r1_solution(r1(answer))
