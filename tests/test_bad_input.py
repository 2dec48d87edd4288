"""Any completion gets in-range rewards for every built-in task: no exception, no hang."""

from __future__ import annotations

import json
import math
import random

import pytest

import vgrpo
from vgrpo.data import sample_from_record

SOLUTIONS = {
    "rec": {"solution": [10, 20, 110, 220], "image_size": [640, 480], "input_size": [320, 240]},
    "ovd": {
        "solution": [
            {"bbox_2d": [0, 0, 50, 50], "label": "cat"},
            {"bbox_2d": [60, 60, 90, 99], "label": "dog"},
        ]
    },
    "count": {"solution": 4},
    "math": {"solution": "\\frac{1}{2}"},
}


def _junk() -> str:
    rng = random.Random(0)
    return bytes(rng.randrange(256) for _ in range(5000)).decode("latin-1")


def _boxes(n: int) -> str:
    return json.dumps(
        [{"bbox_2d": [i % 600, i % 400, i % 600 + 5, i % 400 + 5], "label": f"l{i % 7}"} for i in range(n)]
    )


BAD = {
    "empty": "",
    "whitespace": " \n\t ",
    "200k": "<think>" + "a" * 200_000 + "</think><answer>" + "[1, 2, 3, 4]" * 100 + "</answer>",
    "binary": _junk(),
    "nul bytes": "<answer>\x00\x00[1,\x002,3,4]\x00</answer>",
    "half json": '<think>x</think><answer>[{"bbox_2d": [1, 2, 3',
    "half json closed": '<think>x</think><answer>[{"bbox_2d": [1, 2, 3</answer>',
    "nan": "<think>x</think><answer>[NaN, 1, Infinity, -Infinity]</answer>",
    "huge numbers": "<think>x</think><answer>[1e309, 1e308, 1e400, " + "9" * 5000 + "]</answer>",
    "10k boxes": "<think>x</think><answer>" + _boxes(10_000) + "</answer>",
    "deep frac": "<think>x</think><answer>\\boxed{" + "\\frac{" * 1000 + "1" + "}{2}" * 1000 + "}</answer>",
    "deep json": "<think>x</think><answer>" + "[" * 100_000 + "]" * 100_000 + "</answer>",
    "deep braces": "<answer>" + "{" * 50_000 + "</answer>",
    "unicode": "<think>🙂 数数</think><answer>［１，２，３，４］ ٣ трое</answer>",
    "tags only": "<think></think><answer></answer>",
    "many answers": "<answer>" * 10_000 + "</answer>" * 10_000,
}


@pytest.mark.parametrize("task_name", sorted(SOLUTIONS))
def test_every_bad_completion_gets_in_range_rewards(task_name):
    task = vgrpo.get_registry().task(task_name)
    sample = sample_from_record({"id": "x", **SOLUTIONS[task_name]}, task)
    names = list(BAD)
    results = vgrpo.score(task, [BAD[n] for n in names], [sample] * len(names))
    for name, result in zip(names, results):
        for reward in task.rewards:
            value = result.rewards[reward.name]
            assert math.isfinite(value) and reward.range[0] <= value <= reward.range[1], (name, reward.name)
        # a reward may report a counted timeout, never a crash
        assert all("timeout" in e for e in result.errors), (name, result.errors)
        json.dumps(result.parsed, allow_nan=False)  # parsed output is serialisable for `vgrpo score`
