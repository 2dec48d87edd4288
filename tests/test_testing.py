"""vgrpo.testing: check_task / check_reward report each kind of contract violation, and the pytest plugin."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from pydantic import Field

import vgrpo
from vgrpo.testing import call_reward, check_reward, check_task, fuzz_completions
from vgrpo.testing._fuzz import EDGE_CASES
from vgrpo.validation import validate_task


@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed: Any, sample: vgrpo.Sample) -> float:
    """1.0 when the answer equals the solution."""
    return 1.0 if parsed == sample.solution else 0.0


class EchoParams(vgrpo.TaskParams):
    mode: Literal["plain", "strict"] = Field("plain", description="How to read the answer.")


class EchoTask(vgrpo.Task):
    """A task that honours the contract: the answer is the text inside <answer>."""

    name = "test.echo"
    version = "1.0.0"
    description = "Echo the answer."
    Params = EchoParams
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {"id": "e", "image": "x.png", "question": "Say hi", "solution": "hi"}
    example_completion = "<think>.</think><answer>hi</answer>"

    def parse(self, completion: str, params: vgrpo.TaskParams) -> str | None:
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        return None if answer is None else answer.strip()

    def metric(self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: Any) -> dict:
        hits = [p == s.solution for p, s in zip(predictions, samples)]
        return {"accuracy": sum(hits) / len(hits) if hits else 0.0}


def violations(task: Any, **kw: Any) -> str:
    with pytest.raises(AssertionError) as info:
        check_task(task, **kw)
    return str(info.value)


# -- a good task passes --------------------------------------------------------------------------------------
def test_a_task_that_honours_the_contract_passes():
    check_task(EchoTask())
    check_task(EchoTask)  # a class is instantiated
    more = [
        {"id": "r1", "question": "Say yo", "solution": "yo"},  # a record: template, parser, rewards
        # a (record, correct completion) pair: the metric check too
        ({"id": "r2", "question": "Say ho", "solution": "ho"}, "<think>.</think><answer>ho</answer>"),
        vgrpo.Sample(id="s3", question="Say no", solution="no", images=("a.png", "b.png")),
    ]
    check_task(EchoTask(), examples=more, params=[{"require_answer_tags": False}], fuzz=20, seed=3)


def test_something_that_is_not_a_task_is_a_failed_check_not_a_crash():
    for junk in ("rec", None, accuracy):
        with pytest.raises(AssertionError, match="expected a vgrpo.Task"):
            check_task(junk)


def test_the_builtin_tasks_pass(vgrpo_registry):
    for name in ("rec", "ovd", "count"):
        check_task(vgrpo_registry.task(name), fuzz=50)


# -- parser --------------------------------------------------------------------------------------------------
def test_a_parser_that_raises_is_reported_with_an_input_and_a_count():
    class RaisingParser(EchoTask):
        def parse(self, completion, params):
            if "9" in completion:
                raise ZeroDivisionError("nine")
            return super().parse(completion, params)

    text = violations(RaisingParser())
    assert "parser: parse() raised ZeroDivisionError on '" in text
    assert ": nine [" in text and "more case(s) like it]" in text


def test_a_parser_that_fails_under_one_params_choice_names_the_params():
    class StrictFails(EchoTask):
        def parse(self, completion, params):
            if params.mode == "strict" and completion.startswith("<think>"):
                raise ValueError("strict mode is broken")
            return super().parse(completion, params)

    text = violations(StrictFails())
    assert "parse() raised ValueError" in text and "with params {'mode': 'strict'}" in text


def test_a_parser_returning_non_json_is_reported():
    class SetParser(EchoTask):
        def parse(self, completion, params):
            answer = super().parse(completion, params)
            return None if answer is None else {answer}

    assert "parser: parse() returned a value that is not strict JSON" in violations(SetParser())


# -- rewards -------------------------------------------------------------------------------------------------
def _with_rewards(*rewards: vgrpo.Reward) -> type[EchoTask]:
    class Task(EchoTask):
        pass

    Task.rewards = (*rewards, vgrpo.format_reward)
    Task.default_weights = {r.name: 1.0 for r in Task.rewards}
    return Task


def test_a_reward_out_of_its_range_is_reported():
    @vgrpo.reward("accuracy", range=(0.0, 1.0))
    def too_big(parsed: Any, sample: vgrpo.Sample) -> float:
        """2.0 for a right answer: outside the declared range."""
        return 2.0 if parsed == sample.solution else 0.0

    text = violations(_with_rewards(too_big))
    assert "reward 'accuracy' went outside its declared range [0, 1]: 2 on " in text


def test_a_reward_that_raises_or_returns_nan_or_text_is_reported():
    @vgrpo.reward("raises")
    def raises(parsed: Any) -> float:
        """Breaks on unparsable answers."""
        return float(len(parsed) > 0)

    @vgrpo.reward("nan")
    def nan(completion: str) -> float:
        """NaN for long completions."""
        return float("nan") if len(completion) > 50 else 0.5

    @vgrpo.reward("text")
    def text(completion: str) -> Any:
        """A string instead of a number."""
        return "0.5"

    found = violations(_with_rewards(raises, nan, text))
    assert "reward 'raises' raised TypeError" in found
    assert "reward 'nan' returned a non-finite value nan" in found
    assert "reward 'text' returned a non-number '0.5'" in found


def test_a_batched_reward_returning_the_wrong_number_of_values_is_reported():
    @vgrpo.reward("short", batched=True)
    def short(completions: Sequence[str]) -> list[float]:
        """One value too few."""
        return [0.0] * (len(completions) - 1)

    assert "reward 'short' raised ValueError" in violations(_with_rewards(short))


def test_a_batched_reward_that_breaks_only_on_batches_is_reported():
    @vgrpo.reward("single", batched=True)
    def single(completions: Sequence[str]) -> list[float]:
        """Always one value: right for one item, wrong for a batch."""
        return [0.0]

    assert "reward 'single' raised ValueError on a whole batch, not on its items one by one" in violations(
        _with_rewards(single)
    )
    with pytest.raises(AssertionError, match="on a whole batch, not on its items one by one"):
        check_reward(vgrpo.reward("acme.single", batched=True)(single.fn))


def test_a_reward_returning_a_numpy_number_passes_registration_and_the_contract():
    np = pytest.importorskip("numpy")

    @vgrpo.reward("accuracy", range=(0.0, 1.0))
    def numpy_accuracy(parsed: Any, sample: vgrpo.Sample) -> float:
        """numpy's float32, as vectorised rewards return."""
        return np.float32(parsed == sample.solution)

    task = _with_rewards(numpy_accuracy)()
    assert validate_task(task) == []  # was: "gave np.float32(1.0) on the example, outside its range"
    check_task(task)


