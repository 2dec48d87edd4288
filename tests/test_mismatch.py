"""Sampler–trainer mismatch statistics and the truncated importance-sampling correction, against hand
computations on constructed log-probs; the correction inside the loss (naive and fused) against a hand-weighted
surrogate."""

from __future__ import annotations

import math

import pytest
import torch

from vgrpo.kernels import fused_grpo_loss
from vgrpo.loss import grpo_loss
from vgrpo.mismatch import MismatchStats, correction_weights, mismatch_stats

# two completions of three tokens, the second of two (its last position masked)
TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]])
SAMPLER = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -1.2, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
# trainer - sampler on the tokens: [0.5, -1.0, 0.0] and [-0.2, 0.0]


def test_mismatch_statistics_by_hand():
    stats = mismatch_stats(TRAINER, SAMPLER, MASK)
    row = stats.row()
    assert row["rollout/logp_diff_mean"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.2 + 0.0) / 5)
    assert row["rollout/logp_diff_max"] == pytest.approx(1.0)
    # sequence ratios exp(0.5 - 1.0 + 0) and exp(-0.2 + 0), their mean
    assert row["rollout/seq_ratio_mean"] == pytest.approx((math.exp(-0.5) + math.exp(-0.2)) / 2)


def test_mismatch_statistics_add_up_over_micro_batches():
    total = MismatchStats()
    total.add(mismatch_stats(TRAINER[:1], SAMPLER[:1], MASK[:1]))
    total.add(mismatch_stats(TRAINER[1:], SAMPLER[1:], MASK[1:]))
    assert total.row() == pytest.approx(mismatch_stats(TRAINER, SAMPLER, MASK).row())


def test_token_level_correction_by_hand():
    w = correction_weights(TRAINER, SAMPLER, MASK, "token", cap=1.5)
    expected = [[1.5, math.exp(-1.0), 1.0], [math.exp(-0.2), 1.0, 1.0]]  # exp(0.5) = 1.65 capped at 1.5
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_sequence_level_correction_by_hand():
    w = correction_weights(TRAINER, SAMPLER, MASK, "sequence", cap=0.7)
    first, second = math.exp(-0.5), min(math.exp(-0.2), 0.7)  # 0.607; 0.819 capped at 0.7
    expected = [[first] * 3, [second, second, 1.0]]
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_no_correction_and_bad_settings():
    assert correction_weights(TRAINER, SAMPLER, MASK, "none", cap=2.0) is None
    with pytest.raises(ValueError, match="'none', 'token' or 'sequence'"):
        correction_weights(TRAINER, SAMPLER, MASK, "tokens", cap=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cap"):
        correction_weights(TRAINER, SAMPLER, MASK, "token", cap=0.0)


def test_the_loss_weights_each_tokens_surrogate_but_not_its_kl():
    """dapo loss by hand: on-policy the ratio is 1, so each token's surrogate is -A * w; the KL is added
    unweighted; the sum is divided by the number of tokens."""
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0, -0.5], [-0.3, -1.2, -9.0]])
    adv = torch.tensor([2.0, -1.0])
    w = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.25, 1.0]])
    beta = 0.1
    out = grpo_loss(logps, None, adv, MASK, beta=beta, ref_logps=ref, token_weights=w, loss_type="dapo")
    kl_12 = math.exp(1.0) - 1.0 - 1.0  # k3 of the one token whose reference differs: delta = ref - logp = 1
    surrogate = -(2.0 * (0.5 + 1.0 + 2.0)) - (-1.0 * (1.5 + 0.25))
    assert float(out.loss.detach()) == pytest.approx((surrogate + beta * kl_12) / 5)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_fused_and_naive_losses_agree_with_token_weights(level):
    torch.manual_seed(0)
    b, t, h, v = 3, 5, 8, 11
    hidden = torch.randn(b, t, h, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float32)
    targets = torch.randint(0, v, (b, t))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float32)
    old = torch.randn(b, t, dtype=torch.float32) * 0.1 - 2.0
    w = torch.rand(b, t) + 0.5
    common = {"importance_sampling_level": level, "loss_type": "dapo"}
    logps = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    naive = grpo_loss(logps, old, adv, mask, token_weights=w, **common)
    fused = fused_grpo_loss(hidden, weight, targets, adv, mask, old_logps=old, token_weights=w, **common)
    assert float(fused.loss.detach()) == pytest.approx(float(naive.loss.detach()), rel=1e-5)
    (g_naive,) = torch.autograd.grad(naive.loss, hidden)
    fused.loss.backward()
    torch.testing.assert_close(hidden.grad, g_naive, atol=1e-5, rtol=1e-4)
    unweighted = grpo_loss(logps.detach(), old, adv, mask, **common)
    assert float(unweighted.loss) != pytest.approx(
        float(naive.loss.detach())
    )  # the weights do change the loss
