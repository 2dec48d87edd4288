"""Triton kernel cases for Triton's interpreter; run by test_triton_interpreter.py with TRITON_INTERPRET=1.

Not collected on its own (the name does not start with ``test_``): triton must be imported with the
variable already set, which only a fresh process guarantees.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 before triton is imported", allow_module_level=True)

from vgrpo.bench.gpu_kernels import LargestTensor, is_fp32  # noqa: E402
from vgrpo.kernels import chunked, fused_grpo_loss, token_logprobs  # noqa: E402
from vgrpo.kernels import triton_logprobs as tk  # noqa: E402
from vgrpo.loss import grpo_loss  # noqa: E402

#: Blocks of 16 (the smallest tl.dot accepts on GPUs), so that V = 101 spans 4 vocabulary tiles with a ragged
#: last one; ``min_programs`` splits the vocabulary over programs to exercise the partial log-sum-exp merge.
OPS = tk.TritonOps(fwd_blocks=(16, 32, 16), grad_blocks=(16, 32, 16), mm_blocks=(16, 16, 16), min_programs=4)
REL_TOL = {torch.float32: 2e-6, torch.float16: 3e-3, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def _tiny_triton_blocks(monkeypatch):
    monkeypatch.setattr("vgrpo.kernels._triton_ops", lambda **kw: OPS)


def test_the_kernels_run_in_the_interpreter():
    assert type(tk._lse_fwd_kernel).__name__ == "InterpretedFunction"


def reference(h, w, t, temperature=1.0, bias=None):
    z = h.double() @ w.double().t() + (0 if bias is None else bias.double())
    lp = F.log_softmax(z / temperature, -1)
    valid = t != -100
    return lp.gather(-1, t.clamp(min=0)[:, None]).squeeze(-1) * valid, -(lp.exp() * lp).sum(-1) * valid


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("entropy", [False, True])
def test_token_logprobs_values_and_gradients(dtype, entropy):
    gen = torch.Generator().manual_seed(0)
    n, size, vocab, temperature = 37, 24, 101, 0.7
    h = torch.randn(n, size, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(vocab, size, generator=gen) * 0.4).to(dtype).requires_grad_(True)
    b = torch.randn(vocab, generator=gen).to(dtype).requires_grad_(True)
    t = torch.randint(0, vocab, (n,), generator=gen)
    t[3] = -100
    out = token_logprobs(
        h, w, t, temperature=temperature, bias=b, return_entropy=entropy, chunk_size=20, backend="triton"
    )
    logp, ent = out if entropy else (out, None)
    g, g_ent = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    grads = torch.autograd.grad((logp * g).sum() + ((ent * g_ent).sum() if entropy else 0), (h, w, b))

    params = [x.detach().double().requires_grad_(True) for x in (h, w, b)]
    ref_logp, ref_ent = reference(params[0], params[1], t, temperature, params[2])
    ref_grads = torch.autograd.grad(
        (ref_logp * g).sum() + ((ref_ent * g_ent).sum() if entropy else 0), params
    )
    torch.testing.assert_close(logp.double(), ref_logp.detach(), atol=1e-5, rtol=1e-5)
    if entropy:
        torch.testing.assert_close(ent.double(), ref_ent.detach(), atol=2e-5, rtol=1e-5)
    for name, got, want in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert got.dtype == dtype
        assert rel_err(got, want) < REL_TOL[dtype], f"{name}: {rel_err(got, want):.2e}"


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_tokens_and_one_vocabulary_tile(n):
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(n, 16, generator=gen, requires_grad=True)
    w = torch.randn(20, 16, generator=gen, requires_grad=True)
    t = torch.randint(0, 20, (n,), generator=gen)
    logp = token_logprobs(h, w, t, backend="triton")
    logp.sum().backward()
    rh, rw = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    reference(rh, rw, t)[0].sum().backward()
    torch.testing.assert_close(logp.double(), reference(h, w, t)[0].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad, rh.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.grad, rw.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on NaN rows, inside the interpreter
def test_non_finite_rows_stay_in_their_rows():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(20, 16, generator=gen)
    w = torch.randn(50, 16, generator=gen) * 0.3
    t = torch.randint(0, 50, (20,), generator=gen)
    h[4] = float("nan")
    h[17, 3] = float("inf")
    logp, ent = token_logprobs(h, w, t, return_entropy=True, backend="triton")
    ok = torch.ones(20, dtype=torch.bool)
    ok[[4, 17]] = False
    assert (
        not torch.isfinite(logp[~ok]).any()
        and torch.isfinite(logp[ok]).all()
        and torch.isfinite(ent[ok]).all()
    )
    torch.testing.assert_close(logp[ok].double(), reference(h[ok], w, t[ok])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_fused_grpo_loss_matches_the_reference(loss_type, level):
    gen = torch.Generator().manual_seed(3)
    b, t, size, vocab, temperature = 4, 6, 16, 53, 0.9
    h = torch.randn(b, t, size, generator=gen, requires_grad=True)
    w = (torch.randn(vocab, size, generator=gen) * 0.5).requires_grad_(True)
    ids = torch.randint(0, vocab, (b, t), generator=gen)
    mask = torch.ones(b, t)
    mask[1, 3:] = 0
    with torch.no_grad():
        base = F.log_softmax(h @ w.t() / temperature, -1).gather(-1, ids[..., None]).squeeze(-1)
    old = base + 0.3 * torch.randn(b, t, generator=gen)
    ref = base + 0.2 * torch.randn(b, t, generator=gen)
    adv = torch.randn(b, generator=gen)
    kw = dict(
        loss_type=loss_type,
        epsilon_high=0.28,
        beta=0.04,
        importance_sampling_level=level,
        max_completion_length=8,
    )
    out = fused_grpo_loss(
        h,
        w,
        ids,
        adv,
        mask,
        old_logps=old,
        ref_logps=ref,
        temperature=temperature,
        chunk_size=12,
        backend="triton",
        **kw,
    )
    gh, gw = torch.autograd.grad(out.loss, (h, w))
    rh, rw = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    logps = F.log_softmax(rh @ rw.t() / temperature, -1).gather(-1, ids[..., None]).squeeze(-1)
    want = grpo_loss(logps, old, adv, mask, ref_logps=ref, **kw)
    th, tw = torch.autograd.grad(want.loss, (rh, rw))
    torch.testing.assert_close(out.loss, want.loss.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gh, th, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(gw, tw, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_kernel_accumulates_in_fp32(dtype):
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(37, 20, generator=gen).t()  # strided, like the transposed logit gradients
    b = torch.randn(37, 18, generator=gen).to(dtype)
    c = torch.randn(20, 18, generator=gen)
    want = c.double() + a.double() @ b.double()
    OPS._mm(a, b, c, accumulate=True)
    assert c.dtype == torch.float32
    # fp32 exact; bf16: a's tiles are cast to bf16 before the dot (the interpreter truncates, GPUs round)
    assert rel_err(c, want) < (1e-6 if dtype == torch.float32 else 1e-2)


def test_vocabulary_split_merge_equals_one_program_per_row_block():
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(9, 16, generator=gen)
    w = torch.randn(77, 16, generator=gen)
    t = torch.randint(0, 77, (9,), generator=gen)
    split = tk.TritonOps(fwd_blocks=(16, 16, 16), min_programs=5)._lse(h, w, None, t, 1.0, None)
    whole = tk.TritonOps(fwd_blocks=(16, 16, 16), min_programs=1)._lse(h, w, None, t, 1.0, None)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    z = torch.empty(9, 77)
    tk.TritonOps(fwd_blocks=(16, 16, 16), min_programs=3)._lse(h, w, None, t, 0.5, z)
    torch.testing.assert_close(z, h @ w.t() * 0.5, atol=1e-5, rtol=1e-5)  # the stored logits, scaled by 1/T


def test_backend_choice():
    assert isinstance(chunked.TorchOps(), chunked.TorchOps)
    from vgrpo.kernels import _select_ops

    assert _select_ops(torch.device("cpu"), "auto").name == "torch"
    assert _select_ops(torch.device("cpu"), "triton").name == "triton"


def test_the_forward_holds_no_logits_and_the_backward_one_chunk():
    gen = torch.Generator().manual_seed(6)
    n, vocab = 48, 120  # H = 8, so that the weight (V x H) is smaller than one chunk (12 x V)
    h = torch.randn(n, 8, generator=gen, requires_grad=True)
    w = torch.randn(vocab, 8, generator=gen, requires_grad=True)
    t = torch.randint(0, vocab, (n,), generator=gen)
    with LargestTensor(torch.Tensor.is_floating_point) as fwd:
        logp = token_logprobs(h, w, t, chunk_size=12, backend="triton")
    assert fwd.largest < n * vocab / 4  # per-token partials only: the logits tiles never leave the kernel
    with LargestTensor(torch.Tensor.is_floating_point) as bwd:
        logp.sum().backward()
    assert bwd.largest <= 12 * vocab  # one chunk of logit gradients
    ids = t.reshape(4, 12)
    with LargestTensor(torch.Tensor.is_floating_point) as fused:
        fused_grpo_loss(
            h.reshape(4, 12, 8), w, ids, torch.randn(4), torch.ones(4, 12), chunk_size=12, backend="triton"
        ).loss.backward()
    assert fused.largest <= 12 * vocab


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_gradient_by_vocabulary_blocks(dtype, monkeypatch):
    """weight_grad="blocked": blocks of 40 rows of V = 101 (ragged against the 32-column tiles), entropy, bias."""
    size = 16
    monkeypatch.setenv("VGRPO_KERNEL_BUDGET_MB", repr(16 * size * 40 / 2**20))
    assert chunked.weight_block_rows(101, size, 16 * size * 40) == 34  # 3 balanced blocks
    gen = torch.Generator().manual_seed(7)
    n, vocab, temperature = 21, 101, 0.8
    h = torch.randn(n, size, generator=gen).to(dtype).requires_grad_(True)
    w = (torch.randn(vocab, size, generator=gen) * 0.4).to(dtype).requires_grad_(True)
    b = torch.randn(vocab, generator=gen).to(dtype).requires_grad_(True)
    t = torch.randint(0, vocab, (n,), generator=gen)
    t[5] = -100
    g, g_ent = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    grads = {}
    for mode in ("blocked", "buffer"):
        logp, ent = token_logprobs(
            h,
            w,
            t,
            temperature=temperature,
            bias=b,
            return_entropy=True,
            chunk_size=8,
            weight_grad=mode,
            backend="triton",
        )
        grads[mode] = torch.autograd.grad((logp * g).sum() + (ent * g_ent).sum(), (h, w, b))
    params = [x.detach().double().requires_grad_(True) for x in (h, w, b)]
    ref_logp, ref_ent = reference(params[0], params[1], t, temperature, params[2])
    want = torch.autograd.grad((ref_logp * g).sum() + (ref_ent * g_ent).sum(), params)
    for name, got, buf, ref in zip(("hidden", "weight", "bias"), grads["blocked"], grads["buffer"], want):
        assert got.dtype == dtype
        assert rel_err(got, ref) < REL_TOL[dtype], f"{name}: {rel_err(got, ref):.2e}"
        scale = float(buf.float().abs().max())
        rtol = 1e-5 if dtype == torch.float32 else 2**-7
        torch.testing.assert_close(got.float(), buf.float(), rtol=rtol, atol=1e-6 * scale)

    ids, mask = t.clamp(min=0).reshape(3, 7), torch.ones(3, 7)
    mask[1, 4:] = 0
    hid = h.detach().reshape(3, 7, size).requires_grad_(True)
    adv, old = torch.randn(3, generator=gen), -4.0 + 0.3 * torch.randn(3, 7, generator=gen)
    kw = dict(old_logps=old, temperature=temperature, bias=b, chunk_size=7, backend="triton")
    out = fused_grpo_loss(hid, w, ids, adv, mask, weight_grad="blocked", **kw)
    gh, gw = torch.autograd.grad(out.loss, (hid, w))
    rh, rw = hid.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    z = (rh @ rw.t() + b.detach().double()) / temperature
    logps = F.log_softmax(z, -1).gather(-1, ids[..., None]).squeeze(-1)
    th, tw = torch.autograd.grad(grpo_loss(logps, old.double(), adv.double(), mask).loss, (rh, rw))
    assert rel_err(gh, th) < REL_TOL[dtype] and rel_err(gw, tw) < REL_TOL[dtype]
    assert gw.dtype == dtype


def test_blocked_fused_loss_holds_one_chunk_or_one_block(monkeypatch):
    """No fp32 [V, H] tensor for a bf16 weight: the largest is one chunk of logits (pass 1) or one block."""
    gen = torch.Generator().manual_seed(8)
    size, vocab = 32, 90  # V x H = 2,880 > 12 x V = 1,080 (a chunk) > 30 x H = 960 (a block)
    h = torch.randn(2, 12, size, generator=gen).to(torch.bfloat16).requires_grad_(True)
    w = torch.randn(vocab, size, generator=gen).to(torch.bfloat16).requires_grad_(True)
    ids = torch.randint(0, vocab, (2, 12), generator=gen)
    monkeypatch.setenv("VGRPO_KERNEL_BUDGET_MB", repr(16 * size * 30 / 2**20))
    args = (h, w, ids, torch.randn(2), torch.ones(2, 12))
    with LargestTensor(is_fp32) as seen:
        fused_grpo_loss(*args, chunk_size=12, backend="triton", weight_grad="blocked").loss.backward()
    assert seen.largest <= 12 * vocab < vocab * size
    assert w.grad.dtype == torch.bfloat16 and torch.isfinite(w.grad.float()).all()
    w.grad = None
    with LargestTensor(is_fp32) as buffered:
        fused_grpo_loss(*args, chunk_size=12, backend="triton", weight_grad="buffer").loss.backward()
    assert buffered.largest == vocab * size  # the fp32 buffer the blocked path avoids
