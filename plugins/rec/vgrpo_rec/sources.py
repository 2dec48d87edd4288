"""Where rec records come from besides hand-written JSONL: synthetic scenes and VLM-R1's REC data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem

#: VLM-R1's REC question template, before the referring expression.
_REC_PREFIX = re.compile(
    r"^\s*please provide the bounding box coordinates? of the region this sentence describes:\s*",
    re.IGNORECASE,
)


def synth_record(item: SynthItem) -> dict[str, Any]:
    """Name one shape of the scene unambiguously; the solution is its box."""
    from vgrpo.synth import referring_expressions

    scene = item.scene
    i, phrase = item.rng.choice(referring_expressions(scene))
    return {
        "id": f"rec-{item.name}",
        "image": item.image,
        "question": phrase,
        "solution": list(scene.shapes[i].box),
        "image_size": [scene.width, scene.height],
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def answer_box(value: Any) -> list[Any] | None:
    """``[x1, y1, x2, y2]`` from a bare list, ``{"bbox_2d"|"bbox": ...}`` or a one-item list of such dicts."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        value = value[0]
    if isinstance(value, Mapping):
        value = value.get("bbox_2d", value.get("bbox"))
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        return value
    return None


def vlm_r1_match(record: VlmR1Record) -> tuple[float, str] | None:
    """A box answer looks like rec (less specific than OVD's labelled boxes)."""
    return (0.6, "a box answer") if answer_box(record.value) is not None else None


def vlm_r1_question(record: VlmR1Record) -> str:
    """The referring expression alone: the REC annotation's caption, else the question without VLM-R1's
    prefix and final full stop."""
    if record.caption and record.caption.strip():
        return record.caption.strip()
    text = _REC_PREFIX.sub("", record.question).strip().rstrip(".").strip()
    if not text:
        raise ValueError("expected a question (a referring expression for rec), got empty text")
    return text


def vlm_r1_solution(record: VlmR1Record) -> list[Any]:
    """A box (or a polygon ``[[x, y], ...]``, which the task checks) from the answer."""
    value = record.value
    box = answer_box(value)
    if box is not None:
        return box
    if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
        return value
    raise ValueError(
        f'expected a box [x1, y1, x2, y2] or {{"bbox_2d": [x1, y1, x2, y2]}}, got {record.quoted_answer}'
    )
