"""Advantages and the GRPO loss equal TRL 1.x's on identical inputs (TRL's own code is the oracle)."""

from __future__ import annotations

import math

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import nanstd

from vgrpo.advantages import group_advantages
from vgrpo.loss import grpo_loss


def _trl_advantages(rewards: torch.Tensor, g: int, scale: str) -> torch.Tensor:
    # TRL 1.x, _generate_and_score_completions, "sum_then_normalize" (the default), written out.
    mean = rewards.view(-1, g).mean(dim=1).repeat_interleave(g)
    if scale == "batch":
        std = nanstd(rewards).expand_as(rewards)
    else:
        std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g)
    adv = rewards - mean
    return adv if scale == "none" else adv / (std + 1e-4)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale):
    torch.manual_seed(0)
    rewards = torch.rand(24, dtype=torch.float64) * 3
    rewards[:6] = 1.5  # a group with zero std gets zero advantages
    ours = group_advantages(rewards, 6, scale)
    torch.testing.assert_close(ours, _trl_advantages(rewards, 6, scale))
    assert torch.all(ours[:6] == 0)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_match_trl(loss_type, level, beta, trl_trainer):
    torch.manual_seed(1)
    b, t, max_len = 6, 9, 12
    base = -torch.rand(b, t, dtype=torch.float64) * 3
    # ratios both inside and outside the clip range, per token and per sequence
    old = base + 0.3 * torch.randn(b, t, dtype=torch.float64) + 0.4 * torch.randn(b, 1, dtype=torch.float64)
    ref = base + 0.2 * torch.randn(b, t, dtype=torch.float64)
    mask = torch.ones(b, t, dtype=torch.float64)
    mask[0, 5:] = 0
    mask[3, 2:] = 0
    adv = torch.randn(b, dtype=torch.float64)
    eps, eps_high = 0.2, 0.28

    ours_logps = base.clone().requires_grad_(True)
    ours = grpo_loss(
        ours_logps,
        old,
        adv,
        mask,
        loss_type=loss_type,
        epsilon=eps,
        epsilon_high=eps_high,
        beta=beta,
        ref_logps=ref,
        importance_sampling_level=level,
        max_completion_length=max_len,
    )
    ours.loss.backward()

    trl_logps = base.clone().requires_grad_(True)
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    fake = trl_trainer(
        trl_logps, loss_type=loss_type, beta=beta, eps=eps, eps_high=eps_high, level=level, max_len=max_len
    )
    trl_loss = GRPOTrainer._compute_loss(fake, None, inputs)
    trl_loss.backward()

    torch.testing.assert_close(ours.loss, trl_loss.detach())
    torch.testing.assert_close(ours_logps.grad, trl_logps.grad)
    region = fake._metrics["train"]["clip_ratio/region_mean"][0]
    assert ours.clip_ratio.item() == pytest.approx(region)
    assert 0 < region < 1  # the inputs exercise clipping
    if beta:
        assert ours.kl.item() == pytest.approx(fake._metrics["train"]["kl"][0])


def test_on_policy_ratio_is_one_and_the_gradient_is_the_advantage():
    logps = torch.full((2, 3), -1.0, requires_grad=True)
    out = grpo_loss(logps, None, torch.tensor([1.0, -1.0]), torch.ones(2, 3), loss_type="bnpo")
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.clip_ratio.item() == 0.0
    torch.testing.assert_close(logps.grad, torch.tensor([[-1.0] * 3, [1.0] * 3]) / 6)


def test_bad_arguments_are_named():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(x, None, torch.zeros(1), x + 1, beta=0.1)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(x, None, torch.zeros(1), x + 1, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="multiple of 4"):
        group_advantages(torch.zeros(6), 4)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("value", [0.1, 0.7, 1 / 3, 0.9])
def test_all_equal_groups_get_exactly_zero_advantages_in_float32(scale, value):
    # TRL's arithmetic leaves float rounding in an all-equal group: mean(0.7 x 8) != 0.7 in float32, and the
    # residue divided by (std + 1e-4) is ~6e-4. vgrpo sets such a group to exactly 0: the one, documented,
    # difference from TRL's advantages.
    torch.manual_seed(2)
    rewards = torch.rand(32) * 3
    rewards[8:16] = value
    ours = group_advantages(rewards, 8, scale)
    trl = _trl_advantages(rewards, 8, scale)
    assert torch.all(ours[8:16] == 0)
    assert trl[8:16].abs().max() > 0  # TRL's residue
    keep = torch.ones(32, dtype=torch.bool)
    keep[8:16] = False
    torch.testing.assert_close(ours[keep], trl[keep])  # every other group: TRL's values, same arithmetic


def test_a_group_of_one_has_zero_advantage():
    assert torch.equal(group_advantages(torch.tensor([0.3, 2.0]), 1, "group"), torch.zeros(2))


def test_token_level_clip_ratio_of_one_token_completions_counts_tokens_not_masked_rows():
    # [B, 1]: every completion has at most one token; rows 1 and 3 are empty. TRL's definition: the masked
    # mean over completion tokens (TRL's own code guesses "sequence level" from the width 1 and counts the
    # empty rows; vgrpo decides by importance_sampling_level).
    logps = torch.zeros(4, 1)
    old = torch.tensor(
        [[1.0], [0.0], [0.0], [0.0]]
    )  # row 0: ratio e^-1 < 0.8, clipped with a negative advantage
    ref = torch.tensor([[0.5], [0.0], [0.0], [0.0]])
    mask = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    adv = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    out = grpo_loss(logps, old, adv, mask, beta=0.1, ref_logps=ref)
    assert out.clip_ratio.item() == pytest.approx(1 / 2)  # 1 of 2 tokens, not 1 of 4 rows
    assert out.kl.item() == pytest.approx((math.exp(0.5) - 0.5 - 1) / 2)
    seq = grpo_loss(logps, old, adv, mask, importance_sampling_level="sequence")
    assert seq.clip_ratio.item() == pytest.approx(1 / 4)  # sequence level: the share of sequences (rows)
