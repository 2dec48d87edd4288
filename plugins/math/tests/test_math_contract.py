"""The math task honours the vgrpo contract (vgrpo.testing.check_task), on fuzzed model output too."""

from __future__ import annotations

from vgrpo.testing import check_task
from vgrpo_math.task import MathTask


def test_math_honours_the_contract():
    half = {"id": "half", "question": "What is half of one?", "solution": "\\frac{1}{2}"}
    check_task(MathTask(), examples=[(half, "<think>1/2 = 0.5</think> <answer>\\boxed{0.5}</answer>")])