def test_a_reward_without_a_description_is_reported():
    bare = vgrpo.Reward("bare", lambda completion: 0.0)
    assert "reward 'bare' has no description" in violations(_with_rewards(bare))


# -- metric --------------------------------------------------------------------------------------------------
def test_a_metric_below_its_best_on_perfect_predictions_is_reported():
    class HalfMetric(EchoTask):
        def metric(self, predictions, samples, params):
            return {"accuracy": 0.5}

    text = violations(HalfMetric())
    assert "metric: 'accuracy' is not at its best on perfect predictions: got 0.5, expected 1.0" in text
    assert "predictions ['hi']" in text


def test_metric_best_states_the_best_value_of_a_lower_is_better_metric():
    class ErrorMetric(EchoTask):
        metric_names = ("error",)

        def metric(self, predictions, samples, params):
            wrong = [p != s.solution for p, s in zip(predictions, samples)]
            return {"error": sum(wrong) / max(len(wrong), 1)}

        def correct(self, predictions, samples, params):  # the default reads metric_names[0] >= 1.0 as right
            return [p is not None and p == s.solution for p, s in zip(predictions, samples)]

    expected = "'error' is not at its best on perfect predictions: got 0.0, expected 1.0"
    assert expected in violations(ErrorMetric())
    check_task(ErrorMetric(), metric_best={"error": 0.0})


