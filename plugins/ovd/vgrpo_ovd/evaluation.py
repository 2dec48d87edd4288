"""Single-image detection scores: COCO AP exactly as pycocotools computes it, and a matching F1.

pycocotools' ``COCOeval`` takes milliseconds per image; a reward runs on every completion, so this is a
vectorised numpy re-implementation of its ``bbox`` path for one image, every detection scored 1.0 (so
ranked in the order the model wrote them). Each step names the pycocotools code it mirrors; the tests
check agreement with ``COCOeval`` on many random scenes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from vgrpo_ovd.boxes import Box

# cocoeval.Params.setDetParams
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100  # per image and category, the largest of maxDets
AREA_RANGE = (0.0**2, 1e5**2)  # 'all'
F1_IOU = 0.5
MEMO_BOXES = 200_000  # boxes the memo may hold (~50 MB): thousands of typical batches' worth, few floods


class Scores(NamedTuple):
    """What the rewards need for one (ground truth, prediction) pair, computed once."""

    ap: float
    ap50: float
    f1: float
    length: float
    """min(1, n_gt / n_pred), 1.0 without predictions."""


def box_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU matrix [D, G] of ``x1, y1, x2, y2`` boxes, computed as maskApi ``bbIou`` does on ``x, y, w, h``."""
    dx, dy, dw, dh = dets[:, 0], dets[:, 1], dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]
    gx, gy, gw, gh = gts[:, 0], gts[:, 1], gts[:, 2] - gts[:, 0], gts[:, 3] - gts[:, 1]
    w = np.minimum((dw + dx)[:, None], (gw + gx)[None, :]) - np.maximum(dx[:, None], gx[None, :])
    h = np.minimum((dh + dy)[:, None], (gh + gy)[None, :]) - np.maximum(dy[:, None], gy[None, :])
    with np.errstate(all="ignore"):  # pairs that do not overlap may overflow or divide by 0: masked out below
        inter = w * h
        iou = inter / ((dw * dh)[:, None] + (gw * gh)[None, :] - inter)
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _greedy_match(ious: np.ndarray, gt_ignore: np.ndarray) -> np.ndarray:
    """COCOeval.evaluateImg's matching at every IoU threshold: gt index per [threshold, det], or -1.

    ``ious`` holds -1 for pairs of different categories. In model order, each detection takes the unmatched
    non-ignored gt of highest IoU ≥ the threshold (ties: the later gt); only without one, an ignored gt.
    The greedy loop is sequential in the detections, so it runs in Python over the sparse candidate pairs
    (IoU ≥ 0.5), pre-sorted in preference order by one numpy lexsort: far fewer operations than numpy
    calls per detection for the few candidates a detection has.
    """
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10).tolist()
    matched = np.full((len(thresholds), ious.shape[0]), -1)
    dets, gts = np.nonzero(ious >= thresholds[0])
    if not len(dets):
        return matched
    values = ious[dets, gts]
    # by det, then regular gts before ignored ones, then IoU down, then the later gt first
    order = np.lexsort((-gts, -values, gt_ignore[gts], dets))
    pairs = list(zip(dets[order].tolist(), values[order].tolist(), gts[order].tolist()))
    taken: list[set[int]] = [set() for _ in thresholds]
    start = 0
    while start < len(pairs):
        d = pairs[start][0]
        end = start + 1
        while end < len(pairs) and pairs[end][0] == d:
            end += 1
        candidates = pairs[start:end]
        for t, threshold in enumerate(thresholds):
            used = taken[t]
            for _, iou, g in candidates:
                if iou >= threshold and g not in used:
                    used.add(g)
                    matched[t, d] = g
                    break
        start = end
    return matched


