"""The ovd task's optional methods: pred_count statistics, synthetic records, VLM-R1 import."""

from __future__ import annotations

import json
import random

import pytest

import vgrpo
from vgrpo.convert import VlmR1Record
from vgrpo.data import sample_from_record
from vgrpo.synth import SynthItem, draw_scene
from vgrpo_ovd.task import OvdTask

BOX = {"bbox_2d": [1, 2, 10, 20], "label": "dog"}


def r1(answer, method=None):
    question, answer_field = "Detect: dog.", "conversations[1].value"
    return VlmR1Record(
        1, "x", ("a.png",), question, "conversations[0].value", answer, answer_field, method=method
    )


def test_step_stats_counts_the_objects_of_list_answers_only():
    """As the trainer's pred_count did: an empty answer predicts no box (the flooding signal must see it)."""
    task = OvdTask()
    assert task.step_stats([]) == {"pred_count": 0.0}
    assert task.step_stats([BOX] * 3) == {"pred_count": 3.0}
    assert task.step_stats([1.0, 2.0, 3.0, 4.0]) == {} and task.step_stats(5) == {}
    assert task.step_stats(None) == {}
    parsed = task.parse(f"<think>.</think><answer>{json.dumps([BOX, BOX])}</answer>", task.params())
    assert task.step_stats(parsed) == {"pred_count": 2.0}


def test_synth_record_lists_exactly_the_boxes_of_the_asked_labels():
    task = OvdTask()
    for index in range(20):
        image, scene = draw_scene(0, "train", index)
        item = SynthItem("train", index, random.Random(index), lambda s=scene: (s, "../i.png"))
        record = task.synth_record(item)
        asked = sorted((s.label, list(s.box)) for s in scene.shapes if s.label in record["question"])
        assert asked == sorted((d["label"], d["bbox_2d"]) for d in record["solution"])
        assert record["id"] == f"ovd-train-{index:05d}" and record["image"] == "../i.png"
        sample = sample_from_record(record, task)
        completion = f"<think>.</think><answer>{json.dumps(record['solution'])}</answer>"
        assert vgrpo.score(task, [completion], [sample])[0].rewards["accuracy"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "answer, method, expected",
    [
        (json.dumps([BOX]), None, (0.8, "an answer of labelled boxes")),
        ("None", None, (0.8, "an answer of labelled boxes")),
        ("[1, 2, 10, 20]", "od_AP", (1.0, "accu_reward_method 'od_AP'")),
        ("[1, 2, 10, 20]", None, None),
        ("[]", None, None),  # an empty list could be any task's
        ("3", "math", None),
    ],
)
def test_vlm_r1_match_is_sure_of_a_detection_method_and_fairly_of_labelled_boxes(answer, method, expected):
    assert OvdTask().vlm_r1_match(r1(answer, method)) == expected


def test_vlm_r1_solution_reads_detections_and_none_and_refuses_anything_else():
    task = OvdTask()
    assert task.vlm_r1_solution(r1(f"```json\n{json.dumps([BOX])}\n```")) == [BOX]
    assert task.vlm_r1_solution(r1("None")) == [] and task.vlm_r1_solution(r1(None)) == []
    with pytest.raises(ValueError, match=r'expected "None" or a JSON list of .*, got \'a dog\''):
        task.vlm_r1_solution(r1("a dog"))
