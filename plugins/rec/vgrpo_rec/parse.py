"""Reading the predicted box out of an answer: the first ``[x1, y1, x2, y2]`` it contains.

Accepted shapes: a list of 4 numbers alone, as the value of ``bbox_2d`` (preferred) or ``bbox`` in a dict,
or inside the first element of a list (``[{"bbox_2d": [...]}, ...]``); ```json fences allowed. Valid JSON is
read with :func:`json.loads`; anything else (prose around the box, Python-style quotes, output cut off after
the box) falls back to a regex scan for the first bracketed list of four numbers. Both are linear-time.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import vgrpo

#: Answers longer than this skip the JSON reading and go straight to the scan (same first box, less work).
JSON_MAX_CHARS = 100_000

# A number as JSON or Python writes it (ASCII digits only), or a NaN/Infinity token (which makes the box
# invalid).
_NUMBER = r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|(?i:nan|inf(?:inity)?))"
# No part of the pattern after "[" can match "[", so a failed attempt never rescans text: linear overall.
_BOX = re.compile(r"\[\s*({n})\s*,\s*({n})\s*,\s*({n})\s*,\s*({n})\s*\]".format(n=_NUMBER))
_KEYS = ("bbox_2d", "bbox")
_NOT_FOUND = object()


def valid_box(box: Any) -> list[float] | None:
    """``box`` as 4 floats when it is 4 finite numbers with x2 > x1 and y2 > y1, else ``None``."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    out = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            f = float(v)
        except OverflowError:  # an int too large for a float
            return None
        if not math.isfinite(f):
            return None
        out.append(f)
    x1, y1, x2, y2 = out
    return out if x2 > x1 and y2 > y1 else None


def _is_box_shaped(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _from_json(obj: Any) -> Any:
    """The first box-shaped list per the accepted shapes, or ``_NOT_FOUND``."""
    while isinstance(obj, list) and obj and not _is_box_shaped(obj):
        obj = obj[0]  # the first element: a dict, or a nested list such as [[x1, y1, x2, y2], ...]
    if isinstance(obj, dict):
        for key in _KEYS:
            if _is_box_shaped(obj.get(key)):
                return obj[key]
        return _NOT_FOUND
    return obj if _is_box_shaped(obj) else _NOT_FOUND


def _scan(text: str) -> list[float] | None:
    match = _BOX.search(text)
    if match is None:
        return None
    try:
        return valid_box([float(g) for g in match.groups()])
    except (ValueError, OverflowError):  # pragma: no cover - the pattern only admits what float() reads
        return None


def parse_box(answer: str) -> list[float] | None:
    """The first box in ``answer`` as ``[x1, y1, x2, y2]`` floats; ``None`` if there is none or it is invalid.

    Invalid = a non-finite number, x2 <= x1 or y2 <= y1; an invalid first box is not skipped over.
    """
    text = vgrpo.strip_code_fence(answer)
    if text and text[0] in "[{" and len(text) <= JSON_MAX_CHARS:
        try:
            found = _from_json(json.loads(text))
        except (ValueError, RecursionError):
            found = _NOT_FOUND
        if found is not _NOT_FOUND:
            return valid_box(found)
    return _scan(text)
