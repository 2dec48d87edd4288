"""Reading boxes: validating the ground truth and parsing the model's JSON list of detections.

A detection is ``{"bbox_2d": [x1, y1, x2, y2], "label": str}`` in pixels. Everything here is linear in the
input length and never raises on model output (the ground-truth check raises ``ValueError("expected …")``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import vgrpo

#: A box as the evaluation code sees it: (normalised label, x1, y1, x2, y2).
Box = tuple[str, float, float, float, float]

# A flat JSON object: used to salvage complete items from a list that does not parse as a whole.
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}")


def normalise_label(label: str) -> str:
    """Labels compare lower-cased with surrounding whitespace removed."""
    return label.strip().lower()


def _coords(value: Any, *, strict: bool) -> tuple[float, float, float, float] | None:
    """Four finite numbers with x2 > x1 and y2 > y1 (``strict``) or ≥ (ground truth), else ``None``.

    The area (x2 − x1)·(y2 − y1) must be finite too, so that IoU is always defined.
    """
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
    try:
        x1, y1, x2, y2 = float(value[0]), float(value[1]), float(value[2]), float(value[3])
    except OverflowError:  # an int too large for a float
        return None
    if strict and not (x2 > x1 and y2 > y1):
        return None
    if not (x2 >= x1 and y2 >= y1 and math.isfinite((x2 - x1) * (y2 - y1))):  # false for NaN and inf too
        return None
    return x1, y1, x2, y2


def clean_detection(item: Any) -> dict[str, Any] | None:
    """A predicted item as ``{"bbox_2d": [...], "label": normalised}``, or ``None`` when malformed."""
    if not isinstance(item, dict):
        return None
    label = item.get("label")
    if not isinstance(label, str) or _coords(item.get("bbox_2d"), strict=True) is None:
        return None
    return {"bbox_2d": list(item["bbox_2d"]), "label": normalise_label(label)}


def _salvage(text: str) -> list[dict[str, Any]] | None:
    """The valid flat ``{…}`` items of text that is not JSON as a whole (e.g. a truncated list)."""
    found = []
    for match in _FLAT_OBJECT.finditer(text):
        chunk = match.group()
        if "bbox_2d" not in chunk:
            continue
        try:
            item = clean_detection(json.loads(chunk))
        except (ValueError, RecursionError):
            continue
        if item is not None:
            found.append(item)
    return found or None


def parse_detections(answer: str) -> list[dict[str, Any]] | None:
    """The detections in an answer: a JSON list (```json fence allowed); ``null``/``None``/``[]`` = no boxes.

    Malformed items are skipped. A lone object counts as a list of one. When the text is not JSON, the
    complete flat objects in it are salvaged; with none valid the answer is unparsable (``None``).
    """
    text = vgrpo.strip_code_fence(answer)
    if text in ("None", "none"):  # Python's spelling of JSON's null
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # bad JSON, an int past Python's digit limit, deep nesting
        return _salvage(text)
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    return [d for d in map(clean_detection, value) if d is not None]


def check_ground_truth(solution: Any) -> list[dict[str, Any]]:
    """Validated ground truth: a list of ``{"bbox_2d": [x1, y1, x2, y2], "label": str}`` (may be empty)."""
    if not isinstance(solution, list):
        raise ValueError(
            'expected a list of {"bbox_2d": [x1, y1, x2, y2], "label": str} objects, '
            f"got {type(solution).__name__}"
        )
    out = []
    for i, item in enumerate(solution):
        if not isinstance(item, dict):
            raise ValueError(f'expected item {i} to be {{"bbox_2d": [...], "label": str}}, got {item!r}')
        label = item.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"expected item {i} to have a non-empty string label, got {label!r}")
        coords = _coords(item.get("bbox_2d"), strict=False)
        if coords is None:
            raise ValueError(
                f"expected item {i} bbox_2d to be [x1, y1, x2, y2]: 4 finite numbers with x2 >= x1 and "
                f"y2 >= y1 (and a finite area), got {item.get('bbox_2d')!r}"
            )
        out.append({"bbox_2d": list(coords), "label": label})
    return out


def ground_truth_key(solution: Sequence[dict[str, Any]]) -> tuple[Box, ...]:
    """Checked ground truth (see :func:`check_ground_truth`) as hashable boxes."""
    return tuple((normalise_label(d["label"]), *map(float, d["bbox_2d"])) for d in solution)  # type: ignore


def prediction_key(parsed: Sequence[Any]) -> tuple[Box, ...]:
    """Parsed detections as hashable boxes; items that are not valid detections are skipped."""
    out = []
    for item in parsed:
        if isinstance(item, dict) and isinstance(label := item.get("label"), str):
            coords = _coords(item.get("bbox_2d"), strict=True)
            if coords is not None:
                out.append((normalise_label(label), *coords))
    return tuple(out)  # type: ignore[return-value]
