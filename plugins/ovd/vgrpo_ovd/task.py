"""Open-vocabulary detection: the answer is a JSON list of labelled boxes, scored by COCO AP.

Rewards (all in [0, 1]; an unparsable completion, ``None``, scores 0 on each but ``format``):
``ap``/``ap50`` single-image COCO AP@[.5:.95]/AP@.5, ``f1`` of a one-to-one IoU ≥ 0.5 matching,
``length`` = min(1, n_gt / n_pred), and ``accuracy`` = ap × length (VLM-R1's OVD reward).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import vgrpo
from vgrpo_ovd import sources
from vgrpo_ovd.boxes import check_ground_truth, ground_truth_key, parse_detections, prediction_key
from vgrpo_ovd.coco import coco_map
from vgrpo_ovd.evaluation import Scores, evaluate

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem


class OvdParams(vgrpo.TaskParams):
    """OVD has no knobs of its own: boxes are pixels of the image, scored as COCO does."""


def outside_image(box: Sequence[float], size: Sequence[float]) -> bool:
    """Whether a box [x1, y1, x2, y2] leaves a (W, H) image by more than max(1 px, 1 % of the side), the
    slack for the rounding and small overflows of converted annotations."""
    w, h = float(size[0]), float(size[1])
    sx, sy = max(1.0, 0.01 * w), max(1.0, 0.01 * h)
    x1, y1, x2, y2 = box
    return x1 < -sx or y1 < -sy or x2 > w + sx or y2 > h + sy


def _number(value: float) -> float | int:
    """A coordinate as a completion writes it: an integer when it is one, else two decimals at most."""
    value = round(float(value), 2)
    return int(value) if value.is_integer() else value


def _scores(parsed: Any, sample: vgrpo.Sample) -> Scores:
    return evaluate(ground_truth_key(sample.solution), prediction_key(parsed))


@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed: Any, sample: vgrpo.Sample) -> float:
    """ap × length: COCO AP damped when the model writes more boxes than there are objects."""
    if parsed is None:
        return 0.0
    scores = _scores(parsed, sample)
    return scores.ap * scores.length


@vgrpo.reward(range=(0.0, 1.0))
def ap(parsed: Any, sample: vgrpo.Sample) -> float:
    """Single-image COCO AP@[.50:.95] as pycocotools computes it, detections ranked in written order."""
    return 0.0 if parsed is None else _scores(parsed, sample).ap


@vgrpo.reward(range=(0.0, 1.0))
def ap50(parsed: Any, sample: vgrpo.Sample) -> float:
    """Single-image COCO AP@.50 as pycocotools computes it, detections ranked in written order."""
    return 0.0 if parsed is None else _scores(parsed, sample).ap50


@vgrpo.reward(range=(0.0, 1.0))
def f1(parsed: Any, sample: vgrpo.Sample) -> float:
    """2TP/(2TP+FP+FN) of a maximum one-to-one matching of same-label boxes with IoU ≥ 0.5."""
    return 0.0 if parsed is None else _scores(parsed, sample).f1


@vgrpo.reward(range=(0.0, 1.0))
def length(parsed: Any, sample: vgrpo.Sample) -> float:
    """min(1, n_gt / n_pred), 1.0 with no predicted box: the anti-flooding factor (0.0 when unparsable)."""
    return 0.0 if parsed is None else _scores(parsed, sample).length


class OvdTask(vgrpo.Task):
    name = "ovd"
    version = "0.1.0"
    description = "Detect every object of the listed categories; the answer is a JSON list of labelled boxes."
    Params = OvdParams
    template = vgrpo.PromptTemplate(
        user="{question} First output the thinking process in <think> </think> tags and then output the "
        "final answer in <answer> </answer> tags as a JSON list of the objects found, each "
        '{{"bbox_2d": [x1, y1, x2, y2], "label": "category"}} with pixel coordinates of the image; '
        "write [] when there is none."
    )
    rewards = (accuracy, ap, ap50, f1, length, vgrpo.format_reward)
    metric_names = ("map", "ap50")
    example = {
        "id": "ovd-0",
        "image": "scene.png",
        "question": "Find every red circle and blue square.",
        "solution": [
            {"bbox_2d": [12, 20, 60, 68], "label": "red circle"},
            {"bbox_2d": [100, 40, 150, 90], "label": "blue square"},
        ],
        "image_size": [224, 224],
    }
    example_completion = (
        "<think>There is one red circle at the top left and one blue square to its right.</think> "
        '<answer>[{"bbox_2d": [12, 20, 60, 68], "label": "red circle"}, '
        '{"bbox_2d": [100, 40, 150, 90], "label": "blue square"}]</answer>'
    )

    def parse(self, completion: str, params: vgrpo.TaskParams) -> list[dict[str, Any]] | None:
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        return None if answer is None else parse_detections(answer)

    def check_solution(self, solution: Any) -> list[dict[str, Any]]:
        return check_ground_truth(solution)

    def check_record(self, record: Mapping[str, Any], params: vgrpo.TaskParams) -> None:
        """The default checks, and: with ``image_size`` every ground-truth box lies inside the image (1 %
        of slack): one outside is written in another convention (e.g. 0-1000) or for another image."""
        super().check_record(record, params)
        size = record.get("image_size")
        if size is None:
            return
        for i, item in enumerate(self.check_solution(record["solution"])):
            if outside_image(item["bbox_2d"], size):
                raise vgrpo.DataError(
                    f"expected item {i} bbox_2d inside the {size[0]:g}x{size[1]:g} image (image_size), got "
                    f"{item['bbox_2d']!r}",
                    field="solution",
                )

    def correct(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> list[bool]:
        """All the objects and nothing else: single-image F1 at IoU 0.5 is 1.0, i.e. each ground-truth box is
        matched one-to-one by a same-label box with IoU >= 0.5 and no box is left over (an empty ground truth
        needs an empty answer).

        Single-image COCO AP would be too strict (AP@[.5:.95] = 1 needs IoU >= 0.95) and too lenient (boxes
        of labels absent from the ground truth, or written after every object was found, cost no AP).
        """
        return [isinstance(p, list) and _scores(p, s).f1 == 1.0 for p, s in zip(predictions, samples)]

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> dict[str, float]:
        """Dataset-level COCO mAP and AP50 (pycocotools); an unparsable prediction counts as no boxes."""
        pairs = list(zip(predictions, samples))
        return coco_map(
            [ground_truth_key(s.solution) for _, s in pairs],
            [prediction_key(p) if isinstance(p, list) else () for p, _ in pairs],
        )

    # -- optional methods: training statistics, the SFT target and where records come from -----------------
    def step_stats(self, parsed: Any) -> dict[str, float]:
        """``pred_count``: objects the answer predicts (an empty answer counts 0), to watch for flooding."""
        if isinstance(parsed, list) and all(isinstance(x, dict) for x in parsed):
            return {"pred_count": float(len(parsed))}
        return {}

    def reference_completion(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> str:
        """The ground truth as the JSON list the template asks for (``[]`` when empty), in image pixels."""
        boxes = [
            {"bbox_2d": [_number(v) for v in d["bbox_2d"]], "label": d["label"]} for d in sample.solution
        ]
        return f"<think>Finding them.</think><answer>{json.dumps(boxes, ensure_ascii=False)}</answer>"

    def synth_record(self, item: SynthItem) -> dict[str, Any]:
        """1-3 categories to find in the scene, some possibly absent; the solution lists the boxes present."""
        return sources.synth_record(item)

    def vlm_r1_match(self, record: VlmR1Record) -> tuple[float, str] | None:
        """A VLM-R1 record with a detection reward method or an answer of labelled boxes looks like ovd."""
        return sources.vlm_r1_match(record)

    def vlm_r1_solution(self, record: VlmR1Record) -> list[Any]:
        """The answer's list of ``{"bbox_2d", "label"}`` (``None`` = no objects)."""
        return sources.vlm_r1_solution(record)
