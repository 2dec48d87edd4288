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
    all (``none``, Dr. GRPO). A group whose rewards are all equal gets exactly zero advantages: it carries no
    signal. That is the one difference from TRL's arithmetic, which leaves the rounding of the group mean
    there (up to about ±1e-3 in float32 once divided by ``std + 1e-4``); every other group gets TRL's values.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"expected a flat reward vector of a multiple of {group_size} items, got {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    all_equal = (grouped.amax(dim=1) == grouped.amin(dim=1)).repeat_interleave(group_size)
    if scale == "none":
        advantages = centred
    elif scale == "group":
        advantages = centred / (_std(grouped, dim=1).repeat_interleave(group_size) + EPS)
    elif scale == "batch":
        std = _std(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = centred / (std + EPS)
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    # after the division: a group of one has a NaN std, and 0 / NaN would be NaN
    return advantages.masked_fill(all_equal, 0.0)
