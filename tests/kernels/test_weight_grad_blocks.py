"""The weight gradient by vocabulary blocks (weight_grad="blocked") equals autograd on the full logits and the
one-buffer path, and never allocates an fp32 [V, H] buffer for a bf16/fp16 weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vgrpo.bench.gpu_kernels import LargestTensor, is_fp32
from vgrpo.kernels import chunked, fused_grpo_loss, token_logprobs
from vgrpo.loss import grpo_loss

#: Relative (to the reference's norm) gradient tolerance per dtype, as in test_token_logprobs.py.
REL_TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def vocab_blocks(monkeypatch, rows: int, size: int) -> None:
    """A kernel budget whose blocked weight gradient takes ``rows`` vocabulary rows per block (H = ``size``)."""
    monkeypatch.setenv("VGRPO_KERNEL_BUDGET_MB", repr(16 * size * rows / 2**20))
    assert chunked.weight_block_rows(10**6, size, 16 * size * rows) == rows


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def close_to_fp32_rounding(got, want):
    """Equal up to the rounding of fp32 sums in another order (then of the cast to the tensors' dtype)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    rtol = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[want.dtype]
    scale = float(want.float().abs().max())
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=1e-6 * scale)


def make(n, size, vocab, dtype, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, size, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(vocab, size, generator=gen) * size**-0.5 * 2).to(dtype).requires_grad_(True)
    b = torch.randn(vocab, generator=gen).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, vocab, (n,), generator=gen)
    return h, w, b, t


def logprob_grads(h, w, b, t, mode, *, temperature, entropy, chunk_size, seed=1):
    gen = torch.Generator().manual_seed(seed)
    g, g_ent = torch.randn(t.shape, generator=gen), torch.randn(t.shape, generator=gen)
    out = token_logprobs(
        h,
        w,
        t,
        temperature=temperature,
        bias=b,
        return_entropy=entropy,
        chunk_size=chunk_size,
        weight_grad=mode,
    )
    logp, ent = out if entropy else (out, None)
    loss = (logp * g).sum() + ((ent * g_ent).sum() if entropy else 0)
    params = [x for x in (h, w, b) if x is not None]
    return torch.autograd.grad(loss, params), (g, g_ent)


def naive_logprob_grads(h, w, b, t, g, g_ent, *, temperature, entropy):
    """Autograd through log_softmax of the full fp64 logits (ignored targets masked out)."""
    params = [x.detach().double().requires_grad_(True) for x in (h, w, b) if x is not None]
    z = params[0] @ params[1].t() + (params[2] if b is not None else 0)
    lp_all = F.log_softmax(z / temperature, -1)
    valid = t != -100
    logp = lp_all.gather(-1, t.clamp(min=0)[:, None]).squeeze(-1) * valid
    loss = (logp * g).sum()
    if entropy:
        loss = loss + ((-(lp_all.exp() * lp_all).sum(-1) * valid) * g_ent).sum()
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("entropy", [False, True])
@pytest.mark.parametrize("block", [1, 13, 50, 500])  # one row, ragged last block, two blocks, one block
def test_token_logprobs_blocked_equals_autograd_and_the_buffer(dtype, entropy, block, monkeypatch):
    vocab_blocks(monkeypatch, block, 24)
    h, w, b, t = make(37, 24, 101, dtype)
    t[[3, 20]] = -100  # ignored positions
    kw = dict(temperature=0.7, entropy=entropy, chunk_size=5)
    blocked, (g, g_ent) = logprob_grads(h, w, b, t, "blocked", **kw)
    buffered, _ = logprob_grads(h, w, b, t, "buffer", **kw)
    want = naive_logprob_grads(h, w, b, t, g, g_ent, temperature=0.7, entropy=entropy)
    for name, got, buf, ref in zip(("hidden", "weight", "bias"), blocked, buffered, want):
        assert rel_err(got, ref) < REL_TOL[dtype], f"{name}: {rel_err(got, ref):.2e} against autograd"
        close_to_fp32_rounding(got, buf)


@pytest.mark.parametrize("temperature", [0.3, 2.5])
def test_token_logprobs_blocked_temperatures_without_bias(temperature, monkeypatch):
    vocab_blocks(monkeypatch, 16, 8)
    h, w, _, t = make(16, 8, 50, torch.float32, bias=False)
    kw = dict(temperature=temperature, entropy=True, chunk_size=3)
    (gh, gw), (g, g_ent) = logprob_grads(h, w, None, t, "blocked", **kw)
    rh, rw = naive_logprob_grads(h, w, None, t, g, g_ent, temperature=temperature, entropy=True)
    assert rel_err(gh, rh) < 2e-6 and rel_err(gw, rw) < 2e-6


