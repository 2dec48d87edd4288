"""The GRPO policy loss (TRL 1.x semantics) and its clipping/KL statistics: :func:`grpo_loss` from per-token
log-probs — the reference formulation, used with ``logprobs: naive`` and to check the fused kernels — and
:func:`policy_loss`, the loss of a micro-batch under a model, fused or naive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from vgrpo.batch import MicroBatch
    from vgrpo.config import GrpoConfig
    from vgrpo.models.adapters import ModelAdapter

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


@dataclass
class LossOutput:
    """The loss to backpropagate and detached statistics for logging."""

    loss: torch.Tensor
    kl: torch.Tensor
    clip_ratio: torch.Tensor


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    importance_sampling_level: Literal["token", "sequence"] = "token",
    max_completion_length: int | None = None,
    num_items: float | torch.Tensor | None = None,
    token_weights: torch.Tensor | None = None,
) -> LossOutput:
    """Clipped-surrogate loss with optional k3 KL, normalised per ``loss_type``.

    Shapes: ``logps``/``old_logps``/``ref_logps``/``mask`` ``[B, T]``, ``advantages`` ``[B]``.
    ``old_logps=None`` means on-policy (ratio 1, gradient still flows). Normalisers: ``grpo`` mean per
    sequence then over sequences; ``bnpo`` masked tokens of this batch; ``dr_grpo`` ``B * max_completion_length``;
    ``dapo`` ``num_items`` (masked tokens of the whole optimizer step across processes; default: this batch's).
    Gradient accumulation scaling is the caller's. ``token_weights`` ``[B, T]`` (no gradient) multiply each
    token's surrogate, not its KL term: the rollout correction of :mod:`vgrpo.mismatch` (TRL's placement).
    """
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    log_ratio = logps - old
    if importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    elif importance_sampling_level != "token":
        raise ValueError(
            f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}"
        )
    ratio = torch.exp(log_ratio)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    adv = advantages.unsqueeze(1)
    if (
        token_weights is not None
    ):  # weights > 0: the same as weighting the surrogate, signs (clipping) unchanged
        adv = adv * token_weights.detach().to(logps.dtype)
    per_token = -torch.min(ratio * adv, clipped * adv)

    kl = torch.zeros_like(logps)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps (log-probs of the frozen reference model)")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl

    masked_sum = (per_token * mask).sum()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked_sum / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
        loss = masked_sum / (per_token.size(0) * max_completion_length)
    elif loss_type == "dapo":
        denom = mask.sum() if num_items is None else torch.as_tensor(num_items, dtype=logps.dtype)
        loss = masked_sum / denom.clamp(min=1.0)
    else:
        raise ValueError(f"loss_type must be one of grpo, bnpo, dr_grpo, dapo; got {loss_type!r}")

    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)
        low = (ratio < 1 - epsilon) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        region = (low | high).to(logps.dtype)
        # Decided by the level, not by the shape: a batch of one-token completions is [B, 1] at token
        # level too, and its masked rows (empty completions) are not tokens. TRL 1.x guesses the level from
        # the shape there, so it counts those rows; vgrpo follows TRL's definition (a masked mean over tokens).
        if importance_sampling_level == "sequence":  # the share of sequences, every row, as TRL reports it
            clip_ratio = region.mean()
        else:
            clip_ratio = (region * mask).sum() / tokens
        mean_kl = (kl * mask).sum() / tokens  # a masked mean over tokens at either level
    return LossOutput(loss=loss, kl=mean_kl, clip_ratio=clip_ratio)


def policy_loss(
    model: Any,
    adapter: ModelAdapter,
    batch: MicroBatch,
    grpo: GrpoConfig,
    *,
    temperature: float,
    max_completion_length: int,
    num_items: float,
    fused: bool = True,
) -> LossOutput:
    """The GRPO loss of one micro-batch under ``model``: the fused kernels straight from the hidden states
    (``fused``; no ``[N, T, V]`` logits), or log_softmax log-probs + :func:`grpo_loss`. Call it inside the wrapped
    model's forward (:meth:`vgrpo.distributed.Distributed.forward`) so DDP and ZeRO-3 see it."""
    from vgrpo.distributed import run_as_forward
    from vgrpo.rollout import completion_hidden, completion_logprobs

    common: dict[str, Any] = {
        "loss_type": grpo.loss_type,
        "epsilon": grpo.epsilon,
        "epsilon_high": grpo.epsilon_high,
        "beta": grpo.beta,
        "importance_sampling_level": grpo.importance_sampling_level,
        "max_completion_length": max_completion_length,
        "num_items": num_items,
        "token_weights": getattr(batch, "token_weights", None),
    }
    rollout = batch.rollout
    if not fused:
        logps = completion_logprobs(model, adapter, rollout, temperature=temperature, impl="naive")
        return grpo_loss(
            logps, batch.old_logps, batch.advantages, batch.mask, ref_logps=batch.ref_logps, **common
        )
    from vgrpo.kernels import fused_grpo_loss

    hidden, head = completion_hidden(model, adapter, rollout)

    def head_loss(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # runs as the lm_head's forward, so ZeRO-3 gathers its weight; a plain tuple out, because DeepSpeed only
        # sees tensors in tuples when it hooks the outputs to gather the weight again for the backward
        out = fused_grpo_loss(
            h,
            head.weight,
            rollout.completion_ids,
            batch.advantages,
            batch.mask,
            old_logps=batch.old_logps,
            ref_logps=batch.ref_logps,
            temperature=temperature,
            bias=getattr(head, "bias", None),
            **common,
        )
        return out.loss, out.kl, out.clip_ratio

    return LossOutput(*run_as_forward(head, head_loss, hidden))
