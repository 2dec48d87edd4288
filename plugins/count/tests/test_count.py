"""Counting: parser edge cases, the reward, the metric, and totality on any text."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo
from vgrpo_count.task import CountTask, parse_count

TASK = CountTask()
PARAMS = TASK.params()


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("3", 3),
        (" 12 \n", 12),
        ("There are 4 red and 2 blue, so 6 in total.", 6),  # the last integer
        ("1,024 dots", 1024),
        ("3,000.5", 3000.5),  # a decimal with thousands separators is still a decimal
        ("1,2,3", 3),
        ("five", 5),
        ("Twenty", 20),
        ("I see two cats and three dogs", 3),
        ("seven, or maybe 8", 8),  # digits win over words
        ("twenty-one", None),  # compounds beyond twenty are not read
        ("none", None),
        ("", None),
        ("3.5", 3.5),  # a decimal is parsed but is no count
        ("It is 3.", 3),  # sentence full stop
        ("v2 model", None),  # digits glued to a word are not a number
        ("-2", -2),
        ("１２", None),  # only ASCII digits
        ("9" * 40, None),  # absurdly long digit strings are no count
    ],
)
def test_parse_count(answer, expected):
    assert parse_count(answer) == expected


def test_parse_needs_the_answer_block_by_default():
    assert TASK.parse("I count 3", PARAMS) is None
    assert TASK.parse("I count 3", TASK.params({"require_answer_tags": False})) == 3
    assert TASK.parse("<think>maybe 2</think><answer>3</answer>", PARAMS) == 3
    assert TASK.parse("<think>t</think><answer>3", PARAMS) is None  # truncated


def test_accuracy_is_exact_match_and_a_decimal_never_matches():
    sample = vgrpo.Sample(id="a", solution=3)
    completions = [
        "<answer>3</answer>",
        "<answer>3.0</answer>",
        "<answer>4</answer>",
        "<answer>three</answer>",
    ]
    results = vgrpo.score(TASK, completions, [sample] * 4)
    assert [r.rewards["accuracy"] for r in results] == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True, None, [3]])
def test_check_solution_wants_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        TASK.check_solution(bad)


def test_metric_is_accuracy_over_the_split():
    samples = [vgrpo.Sample(id=str(i), solution=i) for i in range(4)]
    assert TASK.metric([0, 1, 5, None], samples, PARAMS) == {"accuracy": 0.5}
    assert TASK.metric([], [], PARAMS) == {"accuracy": 0.0}


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.lists(st.sampled_from(["<answer>", "</answer>", "3", ".", ",", "five", "-", " ", "1,000"])).map(
        "".join
    )
)
def test_any_text_gets_finite_in_range_rewards(text):
    [r] = vgrpo.score(TASK, [text], [vgrpo.Sample(id="a", solution=3)])
    assert r.errors == []
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in r.rewards.values())
