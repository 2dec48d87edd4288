"""Shared helpers of the ovd tests: pycocotools as the oracle for single-image AP."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import vgrpo

Box = tuple  # (label, x1, y1, x2, y2)


def coco_single_image(gt: Sequence[Box], pred: Sequence[Box]) -> tuple[float, float]:
    """stats[0], stats[1] of COCOeval (bbox) on one image, every detection scored 1.0, in the given order."""
    labels = sorted({b[0] for b in gt} | {b[0] for b in pred})
    cat = {label: i + 1 for i, label in enumerate(labels)}
    annotations = []
    for i, (label, x1, y1, x2, y2) in enumerate(gt):
        w, h = x2 - x1, y2 - y1
        annotations.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": cat[label],
                "bbox": [x1, y1, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    dets = [
        {"image_id": 1, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0}
        for label, x1, y1, x2, y2 in pred
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": [{"id": 1}],
            "categories": [{"id": i, "name": label} for label, i in cat.items()],
            "annotations": annotations,
        }
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


@pytest.fixture(scope="session")
def coco_oracle() -> Callable[[Sequence[Box], Sequence[Box]], tuple[float, float]]:
    return coco_single_image


@pytest.fixture(scope="session")
def task() -> vgrpo.Task:
    registry = vgrpo.load_plugins()
    assert not [e for e in registry.errors if e.entry_point == "ovd"], registry.errors
    return registry.task("ovd")
