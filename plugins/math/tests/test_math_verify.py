"""Accuracy through math-verify: equivalences, non-equivalences, and the exact shortcuts' agreement."""

from __future__ import annotations

import random

import pytest

import vgrpo
from vgrpo.data import sample_from_record
from vgrpo_math._worker import MathVerifyCheck, certainly_unequal
from vgrpo_math.answer import as_latex, plain_integers_equal
from vgrpo_math.task import MathTask

TASK = MathTask()


def accuracy(answer: str, solution: object) -> float:
    completion = f"<think>work</think><answer>{answer}</answer>"
    sample = sample_from_record({"id": "t", "solution": solution}, TASK)
    (result,) = vgrpo.score(TASK, [completion], [sample])
    assert result.errors == []
    return result.rewards["accuracy"]


@pytest.mark.parametrize(
    ("answer", "solution"),
    [
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("x = 3", "3"),
        ("\\boxed{x = 3}", "3"),
        ("\\boxed{3/4}", "\\dfrac{3}{4}"),
        ("\\boxed{\\pi \\cdot 2}", "2\\pi"),
        ("\\boxed{2^{1/2}}", "\\sqrt{2}"),
        ("\\boxed{1 + x}", "x + 1"),
        ("\\boxed{[1, 2]}", "[1,2]"),  # closed interval
        ("\\boxed{(0, \\infty)}", "(0,\\infty)"),
        ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}"),  # sets are unordered
        ("\\boxed{3}", 3),  # integer ground truth
        ("\\boxed{\\frac{1}{2}}", 0.5),  # float ground truth
        ("\\boxed{3}", "3"),  # plain-text ground truth
        ("\\boxed{3}", "$3$"),  # ground truth already in math mode
        ("\\boxed{7}", "\\boxed{7}"),
        ("The answer is $\\frac{1}{2}$", "0.5"),  # an answer already holding math: math-verify finds it
        ("\\boxed{1000}", "1,000"),
        ("\\boxed{0.333333}", "\\frac{1}{3}"),  # math-verify rounds floats to 6 places
        ("The result is 42", "42"),  # prose: its final number (before the prose rule: T·h·e·…·42, 0)
    ],
)
def test_equivalent(answer: str, solution: object) -> None:
    assert accuracy(answer, solution) == 1.0


@pytest.mark.parametrize(
    ("answer", "solution"),
    [
        ("\\boxed{4}", "3"),
        ("\\boxed{-5}", "5"),
        ("\\boxed{0.55}", "\\frac{1}{2}"),
        ("\\boxed{0.33}", "\\frac{1}{3}"),
        ("\\boxed{2}", "2\\pi"),
        ("\\boxed{x - 1}", "x + 1"),
        ("\\boxed{[1, 2]}", "(1,2)"),  # closed vs open interval
        ("\\boxed{\\{1, 3\\}}", "\\{1,2\\}"),
        ("\\boxed{\\sqrt{3}}", "\\sqrt{2}"),
        ("\\boxed{x = 4}", "3"),
    ],
)
def test_not_equivalent(answer: str, solution: object) -> None:
    assert accuracy(answer, solution) == 0.0


def test_no_answer_block_scores_zero() -> None:
    sample = sample_from_record({"id": "t", "solution": "3"}, TASK)
    results = vgrpo.score(TASK, ["\\boxed{3}", "<think>t</think><answer></answer>"], [sample, sample])
    assert results[0].rewards == {"accuracy": 0.0, "format": 0.0}
    assert results[1].rewards == {"accuracy": 0.0, "format": 1.0}
    assert [r.parsed for r in results] == [None, None]
    assert all(r.errors == [] for r in results)


def test_batch_of_groups_scores_each_item() -> None:
    samples = [sample_from_record({"id": str(i), "solution": s}, TASK) for i, s in enumerate(["12", "1/3"])]
    answers = [
        ("\\boxed{12}", 0),
        ("\\boxed{13}", 0),
        ("\\boxed{12.0}", 0),
        ("\\boxed{12}", 0),
        ("\\boxed{\\frac{2}{6}}", 1),
        ("\\boxed{1/3}", 1),
        ("\\boxed{3}", 1),
        ("\\boxed{\\frac{2}{6}}", 1),
    ]
    completions = [f"<think>t</think><answer>{a}</answer>" for a, _ in answers]
    results = vgrpo.score(TASK, completions, [samples[i] for _, i in answers])
    assert [r.rewards["accuracy"] for r in results] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert [r.reward for r in results] == [2.0, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 2.0]


