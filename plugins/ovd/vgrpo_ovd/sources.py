"""Where ovd records come from besides hand-written JSONL: synthetic scenes and VLM-R1's detection data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem

#: VLM-R1's ``accu_reward_method`` values of its detection rewards (compared lower-cased).
VLM_R1_METHODS = frozenset({"od_ap", "od_ap50", "odlength", "map", "weighted_sum"})


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def synth_record(item: SynthItem) -> dict[str, Any]:
    """List 1-3 categories, some possibly absent; the solution holds the boxes of those present (or [])."""
    from vgrpo.synth import LABELS

    scene, rng = item.scene, item.rng
    present = sorted({s.label for s in scene.shapes})
    absent = [label for label in LABELS if label not in present]
    wanted: list[str] = []
    for _ in range(rng.choice((1, 2, 2, 3))):
        pool = present if present and (rng.random() < 0.65 or not absent) else absent
        choice = rng.choice(pool)
        pool.remove(choice)
        wanted.append(choice)
    order = {label: k for k, label in enumerate(wanted)}
    found = sorted(
        (s for s in scene.shapes if s.label in order), key=lambda s: (order[s.label], s.box[1], s.box[0])
    )
    return {
        "id": f"ovd-{item.name}",
        "image": item.image,
        "question": f"Find every {_join(wanted)}.",
        "solution": [{"bbox_2d": list(s.box), "label": s.label} for s in found],
        "image_size": [scene.width, scene.height],
    }


def detections(value: Any, *, strict: bool) -> list[Any] | None:
    """A list of detections; ``None``/``"None"`` is no objects. ``strict``: every item is a labelled box."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
        return []
    if not isinstance(value, list):
        return None
    if strict and not all(isinstance(d, Mapping) and "bbox_2d" in d and "label" in d for d in value):
        return None
    return value


def vlm_r1_match(record: VlmR1Record) -> tuple[float, str] | None:
    """A detection reward method names ovd; an answer of labelled boxes (or ``None``) looks like it."""
    if record.method is not None and record.method.lower() in VLM_R1_METHODS:
        return 1.0, f"accu_reward_method {record.method!r}"
    value = record.value
    labelled = isinstance(value, list) and bool(value) and detections(value, strict=True) is not None
    if record.answer == "None" or labelled:
        return 0.8, "an answer of labelled boxes"
    return None


def vlm_r1_solution(record: VlmR1Record) -> list[Any]:
    """The answer's detections (items the task checks); ``None`` or ``"None"`` is no objects."""
    found = detections(record.value, strict=False)
    if found is None:
        raise ValueError(
            'expected "None" or a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label": ...}, got '
            f"{record.quoted_answer}"
        )
    return found
