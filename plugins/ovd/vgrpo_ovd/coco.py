"""The dataset-level evaluation metric: COCO mAP and AP50 over all images, via pycocotools itself."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from vgrpo_ovd.boxes import Box


def coco_map(
    ground_truths: Sequence[Sequence[Box]], predictions: Sequence[Sequence[Box]]
) -> dict[str, float]:
    """``{"map", "ap50"}`` of one image per (ground truth, predictions) pair, every detection scored 1.0.

    pycocotools ranks detections across images by score; with equal scores that is image order, then the
    order the model wrote them. Categories are the union of all labels. Without any ground-truth box the
    single-image rule applies to the whole split (1.0 when nothing is predicted either, else 0.0); an empty
    split scores 0.0, as does a split whose every gt box lies outside COCO's area range.
    """
    n_gt = sum(len(g) for g in ground_truths)
    n_pred = sum(len(p) for p in predictions)
    if not ground_truths or n_gt == 0 or n_pred == 0:
        value = 1.0 if ground_truths and n_gt == 0 and n_pred == 0 else 0.0
        return {"map": value, "ap50": value}

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({b[0] for boxes in (*ground_truths, *predictions) for b in boxes})
    cat_id = {label: i + 1 for i, label in enumerate(labels)}

    def xywh(b: Box) -> list[float]:
        return [b[1], b[2], b[3] - b[1], b[4] - b[2]]

    annotations, detections = [], []
    for image_id, (gts, dets) in enumerate(zip(ground_truths, predictions), start=1):
        for b in gts:
            x, y, w, h = xywh(b)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id[b[0]],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b in dets:
            detections.append(
                {"image_id": image_id, "category_id": cat_id[b[0]], "bbox": xywh(b), "score": 1.0}
            )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(1, len(ground_truths) + 1)],
            "categories": [{"id": i, "name": label} for label, i in cat_id.items()],
            "annotations": annotations,
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": max(float(stats[0]), 0.0), "ap50": max(float(stats[1]), 0.0)}  # −1: nothing to average
