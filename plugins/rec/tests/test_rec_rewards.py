"""rec rewards, coordinate conventions, polygons, threshold mode, ground-truth checks, metric, registration.

Every expected value is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vgrpo
from vgrpo_rec import RecParams, RecTask

TASK = RecTask()


def completion(box: list[float]) -> str:
    return f'<think>The object is there.</think> <answer>{{"bbox_2d": {json.dumps(box)}}}</answer>'


def sample(
    solution: object, image_size: tuple | None = None, input_size: tuple | None = None
) -> vgrpo.Sample:
    return vgrpo.Sample(
        id="s", solution=TASK.check_solution(solution), image_size=image_size, input_size=input_size
    )


def rewards(box: list[float] | str, smp: vgrpo.Sample, **params: object) -> dict[str, float]:
    text = box if isinstance(box, str) else completion(box)
    (score,) = vgrpo.score(TASK, [text], [smp], params)
    assert score.errors == []
    return {**score.rewards, "total": score.reward}


# -- box against box ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        # overlap 5x5 = 25; union 100 + 100 - 25 = 175
        ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        # disjoint, and touching along an edge (zero-width overlap)
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        # prediction inside: 100 / 400
        ([0, 0, 10, 10], [0, 0, 20, 20], 0.25),
        # floats: overlap x 1.5..2.5 (1) times y 0.5..1.5 (1) = 1; areas 2 and 2; union 3
        ([0.5, 0.5, 2.5, 1.5], [1.5, 0.5, 3.5, 1.5], 1 / 3),
        # negative coordinates: overlap [-5,0]x[-5,0] = 25; areas 100 + 25; union 100
        ([-10, -10, 0, 0], [-5, -5, 0, 0], 25 / 100),
    ],
)
def test_box_iou(pred: list[float], gt: list[float], expected: float) -> None:
    r = rewards(pred, sample(gt))
    assert r["accuracy"] == pytest.approx(expected)
    assert r["iou"] == pytest.approx(expected)
    assert r["format"] == 1.0
    assert r["total"] == pytest.approx(expected + 1.0)  # default weights: accuracy 1 + format 1; iou 0


def test_unparsable_and_unformatted() -> None:
    smp = sample([0, 0, 10, 10])
    assert rewards("<think>x</think><answer>no idea</answer>", smp) == {
        "accuracy": 0.0,
        "iou": 0.0,
        "format": 1.0,
        "total": 1.0,
    }
    # right box but no think block: accuracy 1, format 0
    r = rewards('<answer>{"bbox_2d": [0, 0, 10, 10]}</answer>', smp)
    assert (r["accuracy"], r["format"], r["total"]) == (1.0, 0.0, 1.0)
    # an inverted box is invalid even if it covers the same area
    assert rewards([10, 10, 0, 0], smp)["accuracy"] == 0.0


# -- coordinate conventions -----------------------------------------------------------------------------
def test_abs_rescales_from_input_size_to_image_size() -> None:
    # original 1280x720, model saw 640x480: x *= 1280/640 = 2, y *= 720/480 = 1.5
    # [100, 100, 200, 200] -> [200, 150, 400, 300]
    smp = sample([200, 150, 400, 300], image_size=(1280, 720), input_size=(640, 480))
    assert rewards([100, 100, 200, 200], smp)["accuracy"] == pytest.approx(1.0)
    # against [300, 150, 500, 300]: overlap x 300..400 (100) * y 150 (150) = 15000;
    # areas 200*150 = 30000 each; union 45000 -> 1/3
    smp = sample([300, 150, 500, 300], image_size=(1280, 720), input_size=(640, 480))
    assert rewards([100, 100, 200, 200], smp)["accuracy"] == pytest.approx(1 / 3)


def test_abs_without_both_sizes_is_original_pixels() -> None:
    # no rescale: [100, 100, 200, 200] vs [200, 150, 400, 300] only touch at x = 200 -> 0
    for image_size, input_size in [((1280, 720), None), (None, (640, 480)), (None, None)]:
        smp = sample([200, 150, 400, 300], image_size=image_size, input_size=input_size)
        assert rewards([100, 100, 200, 200], smp)["accuracy"] == 0.0
        assert rewards([200, 150, 400, 300], smp)["accuracy"] == 1.0


def test_norm1000() -> None:
    # 640x480: x *= 0.64, y *= 0.48; [250, 500, 750, 1000] -> [160, 240, 480, 480]
    smp = sample([160, 240, 480, 480], image_size=(640, 480))
    assert rewards([250, 500, 750, 1000], smp, coords="norm1000")["accuracy"] == pytest.approx(1.0)
    # input_size plays no part in normalised conventions
    smp = sample([160, 240, 480, 480], image_size=(640, 480), input_size=(320, 240))
    assert rewards([250, 500, 750, 1000], smp, coords="norm1000")["accuracy"] == pytest.approx(1.0)
    # without image_size nothing can be converted: 0, even when the numbers equal the ground truth
    smp = sample([250, 500, 750, 1000])
    assert rewards([250, 500, 750, 1000], smp, coords="norm1000") == pytest.approx(
        {"accuracy": 0.0, "iou": 0.0, "format": 1.0, "total": 1.0}
    )


def test_norm1() -> None:
    # 200x100: [0.1, 0.2, 0.6, 0.7] -> [20, 20, 120, 70]
    smp = sample([20, 20, 120, 70], image_size=(200, 100))
    assert rewards([0.1, 0.2, 0.6, 0.7], smp, coords="norm1")["accuracy"] == pytest.approx(1.0)
    # against [70, 20, 170, 70]: overlap 50 * 50 = 2500; areas 100*50 = 5000 each; union 7500 -> 1/3
    smp = sample([70, 20, 170, 70], image_size=(200, 100))
    assert rewards([0.1, 0.2, 0.6, 0.7], smp, coords="norm1")["accuracy"] == pytest.approx(1 / 3)
    assert rewards([0.1, 0.2, 0.6, 0.7], sample([20, 20, 120, 70]), coords="norm1")["accuracy"] == 0.0


def test_scaling_overflow_scores_zero() -> None:
    smp = sample([0, 0, 10, 10], image_size=(1e300, 1e300))
    r = rewards([0, 0, 1e300, 1e300], smp, coords="norm1")  # 1e300 * 1e300 = inf
    assert r["accuracy"] == 0.0


# -- polygons -------------------------------------------------------------------------------------------
SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]
TRIANGLE = [[0, 0], [10, 0], [0, 10]]  # area 50, below the line x + y = 10


@pytest.mark.parametrize(
    ("pred", "polygon", "expected"),
    [
        # the square polygon equals box [0, 0, 10, 10]: 25 / 175 as for two boxes
        ([5, 5, 15, 15], SQUARE, 25 / 175),
        ([0, 0, 10, 10], SQUARE, 1.0),
        # box contains the triangle: 50 / 100
        ([0, 0, 10, 10], TRIANGLE, 0.5),
        # box [0, 5]^2 lies inside the triangle (its far corner has x + y = 10): 25 / (25 + 50 - 25)
        ([0, 0, 5, 5], TRIANGLE, 0.5),
        # [5, 0, 10, 5]: inside it the triangle is the half with x + y <= 10, area 12.5;
        # union 25 + 50 - 12.5 = 62.5 -> 0.2
        ([5, 0, 10, 5], TRIANGLE, 12.5 / 62.5),
        ([20, 20, 30, 30], TRIANGLE, 0.0),
        # a bow-tie (self-intersecting) made valid keeps both lobes, 25 each: 50 / 100
        # (buffer(0) would keep one lobe and give 0.25)
        ([0, 0, 10, 10], [[0, 0], [10, 10], [10, 0], [0, 10]], 0.5),
    ],
)
def test_polygon_iou(pred: list[float], polygon: list[list[float]], expected: float) -> None:
    r = rewards(pred, sample(polygon))
    assert r["accuracy"] == pytest.approx(expected)
    assert r["iou"] == pytest.approx(expected)


def test_polygon_with_conversion_and_huge_prediction() -> None:
    # norm1: 100x100 image, [0, 0, 0.1, 0.1] -> [0, 0, 10, 10] vs the triangle: 0.5
    smp = sample(TRIANGLE, image_size=(100, 100))
    assert rewards([0, 0, 0.1, 0.1], smp, coords="norm1")["accuracy"] == pytest.approx(0.5)
    # a box far larger than the polygon: IoU 50 / 1e600 underflows to 0, stays finite
    assert rewards([-1e300, -1e300, 1e300, 1e300], sample(TRIANGLE))["accuracy"] == 0.0


# -- threshold mode -------------------------------------------------------------------------------------
def test_iou_threshold() -> None:
    smp = sample([0, 0, 10, 10])
    r = rewards([5, 5, 15, 15], smp, iou_threshold=0.5)  # IoU 1/7 < 0.5
    assert (r["accuracy"], r["iou"]) == (0.0, pytest.approx(1 / 7))
    # [0, 0, 10, 20] vs [0, 0, 10, 10]: 100 / 200 = 0.5 exactly, and >= counts
    r = rewards([0, 0, 10, 20], smp, iou_threshold=0.5)
    assert (r["accuracy"], r["iou"], r["total"]) == (1.0, 0.5, 2.0)
    assert rewards([0, 0, 10, 20], smp, iou_threshold=0.51)["accuracy"] == 0.0
    assert rewards([0, 0, 10, 10], smp, iou_threshold=1.0)["accuracy"] == 1.0
    assert rewards("<answer>nothing</answer>", smp, iou_threshold=0.1)["accuracy"] == 0.0


def test_params_validation() -> None:
    assert TASK.params() == RecParams(coords="abs", iou_threshold=None, require_answer_tags=True)
    for bad in (
        {"coords": "pixels"},
        {"iou_threshold": 0},
        {"iou_threshold": 1.5},
        {"iou_threshold": -0.1},
        {"iou_threshold": float("nan")},
        {"iou_treshold": 0.5},
    ):
        with pytest.raises(vgrpo.ParamsError):
            TASK.params(bad)
    assert TASK.params({"iou_threshold": 1}).iou_threshold == 1.0
    described = [name for name, f in RecParams.model_fields.items() if not f.description]
    assert described == []


# -- ground truth ---------------------------------------------------------------------------------------
def test_check_solution_normalises() -> None:
    assert TASK.check_solution([0, 1, 2.5, 3]) == [0.0, 1.0, 2.5, 3.0]
    assert TASK.check_solution((0, 1, 2, 3)) == [0.0, 1.0, 2.0, 3.0]
    assert TASK.check_solution(TRIANGLE) == [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    # a 4-point polygon is a polygon, not a box
    assert TASK.check_solution(SQUARE) == [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]


@pytest.mark.parametrize(
    "solution",
    [
        None,
        "0 0 10 10",
        {"bbox_2d": [0, 0, 1, 1]},
        [],
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        [0, 0, 0, 10],  # x2 == x1
        [0, 10, 5, 5],  # y2 < y1
        [0, 0, True, 1],
        [0, 0, "1", 1],
        [0, 0, float("nan"), 1],
        [0, 0, float("inf"), 1],
        [0, 0, 10**400, 1],
        [[0, 0], [1, 1]],  # two points
        [[0, 0], [1, 0], [1]],
        [[0, 0], [1, 0], [1, 2, 3]],
        [[0, 0], [1, 0], "ab"],
        [[0, 0], [1, 0], [1, float("inf")]],
        [[0, 0], [1, 0], [1, False]],
        [[0, 0], [1, 0], [2, 0]],  # collinear: no area
        [[0, 0], 5, 6, 7],
    ],
)
def test_check_solution_rejects(solution: object) -> None:
    with pytest.raises(ValueError, match="^expected"):
        TASK.check_solution(solution)


def test_bad_record_names_file_line_and_field(tmp_path: Path) -> None:
    data = tmp_path / "rec.jsonl"
    data.write_text(
        json.dumps({"id": "a", "question": "cat", "solution": [0, 0, 5, 5], "image_size": [10, 10]})
        + "\n"
        + json.dumps({"id": "b", "question": "dog", "solution": [5, 5, 0, 0]})
        + "\n"
    )
    with pytest.raises(vgrpo.DataError) as info:
        vgrpo.load_jsonl(data, TASK)
    assert (info.value.line, info.value.field) == (2, "solution")
    assert "x2 > x1" in str(info.value)


# -- metric ---------------------------------------------------------------------------------------------
def test_metric() -> None:
    smp = sample([0, 0, 10, 10])
    predictions = [[0, 0, 10, 10], [5, 5, 15, 15], None, [0, 0, 10, 20]]
    # IoUs: 1, 25/175 = 1/7, 0 (unparsable), 100/200 = 0.5
    # acc@0.5: 1 and 0.5 pass -> 2/4; mean: (1 + 1/7 + 0 + 0.5) / 4 = 23/56
    m = TASK.metric(predictions, [smp] * 4, TASK.params())
    assert m == {"acc@0.5": 0.5, "mean_iou": pytest.approx(23 / 56)}
    assert set(m) == set(TASK.metric_names)
    assert TASK.metric([], [], TASK.params()) == {"acc@0.5": 0.0, "mean_iou": 0.0}
    # threshold params do not change the metric; coords do: norm1 on 20x20 -> [0,0,10,10] -> IoU 1
    norm1 = TASK.params({"coords": "norm1"})
    m = TASK.metric([[0, 0, 0.5, 0.5]], [sample([0, 0, 10, 10], image_size=(20, 20))], norm1)
    assert m == {"acc@0.5": 1.0, "mean_iou": 1.0}
    # malformed predictions count as 0
    m = TASK.metric([[1, 2], "x", [10, 10, 0, 0]], [smp] * 3, TASK.params({"iou_threshold": 0.1}))
    assert m == {"acc@0.5": 0.0, "mean_iou": 0.0}


# -- template, example, registration --------------------------------------------------------------------
def test_prompt() -> None:
    smp = vgrpo.Sample(id="p", question="the dog on the sofa", images=("a.jpg",))
    (msg,) = TASK.build_prompt(smp, TASK.params())
    assert msg["role"] == "user"
    assert msg["content"][0] == {"type": "image", "image": "a.jpg"}
    text = msg["content"][-1]["text"]
    assert "the dog on the sofa" in text
    assert '{"bbox_2d": [x1, y1, x2, y2]}' in text
    assert "<think> </think>" in text and "<answer> </answer>" in text
    assert "1000" not in text
    norm = TASK.build_prompt(smp, TASK.params({"coords": "norm1000"}))[0]["content"][-1]["text"]
    assert norm.startswith(text) and "0 to 1000" in norm
    norm1 = TASK.build_prompt(smp, TASK.params({"coords": "norm1"}))[0]["content"][-1]["text"]
    assert "0 to 1" in norm1 and "1000" not in norm1
    # rendering twice does not accumulate notes
    again = TASK.build_prompt(smp, TASK.params({"coords": "norm1000"}))[0]["content"][-1]["text"]
    assert again == norm


def test_example_completion_scores_full_marks() -> None:
    smp = vgrpo.data.sample_from_record(TASK.example, TASK)
    (score,) = vgrpo.score(TASK, [TASK.example_completion], [smp])
    assert score.rewards == {"accuracy": 1.0, "format": 1.0, "iou": 1.0}
    assert score.reward == 2.0


def test_registered_without_errors() -> None:
    registry = vgrpo.load_plugins()
    assert [e for e in registry.errors if e.entry_point == "rec" or e.distribution == "vgrpo-rec"] == []
    task = registry.task("rec")
    assert isinstance(task, RecTask)
    assert registry.owner("task", "rec")[0] == "vgrpo-rec"
    assert {r.name for r in task.rewards} == {"accuracy", "format", "iou"}
    assert all(r.range == (0.0, 1.0) for r in task.rewards)
    assert dict(task.default_weights) == {"accuracy": 1.0, "format": 1.0}
