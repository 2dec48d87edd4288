"""Property tests: any text parses and scores without raising, every reward finite and inside its range."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

import vgrpo
from vgrpo_rec import RecTask
from vgrpo_rec.geometry import box_iou

TASK = RecTask()
SAMPLES = [
    vgrpo.Sample(id="box", solution=TASK.check_solution([10, 20, 110, 220]), image_size=(640, 480)),
    vgrpo.Sample(
        id="rescaled",
        solution=TASK.check_solution([0.5, 0.5, 3.5, 2.5]),
        image_size=(1280, 720),
        input_size=(644, 476),
    ),
    vgrpo.Sample(id="bare", solution=TASK.check_solution([-5, -5, 5, 5])),
    vgrpo.Sample(id="polygon", solution=TASK.check_solution([[0, 0], [10, 0], [5, 8]]), image_size=(20, 20)),
    vgrpo.Sample(id="bowtie", solution=TASK.check_solution([[0, 0], [10, 10], [10, 0], [0, 10]])),
]
PARAMS = [
    {},
    {"coords": "norm1000"},
    {"coords": "norm1", "iou_threshold": 0.5},
    {"coords": "abs", "iou_threshold": 1.0, "require_answer_tags": False},
    {"coords": "norm1000", "require_answer_tags": False},
]
FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "[",
    "]",
    "{",
    "}",
    ",",
    ", ",
    " ",
    "\n",
    ":",
    '"',
    "'",
    "bbox_2d",
    "bbox",
    '"bbox_2d": ',
    "```json\n",
    "```",
    "0",
    "1",
    "5",
    "10",
    "-2",
    "3.5",
    ".5",
    "-0",
    "+1",
    "1e309",
    "-1e309",
    "1e-320",
    "1e308",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "9" * 30,
    "true",
    "null",
    "é",
    "😀",
    "\x00",
    "[1, 2, 3, 4]",
    "[0, 0, 1000, 1000]",
    "[10, 20, 110, 220]",
    "[0.1, 0.2, 0.6, 0.7]",
]
NUMBERS = ["0", "1", "10", "-3", "2.5", ".5", "1e3", "1e309", "-1e309", "1e-320", "NaN", "Infinity", "-inf"]
NUMBERS += ["9" * 400]
# a bracketed list of 3 to 5 number tokens (the shape the scan looks for), overflowing and NaN ones included
box_like = st.lists(st.sampled_from(NUMBERS), min_size=3, max_size=5).map(lambda ns: f"[{', '.join(ns)}]")
near_miss = st.lists(st.one_of(st.sampled_from(FRAGMENTS), box_like), max_size=40).map("".join)
any_text = st.one_of(st.text(max_size=300), near_miss, st.builds("<answer>{}</answer>".format, near_miss))


def check_scores(completions: list[str], params: dict) -> None:
    samples = [SAMPLES[i % len(SAMPLES)] for i in range(len(completions))]
    ranges = {r.name: r.range for r in TASK.rewards}
    for score in vgrpo.score(TASK, completions, samples, params):
        assert score.errors == []  # a non-empty list means a reward (or the parser) raised
        assert math.isfinite(score.reward)
        for name, value in score.rewards.items():
            lo, hi = ranges[name]
            assert math.isfinite(value) and lo <= value <= hi, (name, value)
        p = score.parsed
        if p is not None:
            assert len(p) == 4 and all(type(v) is float and math.isfinite(v) for v in p)
            assert p[2] > p[0] and p[3] > p[1]
            json.dumps(p, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(any_text, min_size=1, max_size=len(SAMPLES)), st.sampled_from(PARAMS))
def test_any_text_scores_in_range(completions: list[str], params: dict) -> None:
    check_scores(completions, params)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> list[float]:
    x1, x2 = sorted(draw(st.lists(finite, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(finite, min_size=2, max_size=2, unique=True)))
    return [x1, y1, x2, y2]


@settings(max_examples=150, deadline=None)
@given(boxes(), st.sampled_from(["json", "fence", "python", "prose"]))
def test_written_box_reads_back_exactly(box: list[float], style: str) -> None:
    # repr() and json.dumps() of a float round-trip exactly, through json.loads or the scan alike
    if style == "json":
        answer = json.dumps({"bbox_2d": box})
    elif style == "fence":
        answer = "```json\n" + json.dumps([{"bbox_2d": box, "label": "x"}]) + "\n```"
    elif style == "python":
        answer = repr({"bbox_2d": box, "label": "x"})
    else:
        answer = f"It is at [{box[0]!r}, {box[1]!r}, {box[2]!r}, {box[3]!r}] I think"
    assert TASK.parse(f"<think>.</think><answer>{answer}</answer>", TASK.params()) == box


@settings(max_examples=200, deadline=None)
@given(boxes(), boxes())
def test_box_iou_properties(a: list[float], b: list[float]) -> None:
    v = box_iou(a, b)
    assert 0.0 <= v <= 1.0
    assert v == box_iou(b, a)
    area = (a[2] - a[0]) * (a[3] - a[1])
    if area > 1e-6:
        assert box_iou(a, a) == 1.0
    # IoU never exceeds the ratio of the smaller area to the larger
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if area > 1e-6 and area_b > 1e-6:
        assert v <= min(area, area_b) / max(area, area_b) * (1 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(NUMBERS), min_size=4, max_size=4),
    st.sampled_from(['{{"bbox_2d": {}}}', "[{}]", "The box: {} or [0, 0, 1, 1].", "```json\n{}\n```"]),
)
def test_first_box_validity(tokens: list[str], shape: str) -> None:
    # oracle: the written numbers as floats; any non-finite one, x2 <= x1 or y2 <= y1 -> no box
    values = [float(t) for t in tokens]
    x1, y1, x2, y2 = values
    ok = all(math.isfinite(v) for v in values) and x2 > x1 and y2 > y1
    answer = shape.format("[" + ", ".join(tokens) + "]")
    parsed = TASK.parse(f"<think>.</think><answer>{answer}</answer>", TASK.params())
    assert parsed == (values if ok else None)