def _integer_cases() -> list[tuple[str, str]]:
    rng = random.Random(1)
    cases = [
        ("0", "0"),
        ("-0", "0"),
        ("0", "-0"),
        ("7", "007"),
        ("007", "7"),
        ("-3", "-03"),
        ("10", "1"),
        ("1", "10"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("123456789012345678901234567890", "123456789012345678901234567891"),
        ("1234567890123456", "1234567890123457"),
        ("99999999999999999", "100000000000000000"),
    ]
    for _ in range(150):
        a = rng.choice([rng.randint(-20, 20), rng.randint(-(10**6), 10**6), rng.randint(0, 10**40)])
        b = rng.choice([a, -a, a + 1, a - 1, a * 10, rng.randint(-(10**6), 10**6)])
        pad = "0" * rng.randint(0, 2)
        cases.append((str(a), str(b) if b < 0 else pad + str(b)))
    return cases


def test_integer_shortcut_agrees_with_math_verify() -> None:
    check = MathVerifyCheck()
    for gold, pred in _integer_cases():
        shortcut = plain_integers_equal(gold, pred)
        assert shortcut is not None
        assert shortcut == check.verify(check.gold(as_latex(gold)), as_latex(pred)), (gold, pred)


PROSE = [
    "The result is 42",
    "the answer is 7",
    "two apples",
    "x y z",
    "2 x",
    "\\pi r",
    "e x",
    "abc^2",
    "It is 3 cm",
]


def test_monomial_shortcut_agrees_with_math_verify() -> None:
    from math_verify import verify

    check = MathVerifyCheck()
    fired = 0
    for gold in ["42", "7", "3", "0", "-1", "0.5", "\\frac{1}{2}", "\\pi", "1000000"]:
        parsed_gold = check.gold(as_latex(gold))
        for pred in PROSE:
            parsed_pred = check.parse(as_latex(pred))
            shortcut = certainly_unequal(parsed_gold, parsed_pred)
            fired += shortcut
            if shortcut:
                assert verify(parsed_gold, parsed_pred, timeout_seconds=None) is False, (gold, pred)
    assert fired >= 40  # the shortcut does fire on prose read as math


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ("x", "x"),
        ("abc", "abc"),
        ("2x", "2 x"),
        ("0", "0 x"),
        ("1", "\\sin^2 x + \\cos^2 x"),
        ("x = 3", "3"),
        ("\\text{east}", "east"),
    ],
)
def test_monomial_shortcut_stands_aside_when_unsure(gold: str, pred: str) -> None:
    from math_verify import verify

    check = MathVerifyCheck()
    parsed_gold, parsed_pred = check.gold(as_latex(gold)), check.parse(as_latex(pred))
    if certainly_unequal(parsed_gold, parsed_pred):
        assert verify(parsed_gold, parsed_pred, timeout_seconds=None) is False
    assert check.verify(parsed_gold, as_latex(pred)) == verify(parsed_gold, parsed_pred, timeout_seconds=None)


def test_metric_is_dataset_accuracy() -> None:
    solutions = ["1", "\\frac{1}{2}", "3", "x+1"]
    samples = [sample_from_record({"id": str(i), "solution": s}, TASK) for i, s in enumerate(solutions)]
    predictions = ["1", "0.5", None, "x - 1"]
    assert TASK.metric(predictions, samples, TASK.params()) == {"accuracy": 0.5}
    assert TASK.metric([], [], TASK.params()) == {"accuracy": 0.0}
    assert tuple(TASK.metric_names) == ("accuracy",)


# The prose rule (docs/rewards.md, math): an answer written in words yields its final number or expression,
# with or without final punctuation; LaTeX stays LaTeX.
@pytest.mark.parametrize(
    ("answer", "solution"),
    [
        ("There are 3 apples.", "3"),
        ("There are 3 apples", "3"),
        ("x is 3", "3"),
        ("x is 3.", "3"),
        ("The answer is 42", "42"),
        ("The answer is 42.", "42"),
        ("So the total is \\frac{1}{2} of the cake", "\\frac{1}{2}"),
        ("So the total is \\frac{1}{2} of the cake.", "0.5"),
        ("\\frac{1}{2}.", "\\frac{1}{2}"),  # final punctuation after LaTeX
        ("x = 3", "3"),
        ("x = 3.", "3"),
        ("The answer is x = 3", "3"),
        ("2\\pi", "2\\pi"),
        ("The circumference is 2\\pi.", "2\\pi"),  # LaTeX inside prose stays LaTeX
        ("So the value is x^2 + 1", "x^2 + 1"),
        ("It is 3 cm", "3"),
        ("The area is 12 cm^2.", "12"),  # a unit with its power is prose
        ("There are 3 apples in a basket", "3"),  # an article between words is prose
        ("Let x be 3", "3"),
        ("The answer is $\\frac{1}{2}$.", "0.5"),
        ("**The answer is 7**", "7"),
        ("3 apples and 4 pears, so 7 fruits in all", "7"),
        ("I think it's 5", "5"),
        ("答案是 6", "6"),
        ("\\boxed{3 apples}", "3"),  # a box written in words is read the same way
        ("x = 2 or x = 3", "2, 3"),  # joined by "or": one answer, a set
        ("The roots are 2 and 3.", "\\{2, 3\\}"),
    ],
)
def test_prose_yields_its_final_number_or_expression(answer: str, solution: object) -> None:
    assert accuracy(answer, solution) == 1.0


@pytest.mark.parametrize(
    ("answer", "solution"),
    [
        ("2\\pi", "2"),  # 2π, never 2 (VLM-R1 reads 2)
        ("The circumference is 2\\pi.", "2"),
        ("\\boxed{2\\pi}", "2"),
        ("So the value is x^2 + 1", "1"),
        ("There are 3 apples and 4 pears", "3"),  # the final number, not the first
        ("x is 3", "x"),
    ],
)
def test_prose_rule_keeps_latex_latex(answer: str, solution: object) -> None:
    assert accuracy(answer, solution) == 0.0
