"""fused_grpo_loss equals TRL 1.x's _compute_loss (and vgrpo.loss.grpo_loss) on log_softmax + gather log-probs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trl import GRPOTrainer

from vgrpo.bench.gpu_kernels import LargestTensor
from vgrpo.kernels import fused_grpo_loss
from vgrpo.loss import grpo_loss

B, T, H, V = 6, 9, 16, 67
MAX_LEN = 12


def batch(seed=0, temperature=0.9, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hid = torch.randn(B, T, H, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(V, H, generator=gen) * 0.5).to(dtype).requires_grad_(True)
    ids = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.ones(B, T)
    mask[0, 5:] = 0
    mask[3, 2:] = 0
    mask[5, :] = 0  # a completion with no tokens
    ids[mask == 0] = -1  # padding ids are never looked at
    with torch.no_grad():
        base = naive_logps(hid, w, ids, temperature)
    # ratios inside and outside the clip range, per token and per sequence
    old = base + 0.3 * torch.randn(B, T, generator=gen) + 0.4 * torch.randn(B, 1, generator=gen)
    ref = base + 0.2 * torch.randn(B, T, generator=gen)
    adv = torch.randn(B, generator=gen)
    return hid, w, ids, mask, old, ref, adv


def naive_logps(hid, w, ids, temperature):
    z = (hid.float() @ w.float().t()) / temperature
    return F.log_softmax(z, -1).gather(-1, ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("chunk_size", [4, 13, None])
def test_loss_and_gradients_match_trl(loss_type, level, beta, chunk_size, trl_trainer):
    temperature, eps, eps_high = 0.9, 0.2, 0.28
    hid, w, ids, mask, old, ref, adv = batch()
    out = fused_grpo_loss(
        hid,
        w,
        ids,
        adv,
        mask,
        old_logps=old,
        ref_logps=ref,
        loss_type=loss_type,
        epsilon=eps,
        epsilon_high=eps_high,
        beta=beta,
        importance_sampling_level=level,
        max_completion_length=MAX_LEN,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    gh, gw = torch.autograd.grad(out.loss, (hid, w))

    rh, rw = hid.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    logps = naive_logps(rh, rw, ids, temperature)
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": ids.clamp(min=0),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    fake = trl_trainer(
        logps, loss_type=loss_type, beta=beta, eps=eps, eps_high=eps_high, level=level, max_len=MAX_LEN
    )
    trl_loss = GRPOTrainer._compute_loss(fake, None, inputs)
    th, tw = torch.autograd.grad(trl_loss, (rh, rw))

    torch.testing.assert_close(out.loss, trl_loss.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gh, th, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(gw, tw, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(out.logps, logps.detach() * mask, atol=1e-5, rtol=1e-5)
    assert out.clip_ratio.item() == pytest.approx(
        fake._metrics["train"]["clip_ratio/region_mean"][0], abs=1e-6
    )
    assert 0 < out.clip_ratio.item() < 1  # the inputs exercise clipping
    if beta:
        assert out.kl.item() == pytest.approx(fake._metrics["train"]["kl"][0], rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_match_the_reference_loss(dtype):
    hid, w, ids, mask, old, ref, adv = batch(dtype=dtype)
    kw = dict(loss_type="grpo", epsilon_high=0.28, beta=0.04, ref_logps=ref)
    out = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old, temperature=0.9, chunk_size=5, **kw)
    gh, gw = torch.autograd.grad(out.loss, (hid, w))
    assert gh.dtype == gw.dtype == dtype
    rh, rw = hid.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    logps = F.log_softmax((rh @ rw.t()) / 0.9, -1).gather(-1, ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    want = grpo_loss(logps, old.double(), adv.double(), mask.double(), **{**kw, "ref_logps": ref.double()})
    th, tw = torch.autograd.grad(want.loss, (rh, rw))
    assert abs(out.loss.item() - want.loss.item()) < 1e-5
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for got, ref_grad in ((gh, th), (gw, tw)):
        assert float((got.double() - ref_grad).norm() / ref_grad.norm()) < tol


def test_on_policy_default_and_defaults_match_vgrpo_loss():
    hid, w, ids, mask, _, _, adv = batch(seed=3)
    out = fused_grpo_loss(hid, w, ids, adv, mask, return_entropy=True)
    gh, gw = torch.autograd.grad(out.loss, (hid, w))
    rh, rw = hid.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    logps = naive_logps(rh, rw, ids, 1.0)
    want = grpo_loss(logps, None, adv, mask)
    th, tw = torch.autograd.grad(want.loss, (rh, rw))
    torch.testing.assert_close(out.loss, want.loss.detach())
    torch.testing.assert_close(gh, th, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(gw, tw, atol=1e-7, rtol=1e-5)
    assert out.clip_ratio.item() == 0.0 and out.kl.item() == 0.0
    z = F.log_softmax(rh.detach() @ rw.detach().t(), -1)
    torch.testing.assert_close(out.entropy, -(z.exp() * z).sum(-1) * mask, atol=1e-5, rtol=1e-5)


def test_dapo_normalises_by_num_items():
    hid, w, ids, mask, old, ref, adv = batch(seed=4)
    a = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old, loss_type="dapo").loss
    b = fused_grpo_loss(
        hid, w, ids, adv, mask, old_logps=old, loss_type="dapo", num_items=4 * mask.sum()
    ).loss
    torch.testing.assert_close(b * 4, a)


def test_temperature_and_bias_reach_the_log_probs():
    hid, w, ids, mask, old, _, adv = batch(seed=5)
    bias = torch.randn(V, requires_grad=True)
    out = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old, temperature=0.6, bias=bias, chunk_size=7)
    grads = torch.autograd.grad(out.loss, (hid, w, bias))
    params = [x.detach().clone().requires_grad_(True) for x in (hid, w, bias)]
    logps = F.log_softmax((params[0] @ params[1].t() + params[2]) / 0.6, -1)
    logps = logps.gather(-1, ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    want = grpo_loss(logps, old, adv, mask)
    ref = torch.autograd.grad(want.loss, params)
    torch.testing.assert_close(out.loss, want.loss.detach())
    for got, exp in zip(grads, ref):
        torch.testing.assert_close(got, exp, atol=1e-7, rtol=1e-4)


def test_without_grad_it_only_computes_the_loss():
    hid, w, ids, mask, old, _, adv = batch(seed=6)
    with torch.no_grad():
        out = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old)
    assert out.loss.grad_fn is None
    with torch.no_grad():
        want = grpo_loss(naive_logps(hid, w, ids, 1.0), old, adv, mask)
    torch.testing.assert_close(out.loss, want.loss)


def test_backward_scales_by_the_incoming_gradient():
    hid, w, ids, mask, old, _, adv = batch(seed=7)
    (g1,) = torch.autograd.grad(fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old).loss, hid)
    out = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old)
    (g3,) = torch.autograd.grad(out.loss * 3.0, hid, retain_graph=True)
    torch.testing.assert_close(g3, 3 * g1)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        torch.autograd.grad(out.loss, hid)


def test_an_all_masked_batch_has_zero_loss_and_gradients():
    hid, w, ids, mask, old, _, adv = batch(seed=8)
    out = fused_grpo_loss(hid, w, ids, adv, torch.zeros_like(mask), old_logps=old)
    gh, gw = torch.autograd.grad(out.loss, (hid, w))
    assert out.loss.item() == 0.0 and out.logps.abs().sum() == 0
    assert torch.count_nonzero(gh) == 0 and torch.count_nonzero(gw) == 0


def test_frozen_lm_head():
    hid, w, ids, mask, old, _, adv = batch(seed=9)
    w.requires_grad_(False)
    out = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old, chunk_size=6)
    out.loss.backward()
    rh = hid.detach().clone().requires_grad_(True)
    grpo_loss(naive_logps(rh, w, ids, 1.0), old, adv, mask).loss.backward()
    assert w.grad is None
    torch.testing.assert_close(hid.grad, rh.grad, atol=1e-7, rtol=1e-5)


def test_never_materialises_the_batch_logits():
    hid, w, ids, mask, old, ref, adv = batch(seed=10)
    with LargestTensor() as seen:
        fused_grpo_loss(
            hid, w, ids, adv, mask, old_logps=old, ref_logps=ref, beta=0.04, chunk_size=8, return_entropy=True
        ).loss.backward()
    assert seen.largest <= max(8 * V, V * H) < mask.sum() * V  # a chunk's logits, or grad_weight


def short_batch(lengths, seed):
    """Completions of the given lengths (0 = a fully masked row), padded to the longest."""
    b, t = len(lengths), max(lengths)
    gen = torch.Generator().manual_seed(seed)
    hid = torch.randn(b, t, H, generator=gen)
    w = torch.randn(V, H, generator=gen) * 0.5
    ids = torch.randint(0, V, (b, t), generator=gen)
    mask = (torch.arange(t) < torch.tensor(lengths)[:, None]).float()
    ids[mask == 0] = -1
    base = naive_logps(hid, w, ids, 1.0)
    old = base + 0.5 * torch.randn(b, t, generator=gen)
    ref = base + 0.3 * torch.randn(b, t, generator=gen)
    return hid, w, ids, mask, old, ref, torch.randn(b, generator=gen), base


LENGTHS = [[1, 0, 1, 1, 0, 1], [1, 0, 1], [1, 1, 1, 1], [1, 0, 5, 1, 3, 0], [1, 1, 4], [0, 2, 1, 0]]


@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("seed", range(4))
def test_one_token_completions_and_masked_rows_same_statistics_fused_and_naive(lengths, level, seed):
    # Token level: clip_ratio and kl are masked means over completion tokens, whatever the padded width
    # (a batch of one-token completions is [B, 1], the shape of sequence-level ratios). Sequence level:
    # clip_ratio is the share of sequences (every row, as TRL counts it); kl still the masked token mean.
    hid, w, ids, mask, old, ref, adv, base = short_batch(lengths, seed)
    kw = dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.04, importance_sampling_level=level)
    fused = fused_grpo_loss(hid, w, ids, adv, mask, old_logps=old, ref_logps=ref, **kw)
    naive = grpo_loss(base, old, adv, mask, ref_logps=ref, **kw)
    eps_low, eps_high = 0.2, 0.28
    if level == "token":
        ratio = torch.exp(base - old)
        clipped = ((ratio < 1 - eps_low) & (adv[:, None] < 0)) | ((ratio > 1 + eps_high) & (adv[:, None] > 0))
        want_clip = (clipped.float() * mask).sum() / mask.sum()
    else:
        ratio = torch.exp(((base - old) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))
        clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        want_clip = clipped.float().mean()
    delta = ref - base
    want_kl = ((torch.exp(delta) - delta - 1) * mask).sum() / mask.sum()
    for out in (naive, fused):
        assert out.clip_ratio.item() == pytest.approx(want_clip.item(), abs=1e-6)
        assert out.kl.item() == pytest.approx(want_kl.item(), rel=1e-4)
    torch.testing.assert_close(fused.loss, naive.loss, atol=1e-6, rtol=1e-5)
