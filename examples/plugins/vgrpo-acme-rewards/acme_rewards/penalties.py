"""Penalties for degenerate completions, usable by any task: repeated n-grams and overlong text.

Both are rewards in [-1, 0]: 0 for a healthy completion, down to -1. A config adds them to a task's rewards
with a positive weight, e.g. ``rewards: {accuracy: 1, format: 1, acme.repetition_penalty: 0.5}``.
"""

from __future__ import annotations

import vgrpo

NGRAM = 3
SOFT_CHARS, HARD_CHARS = 1024, 2048


def repeated_ngram_ratio(text: str, n: int = NGRAM) -> float:
    """Share of the word n-grams of ``text`` repeating an earlier one: 0 without repeats, near 1 in a loop."""
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(words[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


@vgrpo.reward("acme.repetition_penalty", range=(-1.0, 0.0), batched=True)
def repetition_penalty(completions: list[str]) -> list[float]:
    """Minus the share of repeated word 3-grams: 0 for varied text, towards -1 for a completion in a loop."""
    return [0.0 - repeated_ngram_ratio(c) for c in completions]


def soft_length_penalty(length: int, soft: int, hard: int) -> float:
    """0 up to ``soft``, then linear down to -1 at ``hard`` and beyond (DAPO's soft overlong punishment)."""
    if length <= soft:
        return 0.0
    if length >= hard:
        return -1.0
    return -(length - soft) / (hard - soft)


def make_length_penalty(name: str, soft_chars: int, hard_chars: int) -> vgrpo.Reward:
    """A length penalty with its own limits, in characters; register it from your own plugin's hook."""
    if not 0 <= soft_chars < hard_chars:
        raise ValueError(f"expected 0 <= soft_chars < hard_chars, got {soft_chars} and {hard_chars}")

    def length_penalty(completion: str) -> float:
        return soft_length_penalty(len(completion), soft_chars, hard_chars)

    return vgrpo.Reward(
        name=name,
        fn=length_penalty,
        range=(-1.0, 0.0),
        description=f"0 up to {soft_chars:,} characters, falling linearly to -1 at {hard_chars:,} and more.",
    )


length_penalty = make_length_penalty("acme.length_penalty", SOFT_CHARS, HARD_CHARS)
