"""Referring expression comprehension: put one box around the object a phrase describes; reward = IoU."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

import vgrpo
from vgrpo_rec import sources
from vgrpo_rec.geometry import from_image_box, is_box, is_hit, polygon_area, solution_iou, to_image_box
from vgrpo_rec.parse import parse_box, valid_box

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem


class RecParams(vgrpo.TaskParams):
    """Knobs of the ``rec`` task."""

    coords: Literal["abs", "norm1000", "norm1"] = Field(
        "abs",
        description="Coordinates the model writes. 'abs': pixels of the image the model saw, rescaled to "
        "the original by W/w and H/h when the sample has both image_size (W, H) and input_size (w, h), "
        "else taken as original pixels. 'norm1000': 0-1000 of the image (Qwen2-VL style); 'norm1': 0-1. "
        "Both normalised conventions need image_size: without it the box cannot be converted and accuracy "
        "is 0.",
    )
    iou_threshold: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="When set to t (0 < t <= 1), accuracy is 1.0 if IoU >= t (iou_rule) else 0.0; when "
        "null, accuracy is the IoU itself. The 'iou' reward always reports the continuous IoU.",
    )
    iou_rule: Literal["ge", "gt"] = Field(
        "ge",
        description="When an IoU counts as a hit at a threshold t (the acc@0.5 metric, correct, and accuracy "
        "with iou_threshold): 'ge' IoU >= t (vgrpo), 'gt' IoU > t (VLM-R1's REC evaluation).",
    )
    box_pick: Literal["first", "last"] = Field(
        "first",
        description="Which box of the answer is the prediction: 'first' (vgrpo, in the order written, fenced "
        "or not) or 'last' (the last [a, b, c, d] anywhere in the answer, as VLM-R1's REC evaluation reads "
        "it).",
    )
    integer_boxes: bool = Field(
        False,
        description="Read only boxes of four unsigned integers (VLM-R1's REC evaluation): a box written "
        "with a decimal point, exponent or sign is not a box and is skipped over.",
    )


def prediction_iou(parsed: Any, sample: vgrpo.Sample, coords: str) -> float:
    """IoU of a parsed prediction (model coordinates) with the sample's ground truth; 0.0 when unparsable."""
    if parsed is None:
        return 0.0
    box = to_image_box(parsed, coords, sample.image_size, sample.input_size)
    return 0.0 if box is None else solution_iou(box, sample.solution)


@vgrpo.reward(range=(0.0, 1.0), batched=True)
def accuracy(parsed: Sequence[Any], samples: Sequence[vgrpo.Sample], params: RecParams) -> list[float]:
    """IoU of the predicted box with the ground truth, or 1.0/0.0 against iou_threshold when set."""
    coords, t = params.coords, params.iou_threshold
    values = [prediction_iou(p, s, coords) for p, s in zip(parsed, samples)]
    return values if t is None else [1.0 if is_hit(v, t, params.iou_rule) else 0.0 for v in values]


@vgrpo.reward(range=(0.0, 1.0), batched=True)
def iou(parsed: Sequence[Any], samples: Sequence[vgrpo.Sample], params: RecParams) -> list[float]:
    """Continuous IoU of the predicted box with the ground truth, whatever iou_threshold says (for logs)."""
    coords = params.coords
    return [prediction_iou(p, s, coords) for p, s in zip(parsed, samples)]


_BOX_HELP = "a box [x1, y1, x2, y2] or a polygon [[x, y], ...] in original-image pixels"
_COORDS_NOTE = {
    "abs": "",
    "norm1000": " Coordinates are integers from 0 to 1000, relative to the image width and height.",
    "norm1": " Coordinates are fractions from 0 to 1 of the image width and height.",
}


def edge_slack(side: float) -> float:
    """How far (pixels) a ground-truth coordinate may lie outside an image side: max(1 px, 1 % of the side),
    for the rounding and small overflows of converted annotations."""
    return max(1.0, 0.01 * side)


