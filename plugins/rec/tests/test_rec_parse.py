"""The rec answer parser: the first box of the answer, every odd shape a model writes, and hostile input."""

from __future__ import annotations

import json
import time

import pytest

from vgrpo_rec import RecParams, RecTask, parse_box

TASK = RecTask()
PARAMS = RecParams()


def wrap(answer: str) -> str:
    return f"<think>looking</think><answer>{answer}</answer>"


def parse(answer: str) -> list[float] | None:
    return TASK.parse(wrap(answer), PARAMS)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"bbox_2d": [10, 20, 30, 40]}', [10.0, 20.0, 30.0, 40.0]),
        ('{"bbox": [1.5, 2.5, 3.5, 4.5]}', [1.5, 2.5, 3.5, 4.5]),
        ('{"label": "cat", "bbox_2d": [1, 2, 3, 4]}', [1.0, 2.0, 3.0, 4.0]),
        # bbox_2d wins over bbox inside one dict, whatever the key order
        ('{"bbox": [0, 0, 1, 1], "bbox_2d": [5, 5, 6, 6]}', [5.0, 5.0, 6.0, 6.0]),
        ("[1, 2, 3, 4]", [1.0, 2.0, 3.0, 4.0]),
        # the first dict of a list, the first box of a list of boxes
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8]}]', [1.0, 2.0, 3.0, 4.0]),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [1.0, 2.0, 3.0, 4.0]),
        ("[-5, -10.5, 3, 4]", [-5.0, -10.5, 3.0, 4.0]),
        ("[1e1, 2E1, 3.5e+1, 4e1]", [10.0, 20.0, 35.0, 40.0]),
        ("[.5, 1., 2, 3]", [0.5, 1.0, 2.0, 3.0]),
        ("[+1, 2, 3, 4]", [1.0, 2.0, 3.0, 4.0]),
        ("  \n [ 1 ,\t2 , 3 ,4 ] \n ", [1.0, 2.0, 3.0, 4.0]),
        ('```json\n{"bbox_2d": [1, 2, 3, 4]}\n```', [1.0, 2.0, 3.0, 4.0]),
        ('```\n[{"bbox_2d": [1, 2, 3, 4]}]\n```', [1.0, 2.0, 3.0, 4.0]),
        ('Sure! ```json\n{"bbox_2d": [1, 2, 3, 4]}', [1.0, 2.0, 3.0, 4.0]),  # unterminated fence
        ("{'bbox_2d': [1, 2, 3, 4]}", [1.0, 2.0, 3.0, 4.0]),  # Python-style quotes
        ('The box is {"bbox_2d": [10, 20, 30, 40]}, I think.', [10.0, 20.0, 30.0, 40.0]),
        ("first [0, 0, 5, 5] then [1, 1, 9, 9]", [0.0, 0.0, 5.0, 5.0]),
        ('{"bbox_2d": [1, 2, 3, 4], "label": "the ca', [1.0, 2.0, 3.0, 4.0]),  # cut off after the box
        ('框: {"bbox_2d": [1, 2, 3, 4]} ✓ — done 😀', [1.0, 2.0, 3.0, 4.0]),
        # a dict without bbox keys still has a first box in the answer
        ('{"box": [1, 2, 3, 4]}', [1.0, 2.0, 3.0, 4.0]),
        ('{"bbox_2d": [[1, 2, 3, 4]]}', [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_parses_the_first_box(answer: str, expected: list[float]) -> None:
    got = parse(answer)
    assert got == expected
    assert all(type(v) is float for v in got)


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "no box here",
        '{"bbox_2d": [1, 2, 3',  # cut off inside the box
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        '["1", "2", "3", "4"]',
        "[true, 0, 1, 1]",
        '{"bbox_2d": [0, 0, true, 1]}',
        "[0, 0, 0, 10]",  # x2 == x1
        "[0, 10, 5, 5]",  # y2 < y1
        '{"bbox_2d": [NaN, 0, 10, 10]}',
        "box [nan, 0, 10, 10]",
        "[0, 0, Infinity, 10]",
        "[-inf, 0, 10, 10]",
        "[0, 0, 1e309, 10]",  # overflows to inf
        '{"bbox_2d": [0, 0, 1e309, 10]}',
        "[0, 0, " + "9" * 400 + ", 10]",  # a JSON int too large for a float
        "[0, 0, " + "9" * 5000 + ", 10]",  # beyond Python's int-string limit: JSON fails, the scan gets inf
        "[１, ２, ３, ４]",  # full-width digits are not numbers
        "[١, ٢, ٣, ٤]",  # Arabic-Indic digits neither
        "[1,\x002, 3, 4]",
        "(1, 2, 3, 4)",
    ],
)
def test_no_valid_box(answer: str) -> None:
    assert parse(answer) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # an unfenced box written before a fenced one comes first
        ('[0, 0, 5, 5] and then ```json\n{"bbox_2d": [1, 1, 9, 9]}\n```', [0.0, 0.0, 5.0, 5.0]),
        ('The box is {"bbox_2d": [0, 0, 5, 5]}.\n```json\n[1, 1, 9, 9]\n```', [0.0, 0.0, 5.0, 5.0]),
        ('[0, 0, 5, 5] ```json\n{"bbox_2d": [1, 1, 9, 9]}', [0.0, 0.0, 5.0, 5.0]),  # unterminated fence
        # a fenced box written before an unfenced one comes first
        ('```json\n{"bbox_2d": [1, 1, 9, 9]}\n``` or [0, 0, 5, 5]', [1.0, 1.0, 9.0, 9.0]),
        # a fence without a box does not hide the boxes after it
        ("```json\n{}\n``` so [1, 2, 3, 4]", [1.0, 2.0, 3.0, 4.0]),
        ("```python\nprint(1)\n```\n```json\n[1, 2, 3, 4]\n```", [1.0, 2.0, 3.0, 4.0]),
        ("no box ``` here ``` [1, 2, 3, 4] ```json\n[5, 6, 7, 8]\n```", [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_first_box_fenced_or_not_in_the_order_written(answer: str, expected: list[float]) -> None:
    assert parse(answer) == expected


def test_an_invalid_first_box_is_not_skipped_for_a_later_fenced_one() -> None:
    assert parse('[5, 5, 1, 1] then ```json\n{"bbox_2d": [0, 0, 2, 2]}\n```') is None


def test_an_invalid_first_box_is_not_skipped() -> None:
    assert parse("[5, 5, 1, 1] or maybe [0, 0, 2, 2]") is None
    assert parse("[[5, 5, 1, 1], [0, 0, 2, 2]]") is None
    assert parse('[{"bbox_2d": [0, 0, NaN, 2]}, {"bbox_2d": [0, 0, 2, 2]}]') is None


def test_answer_tags() -> None:
    box = '{"bbox_2d": [1, 2, 3, 4]}'
    assert TASK.parse(box, PARAMS) is None  # no answer block
    assert TASK.parse(f"<think>x</think><answer>{box}", PARAMS) is None  # unclosed block
    loose = RecParams(require_answer_tags=False)
    assert TASK.parse(box, loose) == [1.0, 2.0, 3.0, 4.0]
    assert TASK.parse(f"<think>x</think><answer>{box}", loose) == [1.0, 2.0, 3.0, 4.0]
    # only the first answer block counts
    assert TASK.parse(wrap("[0, 0, 1, 1]") + wrap("[0, 0, 2, 2]"), PARAMS) == [0.0, 0.0, 1.0, 1.0]
    assert TASK.parse("<answer></answer>", PARAMS) is None


def test_many_boxes_first_wins() -> None:
    boxes = [{"bbox_2d": [i, i, i + 10, i + 10]} for i in range(10_000)]
    text = json.dumps(boxes)
    assert len(text) > 100_000  # long: the scan reads it
    assert parse(text) == [0.0, 0.0, 10.0, 10.0]
    short = json.dumps(boxes[5:1005])  # under the JSON size guard: json.loads reads it
    assert len(short) < 100_000
    assert parse(short) == [5.0, 5.0, 15.0, 15.0]


def test_deep_nesting_falls_back_to_the_scan() -> None:
    depth = 20_000  # json.loads raises RecursionError
    assert parse("[" * depth + "1, 2, 3, 4" + "]" * depth) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 200_000 + "[1, 2, 3, 4]",
        "[" * 200_000,
        "[" * 99_000,
        "{" * 200_000,
        "[1, " * 50_000,
        "[1" + "1" * 200_000,
        "[1, 2, 3, " + "4" * 200_000,
        "[ " + " " * 200_000 + "1",
        "[1e" * 60_000,
        "[1.5e+" * 40_000,
        "```" * 60_000,
        "```json\n" * 40_000,
        "```\n[1, 2, 3]\n" * 20_000,
        "```json\n{}\n" * 30_000 + "[1, 2, 3, 4]",
        "<answer>" * 20_000,
        '{"bbox_2d": ' * 15_000,
    ],
)
def test_long_input_is_fast(text: str) -> None:
    start = time.perf_counter()
    result = parse(text)
    assert time.perf_counter() - start < 10  # quadratic behaviour on 200k chars would take minutes
    assert result is None or result == [1.0, 2.0, 3.0, 4.0]


def test_binary_junk() -> None:
    junk = bytes(range(256)).decode("latin-1") * 200
    assert parse(junk) is None
    assert parse(junk + "[1, 2, 3, 4]") == [1.0, 2.0, 3.0, 4.0]
    assert parse("\ud800\udfff[\x00]" * 1000) is None  # lone surrogates


def test_parse_box_directly_and_output_is_json() -> None:
    got = parse_box('```json\n[{"bbox_2d": [0.25, 1, 2, 3e0]}]\n```')
    assert got == [0.25, 1.0, 2.0, 3.0]
    assert json.loads(json.dumps(got, allow_nan=False)) == got
