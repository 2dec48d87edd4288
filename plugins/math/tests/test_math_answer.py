"""Reading the prediction: the last \\boxed{…}, else the whole answer; ground truths; LaTeX wrapping."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo
from vgrpo_math.answer import as_latex, gold_text, last_boxed, parse_answer, plain_integers_equal
from vgrpo_math.task import MathTask

TASK = MathTask()
PARAMS = TASK.params()


def parse(completion: str, **params: object) -> str | None:
    return TASK.parse(completion, TASK.params(params))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("\\boxed{42}", "42"),
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),  # nested braces
        ("first \\boxed{1} then \\boxed{2}", "2"),  # the last box wins
        ("\\boxed {7}", "7"),  # space before the brace
        ("\\boxed\n{7}", "7"),
        ("\\boxed{  8  }", "8"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are literal, not grouping
        ("\\boxed{\\boxed{3}}", "3"),  # nested boxes: the innermost
        ("\\boxed{1} and \\boxed{x = \\boxed{5} }", "5"),
        ("\\boxed{3} and \\boxed{4", "4"),  # truncated: everything after the brace
        ("\\boxed{\\frac{1}{2", "\\frac{1}{2"),
        ("\\boxed{ \\boxed{9}", "9"),  # complete box inside an unterminated one
        ("\\boxed 5", "\\boxed 5"),  # not a braced box: the whole answer
        ("\\boxedx{5}", "\\boxedx{5}"),
        ("\\boxed{½}", "½"),  # unicode
        ("答案是 \\boxed{３}", "３"),
        ("  42  ", "42"),  # no box: the whole answer, stripped
        ("x = 3\n", "x = 3"),
        ("```latex\n\\frac{1}{2}\n```", "\\frac{1}{2}"),  # a code fence is removed
        ("```\n42\n```", "42"),
    ],
)
def test_parse_answer(answer: str, expected: str) -> None:
    assert parse_answer(answer) == expected
    assert parse(f"<think>t</think><answer>{answer}</answer>") == expected


@pytest.mark.parametrize("answer", ["", "   ", "\\boxed{}", "\\boxed{   }", "```\n```"])
def test_empty_answer_parses_to_none(answer: str) -> None:
    assert parse(f"<think>t</think><answer>{answer}</answer>") is None


def test_answer_tags() -> None:
    assert parse("<think>t</think> \\boxed{3}") is None  # required by default
    assert parse("<think>t</think> <answer>\\boxed{3}") is None  # incomplete block
    assert parse("<think>t \\boxed{1}</think> \\boxed{3}", require_answer_tags=False) == "3"
    # only the first answer block counts
    assert parse("<answer>\\boxed{1}</answer><answer>\\boxed{2}</answer>") == "1"


def test_last_boxed_none_without_box() -> None:
    assert last_boxed("no box here") is None
    assert last_boxed("\\boxed") is None
    assert last_boxed("\\boxed   ") is None


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed" * 30_000,
        "\\boxed{" * 30_000,
        "\\boxed " * 30_000 + "{",
        "{" * 200_000,
        "\\boxed{" + "{" * 200_000,
        "\\" * 200_001,
        "\\boxed{" + "x" * 200_000,
        " " * 200_000 + "\\boxed" + " " * 200_000,
    ],
)
def test_parse_is_fast_on_200k_adversarial_input(text: str) -> None:
    start = time.perf_counter()
    for completion in (text, f"<think>{text}</think><answer>{text}</answer>"):
        result = parse(completion, require_answer_tags=False)
        assert result is None or isinstance(result, str)
    assert time.perf_counter() - start < 10  # linear: well under a second; quadratic would take minutes


def test_200k_completion_with_box() -> None:
    thinking = "let me think about it " * 10_000
    assert parse(f"<think>{thinking}</think><answer>{thinking}\\boxed{{42}}</answer>") == "42"


@given(st.text(alphabet=st.sampled_from(list("\\boxed{} $x12\n<>/answer")), max_size=200))
@settings(max_examples=200, deadline=None)
def test_parse_never_raises(text: str) -> None:
    for params in ({}, {"require_answer_tags": False}):
        result = parse(text, **params)
        assert result is None or (isinstance(result, str) and result == result.strip() and result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "$42$"),
        ("x = 3", "$x = 3$"),
        ("\\frac{1}{2}", "$\\frac{1}{2}$"),
        ("a\nb", "$a b$"),  # inline math is one line; a newline is a space in TeX
        ("$\\frac{1}{2}$", "$\\frac{1}{2}$"),  # already math: unchanged
        ("\\(x\\)", "\\(x\\)"),
        ("\\[x\\]", "\\[x\\]"),
        ("\\boxed{3}", "\\boxed{3}"),
        ("costs $5", "costs $5"),
        ("\\$5", "$\\$5$"),  # an escaped dollar is not a delimiter
    ],
)
def test_as_latex(text: str, expected: str) -> None:
    assert as_latex(text) == expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("3", "3"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        (3, "3"),
        (-7, "-7"),
        (0.5, "0.5"),
        (1e-7, "0.0000001"),
        (1e20, "100000000000000000000"),
        (2.0, "2.0"),
    ],
)
def test_check_solution_normalises(solution: object, expected: str) -> None:
    assert TASK.check_solution(solution) == expected


@pytest.mark.parametrize("solution", [None, True, [1], {"a": 1}, "", "   ", float("nan"), float("inf")])
def test_check_solution_rejects(solution: object) -> None:
    with pytest.raises(ValueError, match="^expected"):
        TASK.check_solution(solution)
    with pytest.raises(ValueError, match="^expected"):
        gold_text(solution)


def test_bad_solution_record_names_the_field(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "solution": "3"}\n{"id": "b", "question": "q", "solution": null}\n')
    with pytest.raises(vgrpo.DataError) as info:
        vgrpo.load_jsonl(path, TASK)
    assert "d.jsonl:2" in str(info.value) and "solution" in str(info.value)


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("42", "42", True),
        ("42", "43", False),
        ("7", "007", True),
        ("-0", "0", True),
        ("-5", "5", False),
        ("3", "3.0", None),
        ("3", "x", None),
        ("３", "3", None),
        ("1,000", "1000", None),
        (" 4 ", "4", True),
    ],
)
def test_plain_integer_shortcut_decides_only_integers(gold: str, pred: str, expected: bool | None) -> None:
    assert plain_integers_equal(gold, pred) is expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("There are 3 apples.", "3"),
        ("There are 3 apples", "3"),
        ("x is 3", "3"),
        ("The answer is 42", "42"),
        ("So the total is \\frac{1}{2} of the cake", "\\frac{1}{2}"),
        ("The circumference is 2\\pi.", "2\\pi"),  # LaTeX stays LaTeX: never "2"
        ("So the value is x^2 + 1", "x^2 + 1"),
        ("The answer is x = 3", "x = 3"),
        ("The area is 12 cm^2.", "12"),  # a word with a power is a unit: prose
        ("The area is 12 cm^{2}.", "12"),
        ("The area (in cm^2) is 12", "12"),
        ("The answer is 10 (rounded).", "10"),
        ("There are 3 apples in a basket", "3"),  # a lone letter between two words is prose
        ("Let x be 3", "3"),
        ("The answer is x", "x"),  # ... not at the end of a sentence
        ("It's 5", "5"),
        ("**The answer is 7**", "7"),
        ("The answer is **7**.", "7"),
        ("The answer is $\\frac{1}{2}$.", "$\\frac{1}{2}$"),
        ("$x$ is $3$", "$3$"),
        ("So \\text{the total} is 4", "4"),  # letters inside braces are LaTeX, not words
        ("Thus, 3", "3"),
        ("The answer is sin(x)", "sin(x)"),  # a letter run before "(" is a function name
        ("The triangle is right-angled with area 6", "6"),
        ("the value of \\sqrt{2} is about 1.41", "1.41"),
        ("Step 1: 2+3=5\nStep 2: 5*2=10\nSo the answer is 10", "10"),
        ("答案是 6", "6"),
        ("\\boxed{3 apples}", "3"),
        ("There are 3 apples and 4 pears", "4"),
        # expressions joined by "and" / "or" stay together (math-verify reads them as a set)
        ("x = 2 or x = 3", "x = 2 or x = 3"),
        ("The roots are 2 and 3.", "2 and 3"),
        ("The roots are x = 1, x = 2 or x = 3.", "x = 1, x = 2 or x = 3"),
        # no words: the whole answer, without final sentence punctuation
        ("\\frac{1}{2}.", "\\frac{1}{2}"),
        ("x = 3.", "x = 3"),
        ("x = 3, y = 4", "x = 3, y = 4"),
        ("2\\pi", "2\\pi"),
        ("5!", "5!"),  # "!" is a factorial, not punctuation
        ("xy + 1", "xy + 1"),
        ("2ab", "2ab"),  # letters touching a digit are a product
        ("The answer is f(ab)", "f(ab)"),  # ... and letters in a call or product: "(" after a letter or digit
        ("The answer is 2(ab).", "2(ab)"),
        ("AB^2 = 25", "AB^2 = 25"),
        # words but no number or expression: the whole answer, as before
        ("two apples", "two apples"),
        ("yes.", "yes"),
        ("east", "east"),
        ("\\text{east}", "\\text{east}"),
    ],
)
def test_prose_rule(answer: str, expected: str) -> None:
    assert parse_answer(answer) == expected
    assert parse(f"<think>t</think><answer>{answer}</answer>") == expected


@pytest.mark.parametrize("answer", [".", " . ", "?", ";"])
def test_only_punctuation_parses_to_none(answer: str) -> None:
    assert parse_answer(answer) is None


@pytest.mark.parametrize(
    "text",
    [
        "word " * 40_000,
        "a b " * 50_000,
        "x is 3 " * 30_000,
        "cm^" * 60_000,
        "cm^{" * 50_000,
        "$" * 200_000,
        "\\(" * 100_000,
        "it's" * 50_000,
        "a-b-" * 50_000,
        "in a " * 40_000,  # every run a word, no piece between them: the slowest case (~0.4 s)
        "**x** " * 35_000,
        "\\cdot ab " * 20_000,
    ],
)
def test_prose_rule_is_fast_on_200k_adversarial_input(text: str) -> None:
    start = time.perf_counter()
    result = parse_answer(text)
    assert result is None or (isinstance(result, str) and result == result.strip() and result)
    assert time.perf_counter() - start < 10  # linear; quadratic would take minutes