def outside_image(points: Sequence[Sequence[float]], size: Sequence[float]) -> bool:
    """Whether any (x, y) lies outside a (W, H) image by more than :func:`edge_slack`."""
    w, h = float(size[0]), float(size[1])
    sx, sy = edge_slack(w), edge_slack(h)
    return any(not (-sx <= x <= w + sx and -sy <= y <= h + sy) for x, y in points)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected {what} to be a number, got {_short(value)}")
    try:
        f = float(value)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"expected {what} to be a finite number, got {_short(value)}")
    return f


class RecTask(vgrpo.Task):
    """Referring expression comprehension (visual grounding of one object).

    The model answers ``{"bbox_2d": [x1, y1, x2, y2]}``; ``accuracy`` is its IoU with the ground truth box
    (or polygon, via shapely). For ``coords`` other than ``abs`` the prompt gains one sentence saying the
    convention, which a ``str.format`` template cannot express, hence :meth:`build_prompt`.
    """

    name = "rec"
    version = "0.1.0"
    description = "Ground a referring expression with one bounding box; reward = IoU with the ground truth."
    Params = RecParams
    template = vgrpo.PromptTemplate(
        user="Please provide the bounding box coordinates of the region this sentence describes: {question}. "
        "First output the thinking process in <think> </think> tags and then output the final answer in "
        '<answer> </answer> tags as JSON in the form {{"bbox_2d": [x1, y1, x2, y2]}}.'
    )
    rewards = (accuracy, vgrpo.format_reward, iou)
    default_weights = {"accuracy": 1.0, "format": 1.0}
    metric_names = ("acc@0.5", "mean_iou")
    #: Evaluation protocols (``vgrpo eval --protocol NAME``): the params that reproduce another codebase's
    #: evaluation rules; see docs/evaluation.md for where each rule comes from.
    protocols: ClassVar[dict[str, dict[str, Any]]] = {
        "vlm-r1": {"iou_rule": "gt", "box_pick": "last", "integer_boxes": True},
    }
    example = {
        "id": "rec-0",
        "image": "scene.png",
        "question": "the red circle on the left",
        "solution": [40, 60, 120, 140],
        "image_size": [640, 480],
    }
    example_completion = (
        "<think>There are two red circles; the left one spans x from 40 to 120 and y from 60 to 140.</think> "
        '<answer>{"bbox_2d": [40, 60, 120, 140]}</answer>'
    )

    def parse(self, completion: str, params: vgrpo.TaskParams) -> list[float] | None:
        """The first box of the answer as ``[x1, y1, x2, y2]`` floats in model coordinates, else ``None``."""
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        if answer is None:
            return None
        pick, integers = getattr(params, "box_pick", "first"), getattr(params, "integer_boxes", False)
        return parse_box(answer, pick, integers)

    def check_solution(self, solution: Any) -> list[float] | list[list[float]]:
        """A box ``[x1, y1, x2, y2]`` (x2 > x1, y2 > y1) or a polygon of >= 3 points with positive area."""
        if not isinstance(solution, (list, tuple)) or not solution:
            raise ValueError(f"expected {_BOX_HELP}, got {_short(solution)}")
        if not isinstance(solution[0], (list, tuple)):
            if len(solution) != 4:
                raise ValueError(
                    f"expected a box of 4 numbers [x1, y1, x2, y2] (or a polygon [[x, y], ...]), "
                    f"got {len(solution)} items: {_short(solution)}"
                )
            box = [_number(v, f"box coordinate {i}") for i, v in enumerate(solution)]
            if valid_box(box) is None:
                raise ValueError(
                    f"expected a box [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {_short(solution)}"
                )
            return box
        if len(solution) < 3:
            raise ValueError(f"expected a polygon of at least 3 [x, y] points, got {len(solution)}")
        points = []
        for i, point in enumerate(solution):
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise ValueError(f"expected polygon point {i} as [x, y], got {_short(point)}")
            x, y = point
            points.append([_number(x, f"x of polygon point {i}"), _number(y, f"y of polygon point {i}")])
        if not polygon_area(points) > 0:
            raise ValueError(f"expected a polygon enclosing a positive area, got {_short(solution)}")
        return points

    def check_record(self, record: Mapping[str, Any], params: vgrpo.TaskParams) -> None:
        """The default checks, and: with ``image_size`` the box or polygon lies inside the image (see
        :func:`edge_slack`): one outside is written in another convention (e.g. 0-1000) or for another image;
        without ``image_size`` or an image to read it from, a normalised ``coords`` cannot be converted."""
        super().check_record(record, params)
        size = record.get("image_size")
        if size is None:
            coords = self.params(params).coords
            if coords != "abs" and not record.get("image"):
                raise vgrpo.DataError(
                    f"missing; expected [W, H] (or an image to read it from): with coords {coords!r} the "
                    "model's box cannot be converted to pixels without it",
                    field="image_size",
                )
            return
        solution = self.check_solution(record["solution"])
        points = solution if isinstance(solution[0], list) else [solution[:2], solution[2:]]
        if outside_image(points, size):
            raise vgrpo.DataError(
                f"expected {_BOX_HELP} inside the {size[0]:g}x{size[1]:g} image (image_size), got "
                f"{_short(record['solution'])}",
                field="solution",
            )

    def build_prompt(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> list[dict[str, Any]]:
        """The template's messages, plus a sentence on the coordinate convention when it is not ``abs``."""
        messages = self.template.render(sample, params)
        note = _COORDS_NOTE.get(getattr(params, "coords", "abs"), "")
        if note:
            text_part = messages[-1]["content"][-1]
            text_part["text"] += note
        return messages

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> dict[str, float]:
        """``acc@0.5``: fraction of samples with IoU >= 0.5 (> 0.5 with ``iou_rule: gt``); ``mean_iou``: mean
        IoU (unparsable = 0)."""
        coords, rule = getattr(params, "coords", "abs"), getattr(params, "iou_rule", "ge")
        ious = [prediction_iou(valid_box(p), s, coords) for p, s in zip(predictions, samples)]
        if not ious:
            return {"acc@0.5": 0.0, "mean_iou": 0.0}
        hits = sum(is_hit(v, 0.5, rule) for v in ious)
        return {"acc@0.5": hits / len(ious), "mean_iou": sum(ious) / len(ious)}

    # -- optional methods: the SFT target, where records come from (vgrpo data synth, vgrpo data convert) --
    def reference_completion(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> str | None:
        """The ground-truth box in the task's ``coords`` (``abs``: pixels of the image the model saw, when
        ``input_size`` is known) to 0.01 pixel, as the template asks for it. ``None`` for a polygon
        (no box matches it exactly) and for a normalised convention without ``image_size``."""
        if not is_box(sample.solution):
            return None
        coords = getattr(params, "coords", "abs")
        box = from_image_box(sample.solution, coords, sample.image_size, sample.input_size)
        if box is None:
            return None
        digits = 5 if coords == "norm1" else 2  # 0.01 pixel, 0.00001 of the image
        rounded = [round(float(x), digits) for x in box]
        numbers = ", ".join(str(int(v) if v.is_integer() else v) for v in rounded)
        return f'<think>Locating it.</think><answer>{{"bbox_2d": [{numbers}]}}</answer>'

    def synth_record(self, item: SynthItem) -> dict[str, Any]:
        """A shape of the scene named unambiguously ("the red circle on the left"); the solution: its box."""
        return sources.synth_record(item)

    def vlm_r1_match(self, record: VlmR1Record) -> tuple[float, str] | None:
        """A VLM-R1 record whose answer is one box looks like rec."""
        return sources.vlm_r1_match(record)

    def vlm_r1_question(self, record: VlmR1Record) -> str:
        """The referring expression alone (VLM-R1's REC prompt removed, or the annotation's caption)."""
        return sources.vlm_r1_question(record)

    def vlm_r1_solution(self, record: VlmR1Record) -> list[Any]:
        """The answer's box (a list, ``{"bbox_2d": ...}`` or a one-item list of such dicts) or polygon."""
        return sources.vlm_r1_solution(record)
