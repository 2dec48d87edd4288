"""The dataset-level metric: COCO mAP / AP50 over all images, checked against pycocotools run from files."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import vgrpo


def box(label: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    return {"bbox_2d": [x1, y1, x2, y2], "label": label}


def samples_of(task, solutions) -> list[vgrpo.Sample]:
    return [vgrpo.Sample(id=str(i), solution=task.check_solution(s)) for i, s in enumerate(solutions)]


def pycocotools_from_files(tmp_path, solutions, predictions) -> tuple[float, float]:
    """The oracle, built the way a user would: annotation and result JSON files, categories numbered from
    the last label down (a different numbering than the plugin's), scores 1.0, images in split order."""
    labels = sorted(
        {b["label"].strip().lower() for s in solutions for b in s}
        | {b["label"] for p in predictions if p for b in p},
        reverse=True,
    )
    cat = {label: 10 * (i + 1) for i, label in enumerate(labels)}
    images, annotations, results = [], [], []
    for image_id, (solution, pred) in enumerate(zip(solutions, predictions), start=100):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for b in solution:
            x1, y1, x2, y2 = b["bbox_2d"]
            annotations.append(
                {
                    "id": 1000 + len(annotations),
                    "image_id": image_id,
                    "category_id": cat[b["label"].strip().lower()],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for b in pred or []:
            x1, y1, x2, y2 = b["bbox_2d"]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat[b["label"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0,
                }
            )
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": n} for n, i in cat.items()],
            }
        )
    )
    dt_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def test_dataset_map_is_not_a_mean_of_image_aps(task):
    # Two images with one "a" each; the first is found exactly, the second gets nothing. Per image the
    # APs are 1 and 0 (mean .5); over the dataset recall reaches .5 at precision 1: 51 of 101 thresholds.
    solutions = [[box("a", 0, 0, 10, 10)], [box("a", 0, 0, 10, 10)]]
    predictions = [[box("a", 0, 0, 10, 10)], []]
    got = task.metric(predictions, samples_of(task, solutions), task.params())
    assert got == pytest.approx({"map": 51 / 101, "ap50": 51 / 101})


def test_random_split_matches_pycocotools(task, tmp_path):
    rng = random.Random(3)
    checked = 0
    for trial in range(6):
        solutions, predictions = [], []
        for _ in range(rng.randint(3, 8)):
            gt = []
            for _ in range(rng.randint(0, 6)):
                x, y = rng.uniform(0, 300), rng.uniform(0, 300)
                label = rng.choice(["Cat", "dog ", "car"])
                gt.append(box(label, x, y, x + rng.uniform(5, 80), y + rng.uniform(5, 80)))
            pred = []
            for _ in range(rng.randint(0, 8)):
                if gt and rng.random() < 0.75:
                    b = rng.choice(gt)
                    (x1, y1, x2, y2), s = b["bbox_2d"], rng.choice([0.0, 0.05, 0.15, 0.3]) * 30
                    label = b["label"].strip().lower() if rng.random() < 0.9 else "zebra"
                    x1, y1, x2 = x1 + rng.gauss(0, s), y1 + rng.gauss(0, s), x2 + abs(rng.gauss(0, s)) + 1
                    pred.append(box(label, x1, y1, x2, y2 + 1))
                else:
                    x, y = rng.uniform(0, 300), rng.uniform(0, 300)
                    pred.append(box(rng.choice(["cat", "dog", "zebra"]), x, y, x + 20, y + 30))
            solutions.append(gt)
            predictions.append(pred if rng.random() < 0.9 else None)  # some unparsable = no boxes
        if not any(solutions) or not any(p for p in predictions):
            continue
        ap, ap50 = pycocotools_from_files(tmp_path, solutions, predictions)
        got = task.metric(predictions, samples_of(task, solutions), task.params())
        assert got == pytest.approx({"map": ap, "ap50": ap50}, abs=1e-12), trial
        assert 0.0 < got["map"] < 1.0
        checked += 1
    assert checked >= 4


def test_metric_through_parse(task):
    solutions = [[box("cat", 0, 0, 10, 10)], [box("dog", 5, 5, 20, 20)], []]
    completions = [
        '<think>t</think><answer>[{"bbox_2d": [0, 0, 10, 10], "label": " CAT"}]</answer>',
        "<think>t</think>no answer",  # unparsable: no boxes
        "<think>t</think><answer>[]</answer>",
    ]
    predictions = [task.parse(c, task.params()) for c in completions]
    assert predictions[1] is None
    got = task.metric(predictions, samples_of(task, solutions), task.params())
    # cat: found at precision 1 (AP 1); dog: nothing (AP 0) → mean over categories .5
    assert got == pytest.approx({"map": 0.5, "ap50": 0.5})


def test_degenerate_splits(task):
    params = task.params()
    a = box("a", 0, 0, 10, 10)
    assert task.metric([], [], params) == {"map": 0.0, "ap50": 0.0}
    assert task.metric([[], None], samples_of(task, [[], []]), params) == {"map": 1.0, "ap50": 1.0}
    assert task.metric([[a], None], samples_of(task, [[], []]), params) == {"map": 0.0, "ap50": 0.0}
    assert task.metric([None, []], samples_of(task, [[a], []]), params) == {"map": 0.0, "ap50": 0.0}
    huge = box("a", 0, 0, 2e5, 2e5)  # outside COCO's area range: pycocotools has nothing to average (−1)
    assert task.metric([[huge]], samples_of(task, [[huge]]), params) == {"map": 0.0, "ap50": 0.0}
    # junk that parse never returns still counts as no boxes
    assert task.metric(["junk", 3], samples_of(task, [[a], [a]]), params) == {"map": 0.0, "ap50": 0.0}


def test_metric_prints_nothing(task, capsys):
    task.metric([[box("a", 0, 0, 10, 10)]], samples_of(task, [[box("a", 0, 0, 10, 10)]]), task.params())
    assert capsys.readouterr().out == ""