def _average_precision(
    ious: np.ndarray,
    gt_cat: np.ndarray,
    gt_area: np.ndarray,
    det_cat: np.ndarray,
    pos: np.ndarray,
    det_area: np.ndarray,
) -> tuple[float, float]:
    """AP@[.5:.95] and AP@.5 as COCOeval.evaluate + accumulate + summarize give them for one image.

    Categories are ``0..K-1`` and every one has a non-ignored gt; detections are in model order, already
    truncated to ``MAX_DETS`` per category, ``pos`` being each one's rank in its category; ``ious`` is -1
    across categories.
    """
    n_t, n_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    n_k = int(gt_cat.max()) + 1
    gt_ignore = (gt_area < AREA_RANGE[0]) | (gt_area > AREA_RANGE[1])
    npig = np.bincount(gt_cat[~gt_ignore], minlength=n_k)

    # evaluateImg: matches, then ignore dets matched to ignored gts and unmatched dets outside the area range
    matched = _greedy_match(ious, gt_ignore)
    hit = matched >= 0
    det_outside = (det_area < AREA_RANGE[0]) | (det_area > AREA_RANGE[1])
    det_ignore = np.where(hit, gt_ignore[np.maximum(matched, 0)], det_outside)
    tps = hit & ~det_ignore
    fps = ~hit & ~det_ignore

    # accumulate, all categories at once: lay each category's dets out on a row padded to D_max + 1
    counts = np.bincount(det_cat, minlength=n_k)
    width = int(counts.max(initial=0)) + 1
    tp = np.zeros((n_t, n_k, width))
    fp = np.zeros((n_t, n_k, width))
    tp[:, det_cat, pos] = tps
    fp[:, det_cat, pos] = fps
    tp_sum, fp_sum = np.cumsum(tp, axis=2), np.cumsum(fp, axis=2)
    valid = np.arange(width)[None, :] < counts[:, None]
    rc = np.where(valid, tp_sum / npig[:, None], np.inf)
    pr = np.where(valid, tp_sum / (fp_sum + tp_sum + np.spacing(1)), 0.0)
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]  # the monotone precision envelope
    # np.searchsorted(rc, recThrs, side='left') per row = #{i: rc[i] < r}; recThrs[r] > rc[i] ⟺ r ≥ j[i]
    j = np.searchsorted(RECALL_THRESHOLDS, rc, side="right").reshape(n_t * n_k, width)
    offsets = (np.arange(n_t * n_k) * (n_r + 1))[:, None]
    hist = np.bincount((j + offsets).ravel(), minlength=n_t * n_k * (n_r + 1)).reshape(n_t * n_k, n_r + 1)
    inds = np.cumsum(hist[:, :n_r], axis=1)
    # an index past the last det is pycocotools' caught IndexError (precision 0): here the zero padding
    q = np.take_along_axis(pr.reshape(n_t * n_k, width), inds, axis=1)
    precision = q.reshape(n_t, n_k, n_r).transpose(0, 2, 1)  # [T, R, K] as in eval['precision']
    return float(np.mean(precision.reshape(-1))), float(np.mean(precision[0].reshape(-1)))


def _matching_f1(ious: np.ndarray) -> float:
    """F1 of a maximum one-to-one matching of same-label pairs with IoU ≥ 0.5."""
    n_d, n_g = ious.shape
    edges = ious >= F1_IOU
    per_det, per_gt = edges.sum(axis=1), edges.sum(axis=0)
    if per_det.max() <= 1 and per_gt.max() <= 1:  # disjoint pairs: every edge is a match
        tp = int(per_det.sum())
    else:
        match = maximum_bipartite_matching(csr_matrix(edges), perm_type="column")
        tp = int((match >= 0).sum())
    return 2 * tp / (n_d + n_g)  # = 2TP / (2TP + FP + FN)


class _MemoInfo(NamedTuple):
    hits: int
    misses: int
    boxes: int


