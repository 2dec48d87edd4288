"""The math task as a plugin: registration, template, params, example, and scoring any text safely."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo
from vgrpo.data import sample_from_record
from vgrpo.validation import validate_task
from vgrpo_math import MathParams, MathTask

TASK = MathTask()


def test_plugin_registers_the_task_without_errors() -> None:
    registry = vgrpo.load_plugins()
    assert not [e for e in registry.errors if "math" in str(e)]
    task = registry.task("math")
    assert isinstance(task, MathTask)
    assert validate_task(task) == []


def test_registration_starts_no_worker_process() -> None:
    code = (
        "import vgrpo, vgrpo_math.verifier as v; r = vgrpo.load_plugins(); r.task('math'); "
        "print(v._default is None or v._default.worker_pid is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_template_asks_for_think_answer_and_boxed() -> None:
    sample = sample_from_record(TASK.example, TASK)
    messages = TASK.build_prompt(sample, TASK.params())
    content = messages[-1]["content"]
    assert content[0] == {"type": "image", "image": "triangle.png"}
    text = content[-1]["text"]
    assert text.startswith(TASK.example["question"])
    for piece in ("<think> </think>", "<answer> </answer>", "\\boxed{}"):
        assert piece in text


def test_example_completion_is_right_and_well_formatted() -> None:
    sample = sample_from_record(TASK.example, TASK)
    (result,) = vgrpo.score(TASK, [TASK.example_completion], [sample])
    assert result.parsed == "5"
    assert result.rewards == {"accuracy": 1.0, "format": 1.0} and result.reward == 2.0


def test_params() -> None:
    params = TASK.params()
    assert isinstance(params, MathParams) and params.timeout_s == 5.0 and params.require_answer_tags is True
    assert TASK.params({"timeout_s": 0.25}).timeout_s == 0.25
    for bad in (0, -1, float("nan"), float("inf"), "soon"):
        with pytest.raises(vgrpo.ParamsError, match="timeout_s"):
            TASK.params({"timeout_s": bad})
    assert MathParams.model_fields["timeout_s"].description
    assert dict(TASK.default_weights) == {"accuracy": 1.0, "format": 1.0}
    assert {r.name: r.range for r in TASK.rewards} == {"accuracy": (0.0, 1.0), "format": (0.0, 1.0)}


def test_weights_apply_to_the_total() -> None:
    sample = sample_from_record({"id": "t", "solution": "\\frac{1}{2}"}, TASK)
    comps = ["<think>t</think><answer>\\boxed{0.5}</answer>", "no format \\boxed{0.5}"]
    weights = {"accuracy": 2.0, "format": 0.5}
    results = vgrpo.score(TASK, comps, [sample] * 2, {"require_answer_tags": False}, weights)
    assert [r.reward for r in results] == [2.5, 2.0]


FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "\\boxed ",
    "}",
    "{",
    "$",
    "\\frac{",
    "\\sqrt{",
    "^",
    "=",
    "x",
    "1",
    "42",
    "0.5",
    "\\pi",
    "\\{",
    "\\}",
    "(",
    ")",
    "[",
    "]",
    ",",
    " ",
    "\n",
    "\\left(",
    "\\right)",
    "!",
    "\\infty",
    "\\text{",
    "%",
]
texts = st.one_of(
    st.text(max_size=120),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join),
)


@given(
    completion=texts,
    solution=st.one_of(st.sampled_from(["3", "\\frac{1}{2}", "x + 1", "[0, 1]"]), st.integers(-100, 100)),
)
@settings(max_examples=50, deadline=None)
def test_any_text_scores_in_range(completion: str, solution: object) -> None:
    sample = sample_from_record({"id": "h", "solution": solution}, TASK)
    for params in ({"timeout_s": 2.0}, {"timeout_s": 2.0, "require_answer_tags": False}):
        (result,) = vgrpo.score(TASK, [completion], [sample], params)
        assert result.parsed is None or isinstance(result.parsed, str)
        for value in result.rewards.values():
            assert math.isfinite(value) and 0.0 <= value <= 1.0
        assert all("timeout" in e for e in result.errors), result.errors


def test_overlong_predictions_score_zero_without_math_verify(monkeypatch):
    import vgrpo
    from vgrpo_math import task as math_task

    def no_verifier():
        raise AssertionError("math-verify must not be called for an overlong prediction")

    monkeypatch.setattr(math_task, "default_verifier", no_verifier)
    task = math_task.MathTask()
    junk = "<answer>\\boxed{" + "[1,1,1," * 3000 + "}</answer>"
    sample = vgrpo.Sample(id="a", solution="1")
    [r] = vgrpo.score(task, [junk], [sample])
    assert r.rewards["accuracy"] == 0.0 and r.errors == []
    monkeypatch.undo()
    [ok] = vgrpo.score(
        task, ["<answer>\\boxed{" + "1" + " " * 20 + "}</answer>"], [sample], {"max_answer_chars": 10}
    )
    assert ok.rewards["accuracy"] == 1.0  # the boxed content is stripped before the length check
