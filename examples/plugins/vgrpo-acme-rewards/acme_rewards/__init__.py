"""vgrpo-acme-rewards: an example reward-only vgrpo plugin.

It provides no task: its ``vgrpo_rewards`` hook registers rewards that any task may weight from a config.
Third-party reward names are dotted (``acme.repetition_penalty``).
"""

from __future__ import annotations

import vgrpo
from acme_rewards.penalties import (
    length_penalty,
    make_length_penalty,
    repeated_ngram_ratio,
    repetition_penalty,
)

__all__ = ["length_penalty", "make_length_penalty", "repeated_ngram_ratio", "repetition_penalty"]


@vgrpo.hookimpl
def vgrpo_rewards() -> list[vgrpo.Reward]:
    """``acme.repetition_penalty`` and ``acme.length_penalty``."""
    return [repetition_penalty, length_penalty]
