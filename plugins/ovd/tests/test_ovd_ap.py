"""Single-image AP and AP50 against pycocotools' COCOeval, the oracle, and against hand arithmetic."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vgrpo_ovd.evaluation import IOU_THRESHOLDS, box_iou, evaluate

LABELS = ["cat", "dog", "car", "cup"]


def random_scene(rng: random.Random) -> tuple[tuple, tuple]:
    """0–12 gt and 0–15 predictions over 1–4 labels: jittered copies of gt boxes (IoUs spread over the
    thresholds), wrong and hallucinated labels, repeated predictions, duplicated gt, stray boxes."""
    labels = LABELS[: rng.randint(1, 4)]
    gt: list[tuple] = []
    for _ in range(rng.randint(0, 12)):
        if gt and rng.random() < 0.1:
            gt.append(rng.choice(gt))  # a duplicated object
            continue
        x, y = rng.uniform(0, 200), rng.uniform(0, 200)
        gt.append((rng.choice(labels), x, y, x + rng.uniform(5, 60), y + rng.uniform(5, 60)))
    pred: list[tuple] = []
    for _ in range(rng.randint(0, 15)):
        r = rng.random()
        if gt and r < 0.7:
            label, x1, y1, x2, y2 = rng.choice(gt)
            s = rng.choice([0.0, 0.03, 0.08, 0.15, 0.3]) * (x2 - x1)
            box = (x1 + rng.gauss(0, s), y1 + rng.gauss(0, s), x2 + rng.gauss(0, s), y2 + rng.gauss(0, s))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            if rng.random() < 0.15:
                label = rng.choice([*labels, "unicorn"])  # wrong or hallucinated label
            pred.append((label, *box))
        elif pred and r < 0.8:
            pred.append(rng.choice(pred))  # a repeated prediction
        else:
            x, y = rng.uniform(0, 200), rng.uniform(0, 200)
            label = rng.choice([*labels, "unicorn"])
            pred.append((label, x, y, x + rng.uniform(5, 60), y + rng.uniform(5, 60)))
    return tuple(gt), tuple(pred)


def expected(coco_oracle, gt, pred) -> tuple[float, float]:
    """pycocotools' stats, with the plugin's documented rules where pycocotools has no answer (−1)."""
    if not gt or not pred:
        value = 1.0 if not gt and not pred else 0.0
        return value, value
    return tuple(max(v, 0.0) for v in coco_oracle(gt, pred))  # type: ignore[return-value]


def test_random_scenes_match_pycocotools(coco_oracle):
    rng = random.Random(20240601)
    nontrivial = 0
    for _ in range(400):
        gt, pred = random_scene(rng)
        ap, ap50 = expected(coco_oracle, gt, pred)
        got = evaluate(gt, pred)
        assert got.ap == pytest.approx(ap, abs=1e-12), (gt, pred)
        assert got.ap50 == pytest.approx(ap50, abs=1e-12), (gt, pred)
        nontrivial += 0.0 < ap < 1.0
    assert nontrivial > 250  # the scenes exercise partial matches, not just 0 and 1


def test_large_scenes_and_more_than_100_detections_per_category(coco_oracle):
    rng = random.Random(7)
    for _ in range(12):
        gt = []
        for _ in range(rng.randint(1, 20)):
            x, y = rng.uniform(0, 100), rng.uniform(0, 100)
            gt.append((rng.choice("ab"), x, y, x + rng.uniform(2, 40), y + rng.uniform(2, 40)))
        pred = []
        for _ in range(rng.randint(90, 260)):  # beyond maxDets=100 for a category: later ones are dropped
            label, x1, y1, x2, y2 = rng.choice(gt)
            s = rng.choice([0.0, 0.1, 0.3]) * (x2 - x1)
            jittered = (x1 + rng.gauss(0, s), y1 + rng.gauss(0, s), x2 + abs(rng.gauss(0, s)) + 1, y2 + 1)
            pred.append((label, *jittered))
        gt, pred = tuple(gt), tuple(pred)
        ap, ap50 = coco_oracle(gt, pred)
        got = evaluate(gt, pred)
        assert (got.ap, got.ap50) == pytest.approx((ap, ap50), abs=1e-12)


def test_boxes_outside_cocos_area_range_are_ignored_as_pycocotools_does(coco_oracle):
    # 'all' = [0, 1e5**2]: a gt larger than 1e10 px² is ignored (a det matched to it too); an unmatched
    # det that large is ignored rather than a false positive. Zero-width gt boxes have area 0 (inside).
    rng = random.Random(11)
    for _ in range(60):
        size = rng.choice([1e5, 3e5])
        gt = []
        for _ in range(rng.randint(1, 6)):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            w = 0.0 if rng.random() < 0.2 else rng.uniform(size / 10, size)
            gt.append((rng.choice("ab"), x, y, x + w, y + rng.uniform(size / 10, size)))
        pred = []
        for _ in range(rng.randint(1, 10)):
            label, x1, y1, x2, y2 = rng.choice(gt)
            s = rng.choice([0.0, 0.05, 0.2]) * size
            pred.append((label, x1 + rng.gauss(0, s), y1, x2 + abs(rng.gauss(0, s)) + 1, y2 + 1))
        gt, pred = tuple(gt), tuple(pred)
        ap, ap50 = expected(coco_oracle, gt, pred)
        got = evaluate(gt, pred)
        assert (got.ap, got.ap50) == pytest.approx((ap, ap50), abs=1e-12), (gt, pred)


def test_iou_ties_go_to_the_later_gt(coco_oracle):
    # det1 [1,0,11,10] overlaps both gts by 90/110 exactly; pycocotools gives it the later gt (g2), so det2
    # (exactly g2, IoU 80/120 = .667 with g1) only gets g1 at thresholds ≤ .65. Had det1 taken g1,
    # det2 would match g2 at every threshold and AP would be 1.
    gt = (("a", 0.0, 0.0, 10.0, 10.0), ("a", 2.0, 0.0, 12.0, 10.0))
    pred = (("a", 1.0, 0.0, 11.0, 10.0), ("a", 2.0, 0.0, 12.0, 10.0))
    got = evaluate(gt, pred)
    assert (got.ap, got.ap50) == pytest.approx(coco_oracle(gt, pred), abs=1e-12)
    assert got.ap < 1.0 and got.ap50 == 1.0


def test_hand_computed_values():
    a = ("a", 0.0, 0.0, 100.0, 100.0)
    # A perfect box: precision 1 at every recall threshold and IoU threshold; just under 1 in floating point,
    # as pycocotools adds np.spacing(1) to the precision denominator: 1/(1 + 2**-52).
    perfect = evaluate((a,), (a,))
    assert perfect[:2] == pytest.approx((1.0, 1.0), abs=1e-15)
    # IoU 7200/10000 = .72 passes the thresholds .50 .55 .60 .65 .70 (5 of 10): AP .5, AP50 1.
    assert evaluate((a,), (("a", 0.0, 0.0, 100.0, 72.0),))[:2] == pytest.approx((0.5, 1.0))
    # IoU exactly .5 (50/100) passes the first threshold only: AP 1/10, AP50 1.
    assert evaluate((a,), (("a", 0.0, 0.0, 100.0, 50.0),))[:2] == pytest.approx((0.1, 1.0))
    # Written order is the ranking: a same-label miss first halves precision (pr [0, .5] → envelope .5).
    miss = ("a", 500.0, 500.0, 600.0, 600.0)
    assert evaluate((a,), (miss, a))[:2] == pytest.approx((0.5, 0.5))
    assert evaluate((a,), (a, miss))[:2] == pytest.approx((1.0, 1.0))
    # A hallucinated label has no gt: its category is skipped, so it does not lower AP.
    assert evaluate((a,), (("dog", 500.0, 500.0, 600.0, 600.0), a))[:2] == pytest.approx((1.0, 1.0))
    # Two gts, one found: precision 1 up to recall .5, i.e. recall thresholds 0, .01, …, .50 = 51 of 101.
    b = ("a", 200.0, 0.0, 300.0, 100.0)
    assert evaluate((a, b), (a,))[:2] == pytest.approx((51 / 101, 51 / 101))
    # Two labels, one fully found, one missed: the mean over categories.
    c = ("c", 200.0, 0.0, 300.0, 100.0)
    assert evaluate((a, c), (a,))[:2] == pytest.approx((0.5, 0.5))
    # A duplicate of a found box is a false positive after it: precision stays 1 up to recall 1.
    assert evaluate((a,), (a, a))[:2] == pytest.approx((1.0, 1.0))


def test_only_the_first_100_detections_of_a_category_count(coco_oracle):
    a = ("a", 0.0, 0.0, 100.0, 100.0)
    misses = [("a", 500.0 + i, 500.0, 600.0 + i, 600.0) for i in range(100)]
    others = [("b", 0.0, 0.0, 100.0, 100.0)] * 7  # another label: not counted against a's 100
    # the hit is a's 100th detection: precision 1/100 at recall 1, so AP = .01 at every threshold
    pred = (*misses[:99], *others, a)
    assert evaluate((a,), pred)[:2] == pytest.approx((0.01, 0.01))
    assert evaluate((a,), pred)[:2] == pytest.approx(coco_oracle((a,), pred), abs=1e-12)
    # as the 101st it is dropped: AP 0
    pred = (*misses, a)
    assert evaluate((a,), pred)[:2] == (0.0, 0.0)
    assert coco_oracle((a,), pred) == (0.0, 0.0)


def test_empty_sides():
    a = ("a", 0.0, 0.0, 10.0, 10.0)
    assert evaluate((), ()) == (1.0, 1.0, 1.0, 1.0)
    assert evaluate((a,), ())[:3] == (0.0, 0.0, 0.0)
    assert evaluate((), (a,))[:3] == (0.0, 0.0, 0.0)
    # Every gt beyond COCO's area range: pycocotools averages nothing (−1); the plugin says 0.
    huge = ("a", 0.0, 0.0, 2e5, 2e5)
    assert evaluate((huge,), (huge,))[:2] == (0.0, 0.0)


def test_box_iou_matches_maskapi():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(30, 2))
    dets = np.concatenate([xy, xy + rng.uniform(0.5, 40, size=(30, 2))], axis=1)
    gxy = rng.uniform(0, 50, size=(20, 2))
    gts = np.concatenate([gxy, gxy + rng.uniform(0.0, 40, size=(20, 2))], axis=1)
    to_xywh = lambda b: [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b.tolist()]  # noqa: E731
    ref = mask_utils.iou(to_xywh(dets), to_xywh(gts), [0] * len(gts))
    assert np.array_equal(box_iou(dets, gts), ref)


def test_thresholds_are_cocos():
    assert IOU_THRESHOLDS[0] == 0.5 and len(IOU_THRESHOLDS) == 10
