"""The rec task's optional methods: synthetic records and VLM-R1 import."""

from __future__ import annotations

import json
import random

import pytest

import vgrpo
from vgrpo.convert import VlmR1Record
from vgrpo.data import sample_from_record
from vgrpo.synth import SynthItem, draw_scene
from vgrpo_rec.task import RecTask


def r1(answer, question="the dog", caption=None):
    return VlmR1Record(1, "x", ("a.png",), question, "problem", answer, "solution", caption=caption)


def test_synth_record_names_one_shape_and_its_box_scores_full_accuracy():
    task = RecTask()
    for index in range(20):
        _, scene = draw_scene(0, "train", index)
        item = SynthItem("train", index, random.Random(index), lambda s=scene: (s, "../i.png"))
        record = task.synth_record(item)
        [shape] = [s for s in scene.shapes if list(s.box) == record["solution"]]
        assert shape.label in record["question"] and record["image_size"] == [scene.width, scene.height]
        sample = sample_from_record(record, task)
        completion = f"<think>.</think><answer>{json.dumps({'bbox_2d': record['solution']})}</answer>"
        assert vgrpo.score(task, [completion], [sample])[0].rewards["accuracy"] == 1.0


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("[1, 2, 30, 40]", (0.6, "a box answer")),
        ('{"bbox_2d": [1, 2, 30, 40]}', (0.6, "a box answer")),
        ('[{"bbox": [1, 2, 30, 40]}]', (0.6, "a box answer")),
        ([1, 2, 30, 40], (0.6, "a box answer")),
        ("[1, 2, 30]", None),
        ("3", None),
        ("None", None),
    ],
)
def test_vlm_r1_match_recognises_one_box(answer, expected):
    assert RecTask().vlm_r1_match(r1(answer)) == expected


def test_vlm_r1_solution_takes_a_box_or_a_polygon_and_names_what_it_expected():
    task = RecTask()
    assert task.vlm_r1_solution(r1('```json\n{"bbox_2d": [0.5, 1, 20, 30.5]}\n```')) == [0.5, 1, 20, 30.5]
    assert task.vlm_r1_solution(r1("[[1, 2], [10, 2], [10, 20]]")) == [[1, 2], [10, 2], [10, 20]]
    with pytest.raises(ValueError, match=r"expected a box \[x1, y1, x2, y2\] .*, got 'left'"):
        task.vlm_r1_solution(r1("left"))


def test_vlm_r1_question_is_the_referring_expression_alone():
    task = RecTask()
    prompt = "Please provide the bounding box coordinate of the region this sentence describes: the red ball."
    assert task.vlm_r1_question(r1("[1, 2, 3, 4]", question=prompt)) == "the red ball"
    assert task.vlm_r1_question(r1("[1, 2, 3, 4]", question=prompt, caption=" the lady ")) == "the lady"
    with pytest.raises(ValueError, match="a referring expression for rec"):
        task.vlm_r1_question(r1("[1, 2, 3, 4]", question=prompt.replace("the red ball.", " . ")))
