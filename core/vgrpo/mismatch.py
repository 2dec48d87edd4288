"""Sampler–trainer mismatch: how far the log-probs the generation engine sampled with are from the trainer's,
and the truncated importance-sampling correction for it (TIS, as TRL and verl apply it).

A vLLM engine and the training forward compute the same distribution with different kernels (and possibly
dtypes), so a sampled token's log-prob under the sampler, ``q``, and under the trainer's policy, ``p``, differ
a little; the gradient then comes from slightly off-policy data. The statistics below say how much; the
correction weights each token's surrogate by ``min(p / q, cap)`` (``token``) or each sequence's by
``min(prod_t p_t / q_t, cap)`` (``sequence``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from vgrpo.distributed import Distributed

CorrectionLevel = Literal["none", "token", "sequence"]


@dataclass
class MismatchStats:
    """Sums over this process's completions, so processes can be reduced into the run's figures."""

    abs_diff_sum: float = 0.0
    """Sum over completion tokens of ``|log p - log q|``."""
    abs_diff_max: float = 0.0
    tokens: float = 0.0
    seq_ratio_sum: float = 0.0
    """Sum over completions of ``exp(sum_t (log p_t - log q_t))``, the sequence's importance ratio."""
    sequences: float = 0.0

    def add(self, other: MismatchStats) -> None:
        self.abs_diff_sum += other.abs_diff_sum
        self.abs_diff_max = max(self.abs_diff_max, other.abs_diff_max)
        self.tokens += other.tokens
        self.seq_ratio_sum += other.seq_ratio_sum
        self.sequences += other.sequences

    def row(self, dist: Distributed | None = None) -> dict[str, float]:
        """``rollout/logp_diff_mean``, ``rollout/logp_diff_max`` and ``rollout/seq_ratio_mean`` over every
        process (``dist``) or this one."""
        total, tokens = self.abs_diff_sum, self.tokens
        seq_sum, seqs, top = self.seq_ratio_sum, self.sequences, self.abs_diff_max
        if dist is not None and dist.world > 1:
            total, tokens = dist.sum(total), dist.sum(tokens)
            seq_sum, seqs = dist.sum(seq_sum), dist.sum(seqs)
            top = float(dist.gather(torch.tensor([top], dtype=torch.float64)).max())
        return {
            "rollout/logp_diff_mean": total / tokens if tokens else math.nan,
            "rollout/logp_diff_max": top,
            "rollout/seq_ratio_mean": seq_sum / seqs if seqs else math.nan,
        }


def mismatch_stats(
    trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor
) -> MismatchStats:
    """The mismatch of ``[B, T]`` log-probs of the same completion tokens (``mask`` 1 on the tokens)."""
    m = mask.to(torch.float64)
    diff = (trainer_logps.double() - sampler_logps.double()) * m
    abs_diff = diff.abs()
    seq_ratio = torch.exp(diff.sum(-1))
    return MismatchStats(
        abs_diff_sum=float(abs_diff.sum()),
        abs_diff_max=float(abs_diff.max()) if abs_diff.numel() else 0.0,
        tokens=float(m.sum()),
        seq_ratio_sum=float(seq_ratio.sum()),
        sequences=float(m.size(0)),
    )


def correction_weights(
    trainer_logps: torch.Tensor,
    sampler_logps: torch.Tensor,
    mask: torch.Tensor,
    level: CorrectionLevel,
    cap: float,
) -> torch.Tensor | None:
    """``[B, T]`` truncated importance weights (no gradient) that multiply each token's surrogate loss; None
    with ``level`` ``none``. ``token``: ``min(exp(log p_t - log q_t), cap)``; ``sequence``: every token of a
    completion gets ``min(exp(sum_t (log p_t - log q_t)), cap)``. Masked positions get 1."""
    if level == "none":
        return None
    if level not in ("token", "sequence"):
        raise ValueError(f"rollout correction: expected 'none', 'token' or 'sequence', got {level!r}")
    if not cap > 0:
        raise ValueError(f"rollout correction cap: expected a number > 0, got {cap!r}")
    m = mask.to(torch.float64)
    log_ratio = (trainer_logps.detach().double() - sampler_logps.detach().double()) * m
    log_cap = math.log(cap)
    if level == "token":
        weights = torch.exp(log_ratio.clamp(max=log_cap))
    else:
        weights = torch.exp(log_ratio.sum(-1, keepdim=True).clamp(max=log_cap)).expand_as(log_ratio)
    weights = torch.where(m != 0, weights, torch.ones_like(weights))
    return weights.to(torch.float32)
