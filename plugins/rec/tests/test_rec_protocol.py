"""rec's evaluation protocols: vgrpo's default rules and VLM-R1's (``protocols["vlm-r1"]``), side by side.

VLM-R1's REC evaluation, as the repository records it (docs/evaluation.md): a hit is IoU > 0.5 (strict), the
prediction is the last box of the answer, and only integer boxes are read. Each case's VLM-R1 outcome below
follows from those three rules by hand; the IoUs are worked out in the comments.
"""

from __future__ import annotations

import pytest

import vgrpo
from vgrpo_rec import RecTask
from vgrpo_rec.geometry import is_hit
from vgrpo_rec.parse import parse_box

TASK = RecTask()
DEFAULT = TASK.params()
VLM_R1 = TASK.params(TASK.protocols["vlm-r1"])
GT = [0, 0, 10, 10]  # area 100

#: (answer, default: parsed box, hit; VLM-R1: parsed box, hit)
CASES = {
    # [0, 0, 10, 5]: intersection 50, union 100 + 50 - 50 = 100, IoU exactly 0.5: >= 0.5 but not > 0.5
    "iou exactly 0.5": ('{"bbox_2d": [0, 0, 10, 5]}', [0, 0, 10, 5], True, [0, 0, 10, 5], False),
    # [0, 0, 10, 9]: IoU 90 / 100 = 0.9, a hit under both rules
    "iou 0.9": ('{"bbox_2d": [0, 0, 10, 9]}', [0, 0, 10, 9], True, [0, 0, 10, 9], True),
    # two boxes: the first misses (disjoint, IoU 0), the last is the ground truth (IoU 1)
    "two boxes, the last right": (
        'It is {"bbox_2d": [50, 50, 60, 60]}, no: {"bbox_2d": [0, 0, 10, 10]}',
        [50, 50, 60, 60],
        False,
        [0, 0, 10, 10],
        True,
    ),
    # two boxes, the first right: vgrpo hits, VLM-R1 reads the disjoint last one
    "two boxes, the first right": (
        '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [50, 50, 60, 60]}]',
        [0, 0, 10, 10],
        True,
        [50, 50, 60, 60],
        False,
    ),
    # a float box equal to the ground truth: IoU 1 for vgrpo; VLM-R1 reads no box at all (a miss)
    "float box": ('{"bbox_2d": [0.0, 0.0, 10.0, 10.0]}', [0, 0, 10, 10], True, None, False),
    # a float box then an integer one: VLM-R1 skips the float box and reads [0, 0, 10, 10]
    "float box, then an integer box": (
        '{"bbox_2d": [0.5, 0, 10, 10]} or {"bbox_2d": [0, 0, 10, 10]}',
        [0.5, 0, 10, 10],  # IoU 95 / 100 = 0.95
        True,
        [0, 0, 10, 10],
        True,
    ),
    # a negative coordinate is not an unsigned integer: no box for VLM-R1
    "negative coordinate": ('{"bbox_2d": [-1, 0, 10, 10]}', [-1, 0, 10, 10], True, None, False),
    # in ```json fences the same rules apply: the fenced box is the last one
    "fenced second box": (
        '{"bbox_2d": [50, 50, 60, 60]}\n```json\n{"bbox_2d": [0, 0, 10, 10]}\n```',
        [50, 50, 60, 60],
        False,
        [0, 0, 10, 10],
        True,
    ),
}


def completion(answer: str) -> str:
    return f"<think>Looking.</think> <answer>{answer}</answer>"


def sample() -> vgrpo.Sample:
    return vgrpo.Sample(id="s", solution=GT, image_size=(100, 100))


@pytest.mark.parametrize("case", list(CASES))
def test_each_case_reads_and_scores_as_each_protocol_says(case):
    answer, default_box, default_hit, r1_box, r1_hit = CASES[case]
    for params, box, hit in ((DEFAULT, default_box, default_hit), (VLM_R1, r1_box, r1_hit)):
        parsed = TASK.parse(completion(answer), params)
        assert parsed == box
        assert TASK.metric([parsed], [sample()], params)["acc@0.5"] == (1.0 if hit else 0.0)
        assert TASK.correct([parsed], [sample()], params) == [hit]


def test_the_split_metric_of_all_cases_under_each_protocol():
    completions = [completion(c[0]) for c in CASES.values()]
    for params, hit_at in ((DEFAULT, 2), (VLM_R1, 4)):
        parsed = [TASK.parse(c, params) for c in completions]
        hits = sum(c[hit_at] for c in CASES.values())
        assert TASK.metric(parsed, [sample()] * len(parsed), params)["acc@0.5"] == hits / len(CASES)
    assert sum(c[2] for c in CASES.values()) == 6 and sum(c[4] for c in CASES.values()) == 4


def test_the_threshold_reward_follows_iou_rule():
    at_half = completion('{"bbox_2d": [0, 0, 10, 5]}')  # IoU exactly 0.5

    def accuracy(params):
        return vgrpo.testing.call_reward(
            "accuracy", completion=at_half, sample=sample(), params=params, task=TASK
        )

    assert accuracy({"iou_threshold": 0.5, "iou_rule": "ge"}) == 1.0
    assert accuracy({"iou_threshold": 0.5, "iou_rule": "gt"}) == 0.0
    assert accuracy({"iou_rule": "gt"}) == 0.5  # without a threshold: the continuous IoU whatever the rule


def test_the_params_are_independent_and_validated():
    mixed = TASK.params({"box_pick": "last"})  # last box, floats still read, IoU >= 0.5
    assert TASK.parse(completion("[0, 0, 1, 1] then [0.0, 0, 10, 5.0]"), mixed) == [0, 0, 10, 5]
    ints_first = TASK.params({"integer_boxes": True})
    answer = "[0.5, 0, 1, 1] then [0, 0, 10, 5] then [1, 1, 2, 2]"
    assert TASK.parse(completion(answer), ints_first) == [0, 0, 10, 5]
    for bad in ({"iou_rule": "gte"}, {"box_pick": "middle"}):
        with pytest.raises(vgrpo.ParamsError):
            TASK.params(bad)
    assert is_hit(0.5, 0.5, "ge") and not is_hit(0.5, 0.5, "gt")
    with pytest.raises(ValueError, match="rule"):
        is_hit(0.5, 0.5, "eq")


def test_an_invalid_picked_box_is_not_skipped_over():
    # the last box has x2 <= x1: invalid, so no prediction, even though an earlier box is valid
    assert parse_box("[0, 0, 10, 10] [5, 0, 5, 10]", pick="last", integers=True) is None
    assert parse_box("no box here", pick="last") is None and parse_box("", integers=True) is None
