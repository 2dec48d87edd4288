"""token_logprobs (chunked PyTorch path) equals log_softmax((h @ W.T + b) / T).gather(...) in values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vgrpo.kernels
from vgrpo.bench.gpu_kernels import LargestTensor
from vgrpo.kernels import token_logprobs
from vgrpo.kernels.chunked import rows_for_budget

#: Relative (to the reference's norm) tolerance per input dtype: outputs and gradients come back in that dtype.
REL_TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def reference(h, w, t, *, temperature=1.0, bias=None, ignore_index=-100):
    """Log-probs and entropy from the full fp64 logits of the same (possibly low-precision) values."""
    z = h.double() @ w.double().t()
    if bias is not None:
        z = z + bias.double()
    logp_all = F.log_softmax(z / temperature, dim=-1)
    valid = t != ignore_index
    logp = logp_all.gather(-1, t.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    ent = -(logp_all.exp() * logp_all).sum(-1) * valid
    return logp, ent


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def inputs(n, h, v, dtype, *, seed=0, bias=False, shape=None):
    gen = torch.Generator().manual_seed(seed)
    hid = torch.randn(*(shape or (n,)), h, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(v, h, generator=gen) * h**-0.5 * 2).to(dtype).requires_grad_(True)
    t = torch.randint(0, v, shape or (n,), generator=gen)
    b = (torch.randn(v, generator=gen)).to(dtype).requires_grad_(True) if bias else None
    return hid, w, t, b


def check_against_reference(hid, w, t, b, *, temperature, entropy, chunk_size, seed=1):
    """Values and gradients of g . logp (+ g_ent . entropy) match the reference."""
    dtype = hid.dtype
    out = token_logprobs(
        hid, w, t, temperature=temperature, bias=b, return_entropy=entropy, chunk_size=chunk_size
    )
    logp, ent = out if entropy else (out, None)
    assert logp.dtype == torch.float32 and logp.shape == t.shape
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t.shape, generator=gen)
    g_ent = torch.randn(t.shape, generator=gen)
    params = [x for x in (hid, w, b) if x is not None]
    loss = (logp * g).sum() + ((ent * g_ent).sum() if entropy else 0)
    grads = torch.autograd.grad(loss, params)

    ref_params = [x.detach().double().requires_grad_(True) for x in params]
    rh, rw = ref_params[0], ref_params[1]
    rb = ref_params[2] if b is not None else None
    ref_logp, ref_ent = reference(rh, rw, t, temperature=temperature, bias=rb)
    ref_loss = (ref_logp * g).sum() + ((ref_ent * g_ent).sum() if entropy else 0)
    ref_grads = torch.autograd.grad(ref_loss, ref_params)

    torch.testing.assert_close(
        logp.double(), ref_logp.detach(), atol=5e-6 * max(1, abs(math.log(w.shape[0]))), rtol=1e-5
    )
    if entropy:
        torch.testing.assert_close(ent.double(), ref_ent.detach(), atol=2e-5, rtol=1e-5)
    for name, got, want in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert got.dtype == dtype and got.shape == want.shape
        assert rel_err(got, want) < REL_TOL[dtype], f"grad {name}: rel err {rel_err(got, want):.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("entropy", [False, True])
def test_values_and_gradients_match_log_softmax_gather(dtype, entropy):
    # V = 101 and 37 rows in chunks of 5: neither divides evenly
    hid, w, t, b = inputs(37, 24, 101, dtype, bias=True)
    check_against_reference(hid, w, t, b, temperature=0.7, entropy=entropy, chunk_size=5)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperatures(temperature):
    hid, w, t, _ = inputs(16, 8, 50, torch.float32)
    check_against_reference(hid, w, t, None, temperature=temperature, entropy=True, chunk_size=3)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_chunk_sizes_and_the_vocabulary_tiling_of_low_precision_weights(chunk_size, monkeypatch):
    monkeypatch.setattr(vgrpo.kernels.chunked, "VOCAB_TILE", 17)  # bf16 weights are upcast 17 rows at a time
    hid, w, t, b = inputs(21, 8, 60, torch.bfloat16, bias=True)
    check_against_reference(hid, w, t, b, temperature=1.0, entropy=True, chunk_size=chunk_size)


def test_batched_shape_with_ignored_positions():
    hid, w, t, _ = inputs(0, 12, 40, torch.float32, shape=(3, 5))
    t[0, 3:] = -100
    t[2, :] = -100
    logp, ent = token_logprobs(hid, w, t, return_entropy=True, chunk_size=4)
    assert logp.shape == ent.shape == (3, 5)
    assert torch.all(logp[t == -100] == 0) and torch.all(ent[t == -100] == 0)
    (logp.sum() + ent.sum()).backward()
    assert torch.all(hid.grad[t == -100] == 0)  # ignored positions get no gradient
    assert hid.grad[t != -100].abs().sum(-1).min() > 0
    hid2, w2 = hid.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    ref_logp, ref_ent = reference(hid2, w2, t)
    (ref_logp.sum() + ref_ent.sum()).backward()
    torch.testing.assert_close(logp.double(), ref_logp.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hid.grad, hid2.grad.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.grad, w2.grad.float(), atol=1e-5, rtol=1e-4)


def test_custom_ignore_index():
    hid, w, t, _ = inputs(6, 4, 10, torch.float32)
    t[1] = 7
    logp = token_logprobs(hid, w, t, ignore_index=7)
    assert logp[1] == 0 and torch.all(logp[t != 7] < 0)


def test_single_token():
    hid, w, t, b = inputs(1, 8, 33, torch.float32, bias=True)
    check_against_reference(hid, w, t, b, temperature=0.9, entropy=True, chunk_size=None)


def test_no_tokens_give_empty_results_and_zero_weight_gradient():
    hid, w, t, _ = inputs(0, 8, 33, torch.float32)
    logp, ent = token_logprobs(hid, w, t, return_entropy=True)
    assert logp.shape == ent.shape == (0,)
    (logp.sum() + ent.sum()).backward()
    assert hid.grad.shape == (0, 8) and torch.count_nonzero(w.grad) == 0


def test_all_positions_ignored():
    hid, w, t, _ = inputs(4, 8, 33, torch.float32)
    t[:] = -100
    logp = token_logprobs(hid, w, t)
    assert torch.all(logp == 0)
    logp.sum().backward()
    assert torch.count_nonzero(hid.grad) == 0 and torch.count_nonzero(w.grad) == 0


def test_frozen_weight_gets_no_gradient_and_hidden_still_does():
    hid, w, t, _ = inputs(9, 8, 30, torch.float32)
    w.requires_grad_(False)
    token_logprobs(hid, w, t, chunk_size=4).sum().backward()
    ref = hid.detach().clone().requires_grad_(True)
    reference(ref, w, t)[0].sum().backward()
    assert w.grad is None
    torch.testing.assert_close(hid.grad, ref.grad.float(), atol=1e-6, rtol=1e-5)


def test_entropy_only_gradient():
    hid, w, t, _ = inputs(5, 8, 30, torch.float32)
    _, ent = token_logprobs(hid, w, t, return_entropy=True, chunk_size=2)
    ent.sum().backward()
    ref = hid.detach().clone().double().requires_grad_(True)
    reference(ref, w, t)[1].sum().backward()
    torch.testing.assert_close(hid.grad.double(), ref.grad, atol=1e-6, rtol=1e-5)


def test_non_finite_hidden_rows_poison_only_their_own_log_probs():
    hid, w, t, _ = inputs(8, 6, 20, torch.float32)
    bad = hid.detach().clone()
    bad[2] = float("nan")
    bad[5, 0] = float("inf")
    logp, ent = token_logprobs(bad, w.detach(), t, return_entropy=True, chunk_size=3)
    finite = torch.ones(8, dtype=torch.bool)
    finite[[2, 5]] = False
    assert not torch.isfinite(logp[2]) and not torch.isfinite(logp[5])
    assert torch.isfinite(logp[finite]).all() and torch.isfinite(ent[finite]).all()
    torch.testing.assert_close(
        logp[finite].double(), reference(bad[finite], w.detach(), t[finite])[0], atol=1e-5, rtol=1e-5
    )


def test_minus_infinity_bias_masks_tokens_without_nan_entropy():
    hid, w, t, _ = inputs(6, 6, 20, torch.float32)
    t = t % 15
    bias = torch.zeros(20)
    bias[15:] = float("-inf")  # forbid vocabulary entries no target uses
    logp, ent = token_logprobs(hid, w, t, bias=bias, return_entropy=True, chunk_size=4)
    ref_logp, _ = reference(hid, w, t, bias=bias)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(logp.double(), ref_logp.detach(), atol=1e-5, rtol=1e-5)
    (logp.sum() + ent.sum()).backward()
    assert torch.isfinite(hid.grad).all() and torch.isfinite(w.grad).all()


def test_never_materialises_n_by_v():
    n, v = 64, 1000
    hid, w, t, _ = inputs(n, 8, v, torch.float32)
    with LargestTensor() as seen:
        logp, ent = token_logprobs(hid, w, t, return_entropy=True, chunk_size=16)
        (logp.sum() + ent.sum()).backward()
    assert seen.largest <= 16 * v  # one chunk's logits; the naive path needs n * v
    with LargestTensor() as naive:
        reference(hid, w, t)[0].sum().backward()
    assert naive.largest >= n * v


def test_chunk_rows_follow_the_memory_budget():
    assert rows_for_budget(1024, 151_936, 1, 128 * 2**20) == 205  # 5 balanced chunks of 220 rows at most
    assert rows_for_budget(1024, 151_936, 2, 128 * 2**20) * 151_936 * 4 * 2 <= 128 * 2**20
    assert rows_for_budget(10, 100, 1, 2**30) == 10
    assert rows_for_budget(10, 10**9, 1, 1) == 1
    assert rows_for_budget(0, 100, 1, 2**20) == 1


def test_default_chunking_matches_explicit_chunking():
    hid, w, t, _ = inputs(50, 8, 300, torch.float32)
    a = token_logprobs(hid, w, t)
    b = token_logprobs(hid, w, t, chunk_size=7)
    torch.testing.assert_close(a, b)


def test_public_names_are_pinned():
    assert set(vgrpo.kernels.__all__) == {"FusedLossOutput", "fused_grpo_loss", "token_logprobs"}
    for name in vgrpo.kernels.__all__:
        assert (getattr(vgrpo.kernels, name).__doc__ or "").strip(), name


def test_non_contiguous_hidden_slice_and_no_grad_mode():
    full, w, t, _ = inputs(0, 8, 40, torch.float32, shape=(3, 9))
    hid = full[:, 4:]  # the completion part of [B, prompt + completion, H] hidden states: not contiguous
    tgt = t[:, 4:]
    with torch.no_grad():
        logp = token_logprobs(hid, w, tgt, chunk_size=4)
    assert logp.grad_fn is None and logp.shape == (3, 5)
    torch.testing.assert_close(logp.double(), reference(hid, w, tgt)[0].detach(), atol=1e-5, rtol=1e-5)
    token_logprobs(hid, w, tgt, chunk_size=4).sum().backward()
    ref = full.detach().clone().requires_grad_(True)
    reference(ref[:, 4:], w, tgt)[0].sum().backward()
    torch.testing.assert_close(full.grad, ref.grad.float(), atol=1e-6, rtol=1e-5)
    assert torch.all(full.grad[:, :4] == 0)
