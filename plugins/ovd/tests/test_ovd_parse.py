"""The ovd answer parser and ground-truth check: edge cases of model output and of records."""

from __future__ import annotations

import json
import time

import pytest

import vgrpo
from vgrpo_ovd.boxes import parse_detections

CAT = {"bbox_2d": [10, 20, 30, 40], "label": "cat"}


def parse(task: vgrpo.Task, answer: str, **params) -> object:
    return task.parse(f"<think>looking</think><answer>{answer}</answer>", task.params(params))


def test_plain_list_and_code_fence(task):
    assert parse(task, json.dumps([CAT])) == [CAT]
    assert parse(task, "```json\n" + json.dumps([CAT]) + "\n```") == [CAT]
    assert parse(task, "```\n" + json.dumps([CAT]) + "\n```") == [CAT]
    assert parse(task, "\n  " + json.dumps([CAT, CAT]) + "  \n") == [CAT, CAT]


@pytest.mark.parametrize("answer", ["[]", "null", "None", " [ ] ", "```json\n[]\n```", "```json\nnull\n```"])
def test_no_boxes(task, answer):
    assert parse(task, answer) == []


def test_unparsable_is_none(task):
    assert task.parse("no tags at all " + json.dumps([CAT]), task.params()) is None
    assert task.parse(f"<answer>{json.dumps([CAT])}", task.params()) is None  # unclosed answer block
    assert parse(task, "") is None
    assert parse(task, "I see a cat.") is None
    assert parse(task, "42") is None
    assert parse(task, '"cat"') is None
    assert parse(task, "true") is None


def test_without_required_tags_the_whole_completion_is_parsed(task):
    params = task.params({"require_answer_tags": False})
    assert task.parse(json.dumps([CAT]), params) == [CAT]
    assert task.parse(f"<answer>{json.dumps([CAT])}</answer> trailing", params) == [CAT]


def test_first_answer_block_wins(task):
    dog = {"bbox_2d": [1, 2, 3, 4], "label": "dog"}
    completion = f"<answer>{json.dumps([CAT])}</answer><answer>{json.dumps([dog])}</answer>"
    assert task.parse(completion, task.params()) == [CAT]


def test_lone_object_is_a_list_of_one(task):
    assert parse(task, json.dumps(CAT)) == [CAT]


@pytest.mark.parametrize(
    "item",
    [
        {"bbox_2d": [30, 20, 10, 40], "label": "cat"},  # x2 < x1
        {"bbox_2d": [10, 20, 10, 40], "label": "cat"},  # x2 == x1: no area
        {"bbox_2d": [10, 40, 30, 40], "label": "cat"},  # y2 == y1
        {"bbox_2d": [10, 20, 30], "label": "cat"},
        {"bbox_2d": [10, 20, 30, 40, 50], "label": "cat"},
        {"bbox_2d": ["10", 20, 30, 40], "label": "cat"},
        {"bbox_2d": [True, 20, 30, 40], "label": "cat"},
        {"bbox_2d": [None, 20, 30, 40], "label": "cat"},
        {"bbox_2d": [[10], 20, 30, 40], "label": "cat"},
        {"bbox_2d": {"x1": 10}, "label": "cat"},
        {"bbox_2d": "10,20,30,40", "label": "cat"},
        {"bbox": [10, 20, 30, 40], "label": "cat"},  # the key is bbox_2d
        {"bbox_2d": [10, 20, 30, 40]},  # no label
        {"bbox_2d": [10, 20, 30, 40], "label": 3},
        {"bbox_2d": [10, 20, 30, 40], "label": None},
        {"bbox_2d": [10, 20, 30, 40], "label": ["cat"]},
        [10, 20, 30, 40],
        "cat",
        None,
        17,
    ],
)
def test_malformed_items_are_skipped(task, item):
    assert parse(task, json.dumps([item, CAT])) == [CAT]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1" + "0" * 400])
def test_non_finite_numbers_are_malformed(task, number):
    answer = f'[{{"bbox_2d": [0, 0, {number}, 40], "label": "cat"}}, {json.dumps(CAT)}]'
    assert parse(task, answer) == [CAT]


def test_boxes_whose_area_overflows_are_malformed(task):
    answer = json.dumps([{"bbox_2d": [-1e308, 0, 1e308, 10], "label": "cat"}, CAT])  # width = inf
    assert parse(task, answer) == [CAT]


def test_floats_and_ints_are_kept_as_written(task):
    item = {"bbox_2d": [0.5, 1, 2.25, 3e2], "label": "cat"}
    assert parse(task, json.dumps([item])) == [item]


def test_labels_are_lower_cased_and_stripped(task):
    got = parse(task, json.dumps([{"bbox_2d": [1, 2, 3, 4], "label": "  Red Circle\n"}]))
    assert got == [{"bbox_2d": [1, 2, 3, 4], "label": "red circle"}]


def test_unicode_labels(task):
    items = [{"bbox_2d": [1, 2, 3, 4], "label": "ÉCLAIR"}, {"bbox_2d": [1, 2, 3, 4], "label": "猫"}]
    got = parse(task, json.dumps(items, ensure_ascii=False))
    assert [d["label"] for d in got] == ["éclair", "猫"]
    assert [d["label"] for d in parse(task, json.dumps(items))] == ["éclair", "猫"]  # \u escapes too


def test_truncated_list_keeps_its_complete_items(task):
    params = task.params({"require_answer_tags": False})
    truncated = json.dumps([CAT, CAT])[:-20]
    assert task.parse(truncated, params) == [CAT]
    # inside a complete answer block (e.g. a missing bracket, a trailing comma, prose around the list)
    assert parse(task, json.dumps([CAT])[:-1]) == [CAT]
    assert parse(task, json.dumps([CAT])[:-1] + ",]") == [CAT]
    assert parse(task, "Found: " + json.dumps(CAT) + " and " + json.dumps(CAT) + ".") == [CAT, CAT]
    # salvaged objects are validated like any other item
    assert parse(task, '[{"bbox_2d": [5, 5, 1, 1], "label": "cat"}, {"bbox_2d": [1,') is None