def test_a_metric_that_breaks_on_none_or_lacks_a_name_is_reported():
    class Fragile(EchoTask):
        metric_names = ("accuracy", "length")

        def metric(self, predictions, samples, params):
            hits = [len(p) > 0 and p == s.solution for p, s in zip(predictions, samples)]
            return {"accuracy": sum(hits) / len(samples)}

    text = violations(Fragile())
    assert "metric: metric() on perfect predictions lacks ['length'], declared in metric_names" in text
    assert "metric: metric() raised TypeError on unparsable (None) predictions" in text


def test_an_example_completion_that_does_not_parse_is_reported():
    class Wrong(EchoTask):
        example_completion = "<think>no answer block</think>"

    text = violations(Wrong())
    assert "metric: a correct example completion does not parse" in text


def test_correct_must_agree_with_perfect_predictions_when_a_task_defines_it():
    class NeverCorrect(EchoTask):
        def correct(self, predictions, samples, params):
            return [False] * len(predictions)

    assert "correct: correct() is not True on perfect predictions" in violations(NeverCorrect())


# -- template and params -------------------------------------------------------------------------------------
def test_a_template_that_fails_to_render_is_reported():
    class MissingField(EchoTask):
        template = vgrpo.PromptTemplate(user="{question} in {colour}")

    text = violations(MissingField())
    assert "template: the prompt does not render (TemplateFieldError) on sample 'e'" in text
    assert "'colour'" in text


def test_a_prompt_without_an_image_slot_per_image_is_reported():
    class NoImage(EchoTask):
        def build_prompt(self, sample, params):
            return [{"role": "user", "content": [{"type": "text", "text": sample.question}]}]

    assert "0 image slot(s) for a sample with 1 image(s)" in violations(NoImage())


def test_an_invalid_params_default_and_an_invalid_params_mapping_are_reported():
    class BadDefault(vgrpo.TaskParams):
        threshold: float = Field(-1.0, gt=0)

    class Task(EchoTask):
        Params = BadDefault

    text = violations(Task(), params=[{"nope": 1}])
    assert "params: a default value does not validate: threshold: Input should be greater than 0" in text
    assert "params: a params mapping given to check_task does not validate" in text and "nope" in text


def test_an_example_record_that_does_not_load_is_reported():
    text = violations(EchoTask(), examples=[{"id": "x", "question": "no solution"}])
    assert "examples: a record does not load: examples[0]" in text and "solution" in text


def test_every_violation_is_listed_not_just_the_first():
    @vgrpo.reward("accuracy")
    def over(parsed: Any) -> float:
        """Always 3."""
        return 3.0

    class Broken(_with_rewards(over)):
        template = vgrpo.PromptTemplate(user="{missing}")

        def parse(self, completion, params):
            if not completion:
                raise RuntimeError("empty")
            return super().parse(completion, params)

        def metric(self, predictions, samples, params):
            return {"accuracy": 0.0}

    text = violations(Broken())
    for expected in (
        "template: the prompt does not render",
        "parse() raised RuntimeError",
        "reward 'accuracy' went outside",
        "'accuracy' is not at its best",
    ):
        assert expected in text
    assert text.startswith("task 'test.echo' breaks the vgrpo contract (")


# -- check_reward --------------------------------------------------------------------------------------------
def test_check_reward_passes_a_total_reward_and_reports_a_fragile_one():
    @vgrpo.reward("acme.short", range=(0.0, 1.0))
    def short(completion: str) -> float:
        """1.0 for short completions."""
        return 1.0 if len(completion) < 500 else 0.0

    check_reward(short)
    check_reward(short, samples=[{"id": "a", "solution": 3}, vgrpo.Sample(id="b")], fuzz=10)

    @vgrpo.reward("acme.lower", range=(0.0, 1.0))
    def lower(parsed: Any, sample: vgrpo.Sample) -> float:
        """Assumes string answers: breaks on the parsed values of box or count tasks."""
        return 1.0 if parsed.lower() == str(sample.solution) else 0.0

    with pytest.raises(AssertionError, match=r"reward 'acme.lower' raised AttributeError"):
        check_reward(lower)

    @vgrpo.reward("acme.over", range=(0.0, 1.0))
    def over(completion: str) -> float:
        """Grows with the length."""
        return len(completion) / 100

    with pytest.raises(AssertionError, match=r"went outside its declared range \[0, 1\]"):
        check_reward(over)
    with pytest.raises(AssertionError, match="expected a vgrpo.Reward"):
        check_reward(lambda completion: 1.0)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="samples: a record does not load"):
        check_reward(short, samples=[{"id": "no solution"}])


