"""Property tests: parse and every reward take any text and give finite, in-range values, never raising."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo

FRAGMENTS = [
    *("<think>", "</think>", "<answer>", "</answer>", "```json\n", "```", "\n", " "),
    *("[", "]", "{", "}", "[{", "}]", ",", ":", '"', "\\", "\x00", "猫"),
    *('"bbox_2d"', '"label"', '"cat"', '"CAT "', '"bbox_2d": [', '"label": ', "[1, 2, 3, 4]"),
    *("null", "None", "[]", "true", "0", "10", "-5", "3.5", "1e-320", "99999999999999999999"),
    *("1e309", "-1e309", "NaN", "Infinity", "-Infinity"),
    '{"bbox_2d": [0, 0, 10, 10], "label": "cat"}',
    '{"bbox_2d": [10, 10, 0, 0], "label": "cat"}',
]
SOLUTIONS = [
    [],
    [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}],
    [
        {"bbox_2d": [0, 0, 10, 10], "label": "cat"},
        {"bbox_2d": [2, 2, 12, 12], "label": "Dog"},
        {"bbox_2d": [5, 5, 5, 9], "label": "cat"},  # zero width
        {"bbox_2d": [-1e150, -1e150, 1e150, 1e150], "label": "cat"},  # far outside COCO's area range
    ],
]

near_miss = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
coordinate = st.one_of(st.integers(-20, 40), st.floats(), st.booleans(), st.none(), st.text(max_size=3))
label = st.one_of(st.sampled_from(["cat", " CAT", "dog", "猫", ""]), st.integers(), st.none())
items = st.fixed_dictionaries({"bbox_2d": st.lists(coordinate, max_size=5), "label": label})
# valid boxes of any finite size, from 1e-300 to 1e308 wide: IoU must stay defined
finite = st.floats(allow_nan=False, allow_infinity=False)
boxes = st.tuples(finite, finite, finite, finite, st.sampled_from(["cat", "dog"])).map(
    lambda t: {"bbox_2d": [min(t[0], t[2]), min(t[1], t[3]), max(t[0], t[2]), max(t[1], t[3])], "label": t[4]}
)
answers = st.lists(st.one_of(items, boxes), max_size=12).map(
    lambda found: "<think>t</think><answer>" + json.dumps(found) + "</answer>"
)


def check_all(task, text: str) -> None:
    samples = [vgrpo.Sample(id=str(i), solution=task.check_solution(s)) for i, s in enumerate(SOLUTIONS)]
    for params in ({}, {"require_answer_tags": False}):
        results = vgrpo.score(task, [text] * len(samples), samples, params)
        for result in results:
            assert result.errors == []
            json.dumps(result.parsed, allow_nan=False)  # JSON-serialisable, no NaN or inf
            for name, value in result.rewards.items():
                assert isinstance(value, float) and math.isfinite(value), (name, value)
                assert 0.0 <= value <= 1.0, (name, value)
            if result.parsed is None:
                assert all(v == 0.0 for k, v in result.rewards.items() if k != "format")


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_text(task, text):
    check_all(task, text)


@settings(max_examples=300, deadline=None)
@given(near_miss)
def test_near_miss_strings(task, text):
    check_all(task, text)
    check_all(task, f"<think>t</think><answer>{text}</answer>")


@settings(max_examples=200, deadline=None)
@given(answers)
def test_structured_answers(task, text):
    check_all(task, text)
