"""ANLS, the DocVQA answer score: average normalised Levenshtein similarity with a threshold.

For a predicted answer ``a`` and the acceptable answers ``g``: NL(a, g) = Levenshtein(a, g) / max(|a|, |g|)
on lower-cased, whitespace-collapsed text; the score is max over g of 1 - NL(a, g) when NL(a, g) < tau, else 0
(tau = 0.5, as DocVQA and ST-VQA define it). The dataset ANLS is the mean over questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

THRESHOLD = 0.5


def normalise(text: str) -> str:
    """Lower-case and collapse runs of whitespace, as the DocVQA evaluation does before comparing."""
    return " ".join(text.lower().split())


def anls(prediction: str | None, answers: Sequence[str], threshold: float = THRESHOLD) -> float:
    """The ANLS of one prediction against its acceptable answers; 0.0 when nothing was predicted."""
    if prediction is None:
        return 0.0
    pred = normalise(prediction)
    best = 0.0
    for answer in answers:
        distance = Levenshtein.normalized_distance(pred, normalise(answer))  # / max(len), 0 when both empty
        if distance < threshold:
            best = max(best, 1.0 - distance)
    return best


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when the prediction equals one of the answers after :func:`normalise`."""
    if prediction is None:
        return 0.0
    pred = normalise(prediction)
    return 1.0 if any(pred == normalise(a) for a in answers) else 0.0
