"""Group-relative advantages (TRL 1.x semantics): reward minus its group mean, optionally scaled by a std."""

from __future__ import annotations

from typing import Literal

import torch

EPS = 1e-4  # added to the std before dividing, as TRL does


def _std(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased standard deviation (Bessel-corrected), like TRL's nanstd on NaN-free input."""
    return x.std(dim=dim, unbiased=True) if dim is not None else x.std(unbiased=True)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Literal["group", "batch", "none"] = "group"
) -> torch.Tensor:
    """Advantages for rewards laid out group after group (``[g0 c0..cG-1, g1 c0..]``), shape ``[B]``.

    ``scale``: divide by the group's reward std (``group``, GRPO), by the whole batch's (``batch``), or not at
    all (``none``, Dr. GRPO). A group whose rewards are all equal gets zero advantages.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"expected a flat reward vector of a multiple of {group_size} items, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = _std(grouped, dim=1).repeat_interleave(group_size)
    elif scale == "batch":
        std = _std(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return centred / (std + EPS)
