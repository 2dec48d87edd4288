"""Reading the predicted box out of an answer: the first ``[x1, y1, x2, y2]`` in the order written.

Accepted shapes: a list of 4 numbers alone, as the value of ``bbox_2d`` (preferred) or ``bbox`` in a dict,
or inside the first element of a list (``[{"bbox_2d": [...]}, ...]``); ```json fences allowed. The answer is
read as pieces in the order written: the text before the first fence, the fence's content, the text after
it, and so on; the first piece holding a box gives it, fenced or not. A piece that is valid JSON is read
with :func:`json.loads`; anything else (prose around the box, Python-style quotes, output cut off after the
box) falls back to a regex scan for the first bracketed list of four numbers. All of it is linear-time.

Two task params change the reading, for reproducing other evaluation protocols (VLM-R1's, see
docs/evaluation.md): ``box_pick: last`` takes the last bracketed list of four numbers anywhere in the answer
(a regex scan of the whole answer, fences included), and ``integer_boxes: true`` sees only lists of four
unsigned integers written in ASCII digits (``[10.5, ...]``, ``[10.0, ...]``, ``[-1, ...]`` are not boxes and
are skipped over); with ``box_pick: first`` it is then the first such list in the order written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

#: Pieces of an answer longer than this skip the JSON reading and go straight to the scan (same first box,
#: less work).
JSON_MAX_CHARS = 100_000

# A number as JSON or Python writes it (ASCII digits only), or a NaN/Infinity token (which makes the box
# invalid).
_NUMBER = r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|(?i:nan|inf(?:inity)?))"
# No part of the pattern after "[" can match "[", so a failed attempt never rescans text: linear overall.
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
# Four unsigned integers: what an integer-only reader (box_pick/integer_boxes protocols) sees as a box.
_INT_BOX = re.compile(r"\[\s*([0-9]+)\s*,\s*([0-9]+)\s*,\s*([0-9]+)\s*,\s*([0-9]+)\s*\]")
_KEYS = ("bbox_2d", "bbox")
_NOT_FOUND = object()
_FENCE = "```"
# A fence's language tag, read as vgrpo.strip_code_fence reads it ("```json\n").
_FENCE_LANG = re.compile(r"[A-Za-z][\w+.-]*(?=\s)")


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


def _pieces(answer: str) -> Iterator[str]:
    """The answer's text outside and inside ``` fences, in the order written (fence marks and language tags
    left out). An unterminated fence (truncated output) runs to the end."""
    at = 0
    while True:
        open_at = answer.find(_FENCE, at)
        if open_at < 0:
            yield answer[at:]
            return
        yield answer[at:open_at]
        lang = _FENCE_LANG.match(answer, open_at + len(_FENCE))
        start = lang.end() if lang else open_at + len(_FENCE)
        close_at = answer.find(_FENCE, start)
        if close_at < 0:
            yield answer[start:]
            return
        yield answer[start:close_at]
        at = close_at + len(_FENCE)


def _first_box(piece: str) -> Any:
    """The first box-shaped list in one piece of the answer (JSON when it is JSON, else the scan), or
    ``_NOT_FOUND``."""
    text = piece.strip()
    if text and text[0] in "[{" and len(text) <= JSON_MAX_CHARS:
        try:
            found = _from_json(json.loads(text))
        except (ValueError, RecursionError):
            found = _NOT_FOUND
        if found is not _NOT_FOUND:
            return found
    match = _BOX.search(text)
    if match is None:
        return _NOT_FOUND
    try:
        return [float(g) for g in match.groups()]
    except (ValueError, OverflowError):  # pragma: no cover - the pattern only admits what float() reads
        return _NOT_FOUND


def _scanned_box(answer: str, pick: str, integers: bool) -> list[float] | None:
    """The first or last (``pick``) match of the box scan over the whole answer (integers only when asked)."""
    found = None
    for match in (_INT_BOX if integers else _BOX).finditer(answer):
        found = match
        if pick == "first":
            break
    if found is None:
        return None
    try:
        return valid_box([float(g) for g in found.groups()])
    except (ValueError, OverflowError):  # pragma: no cover - the patterns only admit what float() reads
        return None


def parse_box(answer: str, pick: str = "first", integers: bool = False) -> list[float] | None:
    """The first box in ``answer``, fenced or not, in the order written, as ``[x1, y1, x2, y2]`` floats;
    ``None`` if there is none or it is invalid.

    Invalid = a non-finite number, x2 <= x1 or y2 <= y1; an invalid first box is not skipped over.
    ``pick="last"`` takes the last box instead and ``integers=True`` reads only boxes of four unsigned
    integers (see the module docstring); the box picked is then not skipped over when invalid either.
    """
    if pick not in ("first", "last"):
        raise ValueError(f"expected pick 'first' or 'last', got {pick!r}")
    if pick == "last" or integers:
        return _scanned_box(answer, pick, integers)
    for piece in _pieces(answer):
        found = _first_box(piece)
        if found is not _NOT_FOUND:
            return valid_box(found)
    return None