# -- the fuzzer ----------------------------------------------------------------------------------------------
def test_fuzz_completions_is_deterministic_and_covers_edge_cases_and_mutations():
    seed_text = "<think>counting</think><answer>42</answer>"
    a = fuzz_completions(100, seed=7, seeds=[seed_text])
    assert a == fuzz_completions(100, seed=7, seeds=[seed_text])
    assert a != fuzz_completions(100, seed=8, seeds=[seed_text])
    assert len(a) == len(EDGE_CASES) + 1 + 100
    assert a[: len(EDGE_CASES)] == list(EDGE_CASES) and seed_text in a
    random_part = a[len(EDGE_CASES) + 1 :]
    assert any(t != seed_text and "<think>counting" in t for t in random_part)  # mutations of the seed
    assert any(seed_text.startswith(t) and t != seed_text for t in random_part)  # truncations
    assert all(isinstance(t, str) for t in a)


# -- call_reward ---------------------------------------------------------------------------------------------
@vgrpo.reward("test.length", range=(0.0, 1.0))
def length(completion: str) -> float:
    """1.0 for an empty completion, 0.0 from 10 characters."""
    return max(0.0, 1.0 - len(completion) / 10)


@vgrpo.reward("test.lengths", range=(0.0, 100.0), batched=True)
def lengths(completions: list[str], params: vgrpo.TaskParams) -> list[float]:
    """The length of each completion (0 when answer tags are not required)."""
    return [float(len(c)) if params.require_answer_tags else 0.0 for c in completions]


class CandidatesTask(EchoTask):
    """Its parser reads the sample: the answer is an index into the record's candidates."""

    name = "test.candidates"
    example = {"id": "c", "question": "Which?", "solution": "square", "candidates": ["circle", "square"]}
    example_completion = "<think>.</think><answer>1</answer>"

    def parse(self, completion: str, params: vgrpo.TaskParams, sample: vgrpo.Sample) -> str | None:
        answer, candidates = vgrpo.extract_answer(completion), sample.extra["candidates"]
        index = int(answer) if answer and answer.isdigit() else len(candidates)
        return candidates[index] if index < len(candidates) else None


def test_call_reward_makes_vgrpos_call_on_one_completion():
    with pytest.raises(TypeError):  # the reason it exists: a Reward's call form is the batch form
        length("abcde")
    assert length.fn("abcde") == 0.5 == call_reward(length, completion="abcde")
    assert call_reward(lengths, completion="abc") == 3.0  # batched: a list of one
    assert call_reward(lengths, completion="abc", params={"require_answer_tags": False}) == 0.0
    assert call_reward(lengths, completion="abc", params=EchoParams(require_answer_tags=False)) == 0.0
    # nothing parsed without a task: the reward gets `parsed` as given (default None)
    assert call_reward(accuracy, parsed="hi", sample={"solution": "hi"}) == 1.0
    assert call_reward(accuracy, parsed="hi", sample={"question": "no solution needed"}) == 0.0
    assert call_reward(accuracy, parsed=None, sample=vgrpo.Sample(id="s", solution=None)) == 1.0
    # with a task: its parser reads the completion, its example is the default record, its params validate
    task = EchoTask()
    assert call_reward(accuracy, task=task, completion="<answer> hi </answer>") == 1.0
    assert call_reward("format", task=task, completion="<answer>hi</answer>") == 0.0  # a task reward by name
    assert call_reward(accuracy, task=task, completion="hi", params={"require_answer_tags": False}) == 1.0
    assert call_reward(accuracy, task=task, parsed="no", completion="<answer>hi</answer>") == 0.0
    with pytest.raises(vgrpo.ParamsError, match="mode"):
        call_reward(accuracy, task=task, params={"mode": "loose"})
    # a parser that asks for the sample gets it, as in training
    picked = call_reward(accuracy, task=CandidatesTask(), completion="<think>.</think><answer>1</answer>")
    assert picked == 1.0
    # registered names: tasks and plugin rewards of the installed plugins
    right = "<think>.</think><answer>3</answer>"
    assert call_reward("accuracy", task="count", completion=right, sample={"solution": 3}) == 1.0
    with pytest.raises(vgrpo.DataError, match="solution"):  # the task checks the record
        call_reward("accuracy", task="count", completion=right, sample={"solution": "three"})


