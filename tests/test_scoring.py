"""The safety net around rewards: a broken reward never aborts a batch."""

from __future__ import annotations

import math
from collections import Counter

import pytest

import vgrpo
from vgrpo.scoring import apply_reward, resolve_weights


class Toy(vgrpo.Task):
    name = "toy"
    description = "toy"
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (vgrpo.format_reward,)
    default_weights = {"format": 1.0}

    def parse(self, completion, params):
        return completion

    def metric(self, predictions, samples, params):
        return {}


def run(reward, parsed):
    samples = [vgrpo.Sample(id=str(i)) for i in range(len(parsed))]
    return apply_reward(reward, parsed, samples, Toy.Params(), ["c"] * len(parsed))


def test_a_raising_item_scores_the_minimum_and_the_rest_keep_their_values():
    @vgrpo.reward(range=(-1.0, 1.0), batched=True)
    def fragile(parsed):
        if "bad" in parsed:
            raise ZeroDivisionError("boom")
        return [0.5] * len(parsed)

    values, errors = run(fragile, ["ok", "bad", "ok"])
    assert values == [0.5, -1.0, 0.5]
    assert errors[0] is None and errors[2] is None and "ZeroDivisionError: boom" in errors[1]


def test_non_finite_out_of_range_and_failure_values_are_sanitised():
    @vgrpo.reward(range=(0.0, 1.0), batched=True)
    def odd(parsed):
        return [math.nan, 2.5, -math.inf, vgrpo.RewardFailure("timeout", "5 s"), "x", 0.25]

    values, errors = run(odd, list("abcdef"))
    assert values == [0.0, 1.0, 0.0, 0.0, 0.0, 0.25]
    kinds = [e.split(":")[0] if e else None for e in errors]
    assert kinds == ["non_finite", "out_of_range", "non_finite", "timeout", "error", None]


def test_a_batched_reward_returning_the_wrong_length_is_an_error_per_item():
    @vgrpo.reward(batched=True)
    def short(parsed):
        return [1.0]

    values, errors = run(short, ["a", "b"])
    # the batch fails, then each single item succeeds: length 1 is right for one item
    assert values == [1.0, 1.0] and errors == [None, None]


def test_score_counts_failures_and_weights_rewards():
    @vgrpo.reward(range=(0.0, 1.0))
    def always_fails(completion):
        raise RuntimeError("nope")

    class Two(Toy):
        rewards = (vgrpo.format_reward, always_fails)
        default_weights = {"format": 2.0, "always_fails": 1.0}

    failures: Counter[str] = Counter()
    samples = [vgrpo.Sample(id="a"), vgrpo.Sample(id="b")]
    out = vgrpo.score(Two(), ["<think></think><answer>1</answer>", "x"], samples, failures=failures)
    assert [s.reward for s in out] == [2.0, 0.0]
    assert failures == Counter({"always_fails/error": 2})
    assert "RuntimeError: nope" in out[0].errors[0]


def test_weights_replace_the_defaults_and_unknown_names_are_errors():
    assert resolve_weights(Toy(), None) == {"format": 1.0}
    assert resolve_weights(Toy(), {"format": 0.5}) == {"format": 0.5}
    with pytest.raises(vgrpo.ParamsError, match="unknown reward 'acuracy'.*valid: \\['format'\\]"):
        resolve_weights(Toy(), {"acuracy": 1})
    with pytest.raises(vgrpo.ParamsError, match="finite number"):
        resolve_weights(Toy(), {"format": float("nan")})


def test_a_raising_parser_yields_none_and_an_error():
    class Broken(Toy):
        def parse(self, completion, params):
            raise ValueError("parser bug")

    [s] = vgrpo.score(Broken(), ["x"], [vgrpo.Sample(id="a")])
    assert s.parsed is None and "parser bug" in s.errors[0]


def test_reward_declarations_are_checked():
    with pytest.raises(TypeError, match="unknown argument.*'solution'"):
        vgrpo.reward("x")(lambda parsed, solution: 0.0)
    with pytest.raises(ValueError, match="range"):
        vgrpo.reward("x", range=(1.0, 0.0))(lambda parsed: 0.0)
    with pytest.raises(ValueError, match="name 'Bad Name' is invalid"):
        vgrpo.reward("Bad Name")(lambda parsed: 0.0)