def test_nested_junk(task):
    assert parse(task, json.dumps([[[[]]], {"bbox_2d": [[1, 2], [3, 4]], "label": "x"}, {}, CAT])) == [CAT]
    assert parse(task, json.dumps({"objects": [CAT]})) == []  # a dict that is no detection: nothing valid
    assert parse(task, "[" * 100_000) is None  # deep nesting: no RecursionError
    assert parse(task, "{" * 100_000 + "}" * 100_000) is None
    assert parse(task, '{"bbox_2d": {"bbox_2d": {"bbox_2d": [1, 2, 3, 4], "label": "a"}}}') == []


def test_binary_junk(task):
    junk = bytes(range(256)).decode("latin-1") * 50
    assert parse(task, junk) is None
    assert parse(task, "\x00" + json.dumps([CAT])) == [CAT]  # salvaged from the junk around it


def test_long_inputs_take_linear_time(task):
    """Eight times the input takes about eight times as long, not 64 (no quadratic scan): compared in one run."""
    makers = [
        lambda n: "x" * n,
        lambda n: "{" * n,
        lambda n: '{"bbox_2d": [' * (n // 10),
        lambda n: "{}" * (n // 2),
        lambda n: "```" * (n // 3),
        lambda n: "<answer>" * (n // 8),
        lambda n: '"' * n,
        lambda n: json.dumps([CAT]) * (n // 40),
    ]

    def seconds(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            parse(task, text)
            task.parse(text, task.params({"require_answer_tags": False}))
            best = min(best, time.perf_counter() - start)
        return best

    for make in makers:
        small, large = seconds(make(25_000)), seconds(make(200_000))
        assert large < 24 * max(small, 2e-3), (make(30)[:30], small, large)


def test_ten_thousand_boxes(task):
    items = [
        {"bbox_2d": [i % 50, i % 30, i % 50 + 9, i % 30 + 9], "label": f"c{i % 7}"} for i in range(10_000)
    ]
    completion = f"<think>many</think><answer>{json.dumps(items)}</answer>"
    sample = vgrpo.Sample(id="s", solution=task.check_solution(items[:10]))
    start = time.perf_counter()
    (result,) = vgrpo.score(task, [completion], [sample])
    assert time.perf_counter() - start < 10  # linear: well under a second; quadratic would take minutes
    assert result.errors == []
    assert len(result.parsed) == 10_000
    assert result.rewards["length"] == pytest.approx(10 / 10_000)


def test_parse_output_is_json_serialisable(task):
    got = parse(task, json.dumps([CAT, {"bbox_2d": [0.5, 1e300, 2, 1.5e300], "label": "Ünï"}]))
    assert json.loads(json.dumps(got, allow_nan=False)) == got


def test_parse_detections_directly():
    assert parse_detections("null") == []
    assert parse_detections("[1, 2]") == []  # a list whose items are all malformed: no boxes
    assert parse_detections("[1, 2") is None  # not JSON, nothing to salvage


# -- ground truth --------------------------------------------------------------------------------------------


def test_check_solution_accepts_and_normalises(task):
    assert task.check_solution([]) == []
    got = task.check_solution([{"bbox_2d": [1, 2, 3, 4], "label": "Cat", "extra": 1}])
    assert got == [{"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "Cat"}]
    # a degenerate gt box (x2 == x1) is allowed: it can never be matched
    degenerate = task.check_solution([{"bbox_2d": [1, 2, 1, 4], "label": "cat"}])
    assert degenerate[0]["bbox_2d"] == [1.0, 2.0, 1.0, 4.0]


@pytest.mark.parametrize(
    ("solution", "fragment"),
    [
        ({"bbox_2d": [1, 2, 3, 4], "label": "cat"}, "expected a list"),
        ("cat", "expected a list"),
        ([CAT, [1, 2, 3, 4]], "item 1"),
        ([CAT, CAT, {"bbox_2d": [1, 2, 3, 4]}], "item 2"),
        ([{"bbox_2d": [1, 2, 3, 4], "label": 5}], "item 0"),
        ([{"bbox_2d": [1, 2, 3, 4], "label": "  "}], "non-empty string label"),
        ([{"bbox_2d": [3, 2, 1, 4], "label": "cat"}], "x2 >= x1"),
        ([CAT, {"bbox_2d": [1, 5, 3, 4], "label": "cat"}], "item 1 bbox_2d"),
        ([{"bbox_2d": [1, 2, 3], "label": "cat"}], "item 0 bbox_2d"),
        ([{"bbox_2d": [1, 2, float("nan"), 4], "label": "cat"}], "finite"),
        ([{"bbox_2d": [1, 2, float("inf"), 4], "label": "cat"}], "finite"),
        ([{"bbox_2d": [True, 2, 3, 4], "label": "cat"}], "item 0 bbox_2d"),
        ([{"label": "cat"}], "item 0 bbox_2d"),
    ],
)
def test_check_solution_rejects(task, solution, fragment):
    with pytest.raises(ValueError, match="^expected") as info:
        task.check_solution(solution)
    assert fragment in str(info.value)


def test_bad_record_names_the_field(task):
    from vgrpo.data import sample_from_record

    with pytest.raises(vgrpo.DataError) as info:
        sample_from_record({"id": "r", "solution": [{"bbox_2d": [3, 2, 1, 4], "label": "cat"}]}, task)
    assert info.value.field == "solution" and "item 0" in str(info.value)