def test_call_reward_fails_where_vgrpo_would_replace_the_value():
    cases = [
        (lambda completion: float("nan"), r"non_finite: returned nan.*vgrpo would score 0.0"),
        (lambda completion: 2.0, r"out_of_range: returned 2.0.*vgrpo would score 1.0"),
        (lambda completion: vgrpo.RewardFailure("timeout", "slow"), r"timeout: slow.*vgrpo would score 0.0"),
        (lambda completion: None, r"returned NoneType, expected a number"),
    ]
    for fn, message in cases:
        with pytest.raises(AssertionError, match=message):
            call_reward(vgrpo.reward("test.bad")(fn), completion="x")
    with pytest.raises(ZeroDivisionError):  # nothing is caught: the test sees the reward's own exception
        call_reward(vgrpo.reward("test.raises")(lambda completion: 1 / 0), completion="x")
    with pytest.raises(TypeError, match="decorate the function with @vgrpo.reward"):
        call_reward(length.fn, completion="x")
    with pytest.raises(vgrpo.UnknownNameError, match="did you mean 'format'"):
        call_reward("formt", task=EchoTask())


# -- the pytest plugin ---------------------------------------------------------------------------------------
def test_the_pytest_plugin_is_registered_and_imports_nothing_heavy():
    eps = [ep for ep in md.entry_points(group="pytest11") if ep.name == "vgrpo"]
    assert [ep.value for ep in eps] == ["vgrpo.testing.pytest_plugin"]
    code = (
        "import sys, vgrpo.testing.pytest_plugin; print(sorted(m for m in ('torch', 'transformers', "
        "'vgrpo_rec', 'vgrpo_math') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_score_completions_fixture_scores_with_an_installed_task(score_completions):
    completions = ["<think>1, 2</think><answer>3</answer>", "<answer>4</answer>"]
    rows = score_completions("count", completions, solution=3)
    got = [(r.parsed, r.rewards["accuracy"], r.rewards["format"]) for r in rows]
    assert got == [(3, 1.0, 1.0), (4, 0.0, 0.0)]
    (row,) = score_completions(EchoTask(), "<think>.</think><answer>hi</answer>")  # the example's solution
    assert row.reward == 2.0 and not row.errors
    with pytest.raises(vgrpo.DataError, match="solution"):
        score_completions("count", "<answer>3</answer>", solution="three")


def test_a_broken_plugin_does_not_break_a_pytest_session(fake_site, tmp_path):
    fake_site.add("vgrpo-broken", source="raise RuntimeError('broken at import')")
    test_file = tmp_path / "test_user.py"
    test_file.write_text(
        textwrap.dedent("""
        def test_unrelated():
            assert 1 + 1 == 2

        def test_registry_lists_the_problem(vgrpo_registry):
            assert [e.distribution for e in vgrpo_registry.errors] == ["vgrpo-broken"]
            assert "count" in vgrpo_registry.tasks
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(fake_site.root)}
    env.pop("VGRPO_STRICT_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_public_names_are_few_and_documented():
    import vgrpo.testing

    assert vgrpo.testing.__all__ == ["call_reward", "check_reward", "check_task", "fuzz_completions"]
    for name in vgrpo.testing.__all__:
        assert (getattr(vgrpo.testing, name).__doc__ or "").strip(), name
