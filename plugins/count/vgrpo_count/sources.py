"""Where count records come from besides hand-written JSONL: synthetic scenes and VLM-R1's counting data."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem


def synth_record(item: SynthItem) -> dict[str, Any]:
    """Ask for a colour+kind, a kind or a colour; mostly one that is present, sometimes one absent (0)."""
    from vgrpo.synth import COLOURS, KINDS

    scene, rng = item.scene, item.rng
    roll = rng.random()
    if roll < 0.6:
        options = [(c, k) for c in sorted(COLOURS) for k in KINDS]
    elif roll < 0.8:
        options = [(None, k) for k in KINDS]
    else:
        options = [(c, None) for c in sorted(COLOURS)]
    present = [o for o in options if scene.count(colour=o[0], kind=o[1])]
    absent = [o for o in options if o not in present]
    colour, kind = rng.choice(present if present and (rng.random() < 0.8 or not absent) else absent)
    noun = f"{colour} {kind}s" if colour and kind else f"{kind}s" if kind else f"{colour} shapes"
    return {
        "id": f"count-{item.name}",
        "image": item.image,
        "question": f"How many {noun} are there?",
        "solution": scene.count(colour=colour, kind=kind),
        "image_size": [scene.width, scene.height],
    }


def whole_number(value: Any) -> int | None:
    """A count >= 0 from an int, an integral float or digits ("3", "3.0"); ``None`` for anything else."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.0*)?\s*", value):
        try:
            value = int(value.strip().split(".")[0])
        except ValueError:  # more digits than Python converts
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def vlm_r1_match(record: VlmR1Record) -> tuple[float, str] | None:
    """A whole-number answer looks like count."""
    return (0.5, "a whole-number answer") if whole_number(record.value) is not None else None


def vlm_r1_solution(record: VlmR1Record) -> int:
    """The answer as a whole number >= 0."""
    n = whole_number(record.answer)
    if n is None:
        raise ValueError(f"expected a whole number >= 0, got {record.quoted_answer}")
    return n
