"""The safety net around rewards: a broken reward never aborts a batch."""

from __future__ import annotations

import math
from collections import Counter

import pytest

import vgrpo
from vgrpo.rewards import RewardTable
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


@vgrpo.reward("acme.length")
def length_reward(completion):
    """1.0 for an empty completion."""
    return 1.0 if not completion else 0.0


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


def test_misspelled_reward_names_suggest_the_closest_one():
    table = RewardTable({"acme.length": length_reward})
    unknown = r"unknown reward 'formt' for task 'toy' \(did you mean 'format'\?\)"
    with pytest.raises(vgrpo.ParamsError, match=unknown):
        resolve_weights(Toy(), {"formt": 1})
    with pytest.raises(vgrpo.ParamsError, match=r"'acme.lenght' .*\(did you mean 'acme.length'\?\)"):
        resolve_weights(Toy(), {"acme.lenght": 1}, table)
    with pytest.raises(vgrpo.ParamsError) as info:  # nothing close: no suggestion
        resolve_weights(Toy(), {"zzz": 1}, table)
    assert "did you mean" not in str(info.value)


def test_a_conflicted_plugin_reward_is_a_conflict_at_the_use_site_not_unknown():
    """A name two distributions register is left out of the table; naming it says who, not "unknown"."""
    message = "reward name 'acme.length' is provided by acme-a 1.0 (...) and acme-b 2.0 (...)"
    table = RewardTable({}, conflicts={"acme.length": message})
    with pytest.raises(vgrpo.NameConflictError) as info:
        resolve_weights(Toy(), {"format": 1, "acme.length": 0.5}, table)
    assert str(info.value) == f"reward weights for task 'toy': {message}"
    assert resolve_weights(Toy(), {"format": 1}, table) == {"format": 1.0}  # unused: no error
    assert resolve_weights(Toy(), {"acme.length": 1}, {"acme.length": length_reward}) == {"acme.length": 1.0}


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


# -- the parser's optional sample ------------------------------------------------------------------------------
class Pick(Toy):
    """Answers are 1-based indices into the record's candidates: the parser resolves them with the sample."""

    name = "pick"

    def parse(self, completion, params, sample=None):
        classes = sample.extra["classes"] if sample is not None else []
        ok = completion.isdigit() and 0 < int(completion) <= len(classes)
        return classes[int(completion) - 1] if ok else None


def test_a_parser_that_declares_sample_gets_the_record_and_the_two_argument_form_still_works():
    samples = [
        vgrpo.Sample(id="a", extra={"classes": ["circle", "square"]}),
        vgrpo.Sample(id="b", extra={"classes": ["cat", "dog", "cow"]}),
    ]
    assert [s.parsed for s in vgrpo.score(Pick(), ["2", "3"], samples)] == ["square", "cow"]
    assert [s.parsed for s in vgrpo.score(Toy(), ["2", "3"], samples)] == ["2", "3"]
    assert vgrpo.scoring.safe_parse(Pick(), "1", Pick().params()) == (None, None)  # no sample: None is passed


def test_the_sample_argument_is_chosen_by_signature_once(monkeypatch):
    import inspect

    class KeywordOnly(Toy):
        name = "kw"

        def parse(self, completion, params, *, sample):
            return sample.id

    calls = []
    signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda fn, **kw: calls.append(fn) or signature(fn, **kw))
    samples = [vgrpo.Sample(id=str(i)) for i in range(5)]
    assert [s.parsed for s in vgrpo.score(KeywordOnly(), ["x"] * 5, samples)] == ["0", "1", "2", "3", "4"]
    vgrpo.score(KeywordOnly(), ["x"], samples[:1])
    assert calls.count(KeywordOnly.parse) == 1


def test_vgrpo_score_lines_give_the_parser_the_lines_record():
    from vgrpo.cli._score import score_lines

    lines = [(1, '{"completion": "2", "solution": null, "classes": ["circle", "square"]}')]
    [row] = score_lines(Pick(), lines, Pick().params(), None, {})
    assert row["parsed"] == "square" and row["error"] is None


def test_evaluation_gives_the_parser_its_record(tmp_path):
    from vgrpo.evaluate import EvalSplit, evaluate
    from vgrpo.models.adapters import Qwen25VLAdapter

    seen = []

    class SeeingCount(type(vgrpo.get_registry().task("count"))):
        name = "seeing_count"

        def parse(self, completion, params, sample=None):
            seen.append(None if sample is None else sample.id)
            return super().parse(completion, params)

    task = SeeingCount()
    samples = [vgrpo.Sample(id=i, question="How many?", solution=1) for i in ("a", "b")]
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    evaluate(model, processor, adapter, [EvalSplit(task, task.params(), samples)], tmp_path, max_new_tokens=2)
    assert sorted(seen) == ["a", "b"]


@pytest.mark.parametrize(
    ("returned", "kind"),
    [(10**400, "non_finite"), ("0.75", "error"), (b"1", "error"), (float("inf"), "non_finite")],
)
def test_values_that_are_no_finite_number_score_the_minimum_and_are_counted(returned, kind):
    @vgrpo.reward(range=(0.0, 1.0))
    def odd(completion):
        return returned

    class Odd(Toy):
        rewards = (odd,)
        default_weights = {"odd": 1.0}

    failures: Counter[str] = Counter()
    (out,) = vgrpo.score(Odd(), ["x"], [vgrpo.Sample(id="a")], failures=failures)
    assert out.rewards["odd"] == 0.0 and failures == Counter({f"odd/{kind}": 1})


def test_a_reward_that_calls_sys_exit_is_a_failing_reward_not_the_end_of_the_run():
    import sys

    @vgrpo.reward(range=(0.0, 1.0))
    def leaves(completion):
        sys.exit(3)

    class Leaves(Toy):
        rewards = (leaves,)
        default_weights = {"leaves": 1.0}

    failures: Counter[str] = Counter()
    (out,) = vgrpo.score(Leaves(), ["x"], [vgrpo.Sample(id="a")], failures=failures)
    assert out.rewards["leaves"] == 0.0 and failures == Counter({"leaves/error": 1})
