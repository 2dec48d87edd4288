"""The math task's optional methods: synthetic (text-only) records and VLM-R1 import."""

from __future__ import annotations

import random

import pytest

from vgrpo.convert import VlmR1Record
from vgrpo.synth import SynthItem
from vgrpo_math.task import MathTask


def r1(answer, method=None):
    question, answer_field = "What is 1 + 2?", "conversations[1].value"
    return VlmR1Record(1, "m", (), question, "conversations[0].value", answer, answer_field, method=method)


def _no_scene():
    raise AssertionError("a text-only task never draws a scene")


def test_synth_record_is_arithmetic_without_a_scene():
    task = MathTask()
    for index in range(30):
        record = task.synth_record(SynthItem("train", index, random.Random(index), _no_scene))
        a, op, b = record["question"].removeprefix("What is ").removesuffix("?").split()
        result = {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
        assert record["solution"] == str(result)
        assert record["id"] == f"math-train-{index:05d}" and "image" not in record


def test_only_the_reward_method_says_a_record_is_math():
    task = MathTask()
    assert task.vlm_r1_match(r1("3", "math")) == (1.0, "accu_reward_method 'math'")
    assert task.vlm_r1_match(r1("3")) is None and task.vlm_r1_match(r1("3", "od_ap")) is None


def test_vlm_r1_solution_is_the_answer_text_or_number():
    task = MathTask()
    assert task.vlm_r1_solution(r1(" \\frac{3}{4} ")) == "\\frac{3}{4}" and task.vlm_r1_solution(r1(7)) == 7
    for bad in ("  ", None, [1]):
        with pytest.raises(ValueError, match="expected the answer as text or a number"):
            task.vlm_r1_solution(r1(bad))
