"""acme.repetition_penalty and acme.length_penalty: the contract, values by hand, use by any task."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo
from acme_rewards import length_penalty, make_length_penalty, repeated_ngram_ratio, repetition_penalty
from vgrpo.testing import check_reward


def test_plugin_is_installed_and_registers_only_rewards():
    registry = vgrpo.load_plugins()
    assert registry.owner("reward", "acme.repetition_penalty")[0] == "vgrpo-acme-rewards"
    assert registry.owner("reward", "acme.length_penalty")[0] == "vgrpo-acme-rewards"
    [info] = [p for p in registry.plugins if p.distribution == "vgrpo-acme-rewards"]
    assert info.tasks == [] and sorted(info.rewards) == ["acme.length_penalty", "acme.repetition_penalty"]


@pytest.mark.parametrize("reward", [repetition_penalty, length_penalty])
def test_the_rewards_honour_the_plugin_contract(reward):
    check_reward(reward)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a b c a b c a b c", 4 / 7),  # 7 trigrams, 3 distinct
        ("the cat sat on the mat", 0.0),  # 4 trigrams, all distinct
        ("go go go go go", 2 / 3),  # 3 trigrams, 1 distinct
        ("one two", 0.0),  # fewer words than n
        ("", 0.0),
    ],
)
def test_repeated_ngram_ratio_by_hand(text, expected):
    assert repeated_ngram_ratio(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "length, expected", [(0, 0.0), (1024, 0.0), (1025, -1 / 1024), (1536, -0.5), (2048, -1.0), (50_000, -1.0)]
)
def test_length_penalty_by_hand(length, expected):
    [value] = length_penalty([None], [vgrpo.Sample(id="a")], vgrpo.TaskParams(), ["x" * length])
    assert value == pytest.approx(expected)


def test_make_length_penalty_checks_its_limits():
    short = make_length_penalty("acme.short", 10, 20)
    assert short.name == "acme.short" and short.range == (-1.0, 0.0)
    with pytest.raises(ValueError, match="soft_chars < hard_chars"):
        make_length_penalty("acme.bad", 20, 10)


def test_any_task_can_weight_them_from_a_config():
    registry = vgrpo.load_plugins()
    count = registry.task("count")
    completion = (
        "<think>I count. I count. I count. I count.</think><answer>3</answer>"  # 6 trigrams, 4 distinct
    )
    weights = {"accuracy": 1, "format": 1, "acme.repetition_penalty": 0.5, "acme.length_penalty": 1}
    [result] = vgrpo.score(
        count,
        [completion],
        [vgrpo.Sample(id="a", solution=3)],
        weights=weights,
        plugin_rewards=registry.rewards,
    )
    assert result.rewards["acme.repetition_penalty"] == pytest.approx(-1 / 3)
    assert result.rewards["acme.length_penalty"] == 0.0
    assert result.reward == pytest.approx(1 + 1 - 0.5 / 3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text() | st.lists(st.sampled_from(["a", "b", " ", "\n"])).map("".join), min_size=1, max_size=8
    )
)
def test_any_text_gets_a_finite_penalty_in_range(texts):
    values = repetition_penalty(
        [None] * len(texts), [vgrpo.Sample(id="a")] * len(texts), vgrpo.TaskParams(), texts
    )
    values += length_penalty(
        [None] * len(texts), [vgrpo.Sample(id="a")] * len(texts), vgrpo.TaskParams(), texts
    )
    assert all(math.isfinite(v) and -1.0 <= v <= 0.0 for v in values)
