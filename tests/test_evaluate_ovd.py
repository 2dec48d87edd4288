"""The dataset-level OVD metric of `vgrpo eval` against pycocotools, run directly on a synthetic split."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import vgrpo
from vgrpo.data import load_jsonl
from vgrpo.evaluate import EvalSplit, evaluate
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.synth import LABELS, synthesize


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    paths = synthesize(tmp_path_factory.mktemp("data"), n_per_task=40, n_val=0, seed=11, tasks=["ovd"])
    task = vgrpo.get_registry().task("ovd")
    return task, load_jsonl(paths["ovd"], task)


def model_answers(samples, seed: int) -> list[list[dict] | None]:
    """What a detector might write per image: ground-truth boxes jittered (up to badly), some missed, some
    extra (labels asked for or not), labels in another case; None for an answer that did not parse."""
    rng = random.Random(seed)
    answers: list[list[dict] | None] = []
    for s in samples:
        if rng.random() < 0.08:
            answers.append(None)
            continue
        boxes = []
        for gt in s.solution:
            if rng.random() < 0.2:
                continue  # missed
            x1, y1, x2, y2 = gt["bbox_2d"]
            w, h = x2 - x1, y2 - y1
            jitter = rng.choice([0.0, 0.03, 0.1, 0.25])
            nx1, ny1 = x1 + rng.gauss(0, jitter * w), y1 + rng.gauss(0, jitter * h)
            nx2 = max(nx1 + 1, x2 + rng.gauss(0, jitter * w))
            ny2 = max(ny1 + 1, y2 + rng.gauss(0, jitter * h))
            label = gt["label"].upper() if rng.random() < 0.2 else gt["label"]
            boxes.append({"bbox_2d": [round(v, 2) for v in (nx1, ny1, nx2, ny2)], "label": label})
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            x, y = rng.uniform(0, 150), rng.uniform(0, 150)
            boxes.append(
                {
                    "bbox_2d": [x, y, x + rng.uniform(8, 60), y + rng.uniform(8, 60)],
                    "label": rng.choice(LABELS),
                }
            )
        rng.shuffle(boxes)
        answers.append(boxes)
    return answers


def completion(answer: list[dict] | None) -> str:
    if answer is None:
        return "<think>there are some shapes</think> I cannot say."
    return f"<think>found them</think><answer>{json.dumps(answer)}</answer>"


def pycocotools_map(samples, predictions) -> tuple[float, float]:
    """COCO AP@[.5:.95] and AP@.5 from pycocotools itself: ground truth from the records, every detection
    scored so that the ranking is image order, then the order written (what equal scores mean to vgrpo)."""
    norm = [(p or []) for p in predictions]
    labels = sorted(
        {b["label"].strip().lower() for s in samples for b in s.solution}
        | {b["label"].strip().lower() for p in norm for b in p},
        reverse=True,
    )
    category = {label: 7 + 3 * i for i, label in enumerate(labels)}
    images, annotations, detections = [], [], []
    total = sum(len(p) for p in norm)
    for image_id, (s, boxes) in enumerate(zip(samples, norm), start=501):
        w, h = s.image_size
        images.append({"id": image_id, "width": w, "height": h, "file_name": s.images[0]})
        for b in s.solution:
            x1, y1, x2, y2 = b["bbox_2d"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category[b["label"].strip().lower()],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for b in boxes:
            x1, y1, x2, y2 = b["bbox_2d"]
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category[b["label"].strip().lower()],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0 - len(detections) / (2 * total),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category.items()],
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ovd_dataset_metric_equals_pycocotools_on_a_synthetic_split(split, seed):
    task, samples = split
    answers = model_answers(samples, seed)
    parsed = [task.parse(completion(a), task.params()) for a in answers]
    assert sum(p is None for p in parsed) == sum(a is None for a in answers)
    ap, ap50 = pycocotools_map(samples, parsed)
    got = task.metric(parsed, samples, task.params())
    assert got["map"] == pytest.approx(ap, abs=1e-9) and got["ap50"] == pytest.approx(ap50, abs=1e-9)
    assert 0.05 < got["map"] < got["ap50"] < 1.0  # a split where the metric has something to measure


def test_vgrpo_eval_reports_the_pycocotools_map_of_its_predictions(split, tmp_path):
    """The whole evaluation path (predictions.jsonl → parsed rows → split metric) on a synthetic split."""
    task, samples = split
    answers = model_answers(samples, 5)
    out = tmp_path / "eval"
    out.mkdir()
    rows = [
        {
            "task": "ovd",
            "id": s.id,
            "max_new_tokens": 256,
            "completion": completion(a),
            "parsed": task.parse(completion(a), task.params()),
            "input_size": None,
            "error": None,
        }
        for s, a in zip(samples, answers)
    ]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    metrics = evaluate(model, processor, adapter, [EvalSplit(task, task.params(), samples)], out)["ovd"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == len(samples)  # nothing generated
    ap, ap50 = pycocotools_map(samples, [r["parsed"] for r in rows])
    assert metrics["map"] == pytest.approx(ap, abs=1e-9) and metrics["ap50"] == pytest.approx(ap50, abs=1e-9)
    unparsed = sum(a is None for a in answers)
    assert metrics["unparsed"] == unparsed
    assert metrics["parse_rate"] == pytest.approx(1 - unparsed / len(samples))
    assert metrics["n"] == len(samples)