def test_blocked_with_a_frozen_weight_or_no_tokens(monkeypatch):
    vocab_blocks(monkeypatch, 7, 8)
    h, w, _, t = make(9, 8, 30, torch.bfloat16, bias=False)
    w.requires_grad_(False)
    token_logprobs(h, w, t, chunk_size=4, weight_grad="blocked").sum().backward()
    ref = h.detach().double().requires_grad_(True)
    F.log_softmax(ref @ w.double().t(), -1).gather(-1, t[:, None]).sum().backward()
    assert w.grad is None and rel_err(h.grad, ref.grad) < 1e-2
    h0, w0, _, t0 = make(0, 8, 30, torch.bfloat16, bias=False)
    token_logprobs(h0, w0, t0, weight_grad="blocked").sum().backward()
    assert w0.grad.shape == (30, 8) and w0.grad.dtype == torch.bfloat16 and torch.count_nonzero(w0.grad) == 0


def batch(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bsz, t, size, vocab = 5, 9, 16, 67
    h = torch.randn(bsz, t, size, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(vocab, size, generator=gen) * 0.5).to(dtype).requires_grad_(True)
    bias = (torch.randn(vocab, generator=gen) * 0.5).to(dtype).requires_grad_(True)
    ids = torch.randint(0, vocab, (bsz, t), generator=gen)
    mask = torch.ones(bsz, t)
    mask[0, 5:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = -1  # masked positions are never looked at
    with torch.no_grad():
        base = naive_logps(h, w, bias, ids, 0.9)
    old = base + 0.3 * torch.randn(bsz, t, generator=gen)
    ref = base + 0.2 * torch.randn(bsz, t, generator=gen)
    adv = torch.randn(bsz, generator=gen)
    return h, w, bias, ids, mask, old, ref, adv


def naive_logps(h, w, bias, ids, temperature):
    z = (h.double() @ w.double().t() + bias.double()) / temperature
    return F.log_softmax(z, -1).gather(-1, ids.clamp(min=0)[..., None]).squeeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("chunk_size", [4, 13])  # 4 < a sequence: the sequence level takes token_logprobs
def test_fused_loss_blocked_equals_autograd_and_the_buffer(dtype, loss_type, level, chunk_size, monkeypatch):
    vocab_blocks(monkeypatch, 20, 16)  # 67 rows: blocks of 20, 20, 20, 7
    h, w, bias, ids, mask, old, ref, adv = batch(dtype)
    kw = dict(
        old_logps=old,
        ref_logps=ref,
        loss_type=loss_type,
        epsilon_high=0.28,
        beta=0.04,
        importance_sampling_level=level,
        temperature=0.9,
        bias=bias,
        return_entropy=True,
        chunk_size=chunk_size,
    )
    outs, grads = {}, {}
    for mode in ("blocked", "buffer"):
        outs[mode] = fused_grpo_loss(h, w, ids, adv, mask, weight_grad=mode, **kw)
        grads[mode] = torch.autograd.grad(outs[mode].loss, (h, w, bias))
    torch.testing.assert_close(outs["blocked"].loss, outs["buffer"].loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(outs["blocked"].logps, outs["buffer"].logps, rtol=0, atol=0)

    params = [x.detach().double().requires_grad_(True) for x in (h, w, bias)]
    logps = naive_logps(*params, ids, 0.9)
    kw_ref = {k: kw[k] for k in ("ref_logps", "loss_type", "epsilon_high", "beta")}
    want = grpo_loss(logps, old.double(), adv.double(), mask, importance_sampling_level=level, **kw_ref)
    ref_grads = torch.autograd.grad(want.loss, params)
    torch.testing.assert_close(outs["blocked"].loss.double(), want.loss.detach(), atol=1e-5, rtol=1e-5)
    for name, got, buf, r in zip(("hidden", "weight", "bias"), grads["blocked"], grads["buffer"], ref_grads):
        assert rel_err(got, r) < REL_TOL[dtype], f"{name}: {rel_err(got, r):.2e} against autograd"
        close_to_fp32_rounding(got, buf)


def test_fused_loss_blocked_scales_by_the_outer_gradient(monkeypatch):
    vocab_blocks(monkeypatch, 30, 16)
    h, w, bias, ids, mask, old, ref, adv = batch(torch.float32, seed=3)
    out = fused_grpo_loss(h, w, ids, adv, mask, old_logps=old, chunk_size=8, weight_grad="blocked")
    (3.0 * out.loss).backward()
    rh, rw = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    logps = F.log_softmax(rh @ rw.t(), -1).gather(-1, ids.clamp(min=0)[..., None]).squeeze(-1)
    (3.0 * grpo_loss(logps, old, adv, mask).loss).backward()
    torch.testing.assert_close(h.grad, rh.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.grad, rw.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["auto", "blocked"])
def test_a_bf16_weight_gets_no_fp32_vocab_by_hidden_buffer(mode, monkeypatch):
    # V x H = 300 x 64 = 19,200 > the budget's fp32 bytes / 4: "auto" blocks too; chunks of 5 x 300 logits
    vocab_blocks(monkeypatch, 40, 64)
    monkeypatch.setattr(chunked, "VOCAB_TILE", 17)  # the bf16 weight is upcast 17 rows at a time
    h, w, _, t = make(20, 64, 300, torch.bfloat16, bias=False)
    with LargestTensor(is_fp32) as seen:
        token_logprobs(h, w, t, chunk_size=5, weight_grad=mode).sum().backward()
    assert seen.largest <= max(5 * 300, 40 * 64, 20 * 64)  # a chunk, a block, grad_hidden: never 300 * 64
    with LargestTensor(is_fp32) as buffered:
        token_logprobs(h, w, t, chunk_size=5, weight_grad="buffer").sum().backward()
    assert buffered.largest == 300 * 64  # the one fp32 buffer this option avoids
    ids, adv, mask = t.reshape(4, 5), torch.randn(4), torch.ones(4, 5)
    with LargestTensor(is_fp32) as fused:
        hid = h.detach().reshape(4, 5, 64).requires_grad_(True)
        fused_grpo_loss(hid, w, ids, adv, mask, chunk_size=5, weight_grad=mode).loss.backward()
    assert fused.largest <= max(5 * 300, 40 * 64, 20 * 64)


def test_auto_keeps_the_buffer_for_fp32_weights_and_small_ones():
    big = torch.empty(151_936, 2048, dtype=torch.bfloat16, device="meta")
    budget = chunked.DEFAULT_BUDGET_BYTES["cuda"]
    assert chunked.blocked_weight_grad("auto", big, budget)  # 1.24 GB of fp32 > 1 GiB
    assert not chunked.blocked_weight_grad("auto", big.float(), budget)  # the buffer is the gradient
    assert not chunked.blocked_weight_grad("auto", big[:1000], budget)  # 8 MB
    assert chunked.blocked_weight_grad("blocked", big.float(), budget)
    assert not chunked.blocked_weight_grad("buffer", big, budget)


def test_vocabulary_blocks_follow_the_budget():
    size, budget = 3584, 2**30
    rows = chunked.weight_block_rows(151_936, size, budget)
    assert rows * size * 4 <= budget // 4 and rows * 9 >= 151_936  # 9 balanced blocks of 256 MiB at most
    assert chunked.weight_block_rows(100, 8, 2**30) == 100
    assert chunked.weight_block_rows(100, 8, 1) == 1


def test_the_environment_variable_and_bad_values(monkeypatch):
    h, w, _, t = make(6, 8, 20, torch.bfloat16, bias=False)
    with pytest.raises(ValueError, match="weight_grad must be 'auto', 'buffer' or 'blocked', got 'tiles'"):
        token_logprobs(h, w, t, weight_grad="tiles")
    with pytest.raises(ValueError, match="weight_grad must be"):
        fused_grpo_loss(h[None], w, t[None], torch.ones(1), torch.ones(1, 6), weight_grad="Blocked")
    monkeypatch.setenv("VGRPO_KERNEL_WEIGHT_GRAD", "fast")
    with pytest.raises(ValueError, match="VGRPO_KERNEL_WEIGHT_GRAD must be .* got 'fast'"):
        token_logprobs(h, w, t)
    monkeypatch.setenv("VGRPO_KERNEL_WEIGHT_GRAD", "blocked")
    vocab_blocks(monkeypatch, 3, 8)
    monkeypatch.setattr(chunked, "VOCAB_TILE", 3)
    with LargestTensor(is_fp32) as seen:
        token_logprobs(h, w, t, chunk_size=6).sum().backward()  # the variable stands in for "auto"
    assert seen.largest < 20 * 8
    with LargestTensor(is_fp32) as explicit:
        # an explicit choice wins over the variable
        token_logprobs(h, w, t, chunk_size=6, weight_grad="buffer").sum().backward()
    assert explicit.largest == 20 * 8