class _BoxBudgetMemo:
    """An LRU memo of (gt, pred) → Scores bounded by the number of boxes its keys hold, not by entries.

    The rewards are computed one after another over a whole batch, so the memo must span a batch; a count
    bound would either be too small for big batches or hold gigabytes when a model floods 10,000 boxes.
    """

    def __init__(self, fn: Callable[[tuple[Box, ...], tuple[Box, ...]], Scores], max_boxes: int) -> None:
        self.fn, self.max_boxes = fn, max_boxes
        self._data: OrderedDict[tuple[tuple[Box, ...], tuple[Box, ...]], Scores] = OrderedDict()
        self._lock = threading.Lock()
        self._boxes = self._hits = self._misses = 0
        self.__doc__, self.__wrapped__ = fn.__doc__, fn

    def __call__(self, gt: tuple[Box, ...], pred: tuple[Box, ...]) -> Scores:
        key = (gt, pred)
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
                self._hits += 1
                return found
            self._misses += 1
        value = self.fn(gt, pred)
        size = len(gt) + len(pred) + 1
        if size > self.max_boxes // 8:  # one huge answer must not flush the batch's entries
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._boxes += size
            while self._boxes > self.max_boxes and self._data:
                (old_gt, old_pred), _ = self._data.popitem(last=False)
                self._boxes -= len(old_gt) + len(old_pred) + 1
        return value

    def cache_info(self) -> _MemoInfo:
        return _MemoInfo(self._hits, self._misses, self._boxes)

    def cache_clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._boxes = self._hits = self._misses = 0


def _evaluate(gt: tuple[Box, ...], pred: tuple[Box, ...]) -> Scores:
    """AP, AP50, F1 and length of one image's predictions (memoised as :data:`evaluate`).

    Both sides empty → 1.0; one side empty → 0.0. When every gt is outside COCO's area range (so
    pycocotools averages nothing and reports −1), AP is 0.0.
    """
    length = 1.0 if not pred else min(1.0, len(gt) / len(pred))
    if not gt or not pred:
        value = 1.0 if not gt and not pred else 0.0
        return Scores(value, value, value, length)
    labels = {label: k for k, label in enumerate(sorted({b[0] for b in gt}))}
    gt_cat = np.array([labels[b[0]] for b in gt])
    det_cat = np.array([labels.get(b[0], -1) for b in pred])
    gt_boxes = np.array([b[1:] for b in gt], dtype=float)
    det_boxes = np.array([b[1:] for b in pred], dtype=float)
    ious = np.where(det_cat[:, None] == gt_cat[None, :], box_iou(det_boxes, gt_boxes), -1.0)
    f1 = _matching_f1(ious)

    # accumulate skips categories without a non-ignored gt; evaluateImg keeps a category's first MAX_DETS dets
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    counted = (gt_area >= AREA_RANGE[0]) & (gt_area <= AREA_RANGE[1])
    kept_cats = np.unique(gt_cat[counted])
    remap = np.full(len(labels) + 1, -1)  # index -1 (labels absent from the gt) stays -1
    remap[kept_cats] = np.arange(len(kept_cats))
    det_k = remap[det_cat]
    seen: dict[int, int] = {}
    rank = []
    for k in det_k.tolist():
        rank.append(seen.get(k, 0))
        seen[k] = rank[-1] + 1
    pos = np.array(rank)
    det_keep = (det_k >= 0) & (pos < MAX_DETS)
    if not det_keep.any():
        return Scores(0.0, 0.0, f1, length)
    gt_keep = remap[gt_cat] >= 0
    kept = det_boxes[det_keep]
    ap, ap50 = _average_precision(
        ious[np.ix_(det_keep, gt_keep)],
        remap[gt_cat[gt_keep]],
        gt_area[gt_keep],
        det_k[det_keep],
        pos[det_keep],
        (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1]),
    )
    return Scores(ap, ap50, f1, length)


#: :func:`_evaluate`, memoised: accuracy, ap, ap50, f1 and length of a completion share one computation.
evaluate = _BoxBudgetMemo(_evaluate, MEMO_BOXES)
