"""The named data of one GRPO step, as it passes from stage to stage (never positional tuples).

prompts ──generate──▶ Generation (rollout + rewards) ──advantages, old/ref log-probs──▶ MicroBatch ──▶ loss
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vgrpo.metrics import StepStats
from vgrpo.rollout import Rollout
from vgrpo.task import Sample


@dataclass
class Generation:
    """One micro-batch of this process as generated and scored: G completions per prompt, groups contiguous."""

    rollout: Rollout
    entries: list[int]
    """The mixture entry of each row."""
    samples: list[Sample]
    """Each row's sample, with ``input_size`` as the model saw its image."""
    rewards: torch.Tensor
    """``[rows]`` this process's weighted rewards."""
    all_rewards: torch.Tensor
    """``[rows × processes]`` every process's rewards in rank order: advantages see the whole batch."""
    stats: StepStats
    """This process's per-completion statistics."""


@dataclass
class MicroBatch:
    """What one loss computation needs: the completions, their advantages and the fixed log-probs."""

    rollout: Rollout
    advantages: torch.Tensor
    """``[rows]`` group-normalised advantages of this process's rows."""
    mask: torch.Tensor
    """``[rows, T]`` the tokens the loss counts (completion mask, truncated rows dropped if configured)."""
    old_logps: torch.Tensor | None
    """``[rows, T]`` log-probs under the policy that sampled (``num_iterations`` > 1), else None."""
    ref_logps: torch.Tensor | None
    """``[rows, T]`` log-probs under the reference model (``beta`` > 0), else None."""
    token_weights: torch.Tensor | None = None
    """``[rows, T]`` the rollout correction's truncated importance weights (:mod:`vgrpo.mismatch`), else None."""
