"""The kernel section of ``python -m vgrpo.bench gpu``: log-prob kernels against an fp32 reference and each other.

The workload is :mod:`vgrpo.bench.logprobs`'s (its inputs, its implementations' closures and its
:class:`~vgrpo.bench.logprobs.PeakMemory`): one GRPO policy-loss step, forward + backward into the hidden states and
the lm_head weight, TRL's ``dapo`` loss with clipping and a k3 KL. Implementations:

* ``naive`` — full logits, ``log_softmax`` + gather, then the loss (autograd).
* ``liger`` — Liger-Kernel's fused linear GRPO loss, when importable.
* ``torch-logprobs`` / ``triton-logprobs`` — :func:`vgrpo.kernels.token_logprobs` on the chunked PyTorch / Triton
  backend, then the loss (backward recomputes the logits).
* ``torch-fused`` / ``triton-fused`` — :func:`vgrpo.kernels.fused_grpo_loss` on either backend.
* each of these four with ``-blocked``: the weight's gradient by vocabulary blocks (``weight_grad="blocked"``, no
  fp32 ``[V, H]`` buffer); without the suffix, ``weight_grad="buffer"`` (one fp32 ``[V, H]`` buffer). Each size
  notes which of the two ``"auto"`` picks there.

Per size and dtype: the fp32 reference (fp32 copies of the same inputs, full-precision matmuls, log_softmax in
chunks of rows, autograd), the measured bf16 matmul rate (``2·N·H·V`` flops of ``[N, H] @ [H, V]``), then each
implementation: max error of the loss, of the log-probs and (relative to the largest reference value) of both
gradients; median fwd+bwd time; peak memory above the inputs; the fraction of the matmul rate its ``6·N·H·V``
flops reach. Targets (for ``triton-fused`` and ``triton-fused-blocked``, judged on a GPU only): faster than naive
and Liger, peak ≤ 0.1× naive, ≥ 60% of the matmul rate (bf16 only). Errors are judged at every size.

Off CUDA (``--tiny``) the peak is the process's resident-set high-water mark, which at tiny sizes is noise; each row
then also gets ``largest_fp32`` — the elements of the largest fp32 tensor any op produced in the first step (a
``TorchDispatchMode`` sees every op's outputs, allocator-independent) — and each ``-blocked`` bf16 row is
checked to hold no fp32 ``[V, H]`` tensor. For that to test the blocks (at tiny size one chunk of logits, N·V,
is larger than V·H), ``--tiny`` runs the ``-blocked`` rows with a kernel budget of five vocabulary blocks and
three token chunks (``VGRPO_KERNEL_BUDGET_MB``) and with the PyTorch path's bf16 → fp32 weight tiles at 64 rows;
the "auto picks" note is for that budget.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vgrpo.bench.gpu import Check, SectionContext
from vgrpo.bench.logprobs import LOSS, MIB, PeakMemory, make_inputs, step_fn

log = logging.getLogger(__name__)

VOCAB = 151_936
#: (H, N) in order of value: Qwen2.5-VL-3B's hidden size first, then 7B's.
FULL_SIZES = [(2048, 8192), (3584, 16384), (2048, 16384), (3584, 8192)]
TINY_SIZES = [(32, 64)]
TINY_VOCAB = 300  # not a multiple of the Triton vocabulary tile: exercises the ragged last tile
DTYPES = ("bfloat16", "float32")
SEQ_LEN = 512  # tokens per completion (tiny: 32)
#: In order of value (a section that runs out of time drops the last ones).
IMPLS = (
    "naive",
    "liger",
    "triton-fused",
    "triton-fused-blocked",
    "triton-logprobs",
    "triton-logprobs-blocked",
    "torch-fused",
    "torch-fused-blocked",
    "torch-logprobs",
    "torch-logprobs-blocked",
)
#: Targets judged for these (on a GPU).
JUDGED = ("triton-fused", "triton-fused-blocked")
#: --tiny, -blocked rows: vocabulary rows per block (the kernel budget is sized for it) and the PyTorch weight tile.
TINY_BLOCK_ROWS, TINY_VOCAB_TILE = 60, 64
#: Tolerances of vgrpo's own implementations: loss and log-prob max abs error; gradient max error / max |ref|.
TOLERANCE = {"bfloat16": {"abs": 2e-2, "grad": 3e-2}, "float32": {"abs": 1e-3, "grad": 1e-3}}
MEMORY_TARGET, RATE_TARGET = 0.1, 0.6


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Environment variables set for the duration (the kernels read ``VGRPO_KERNELS``,
    ``VGRPO_KERNEL_WEIGHT_GRAD`` and ``VGRPO_KERNEL_BUDGET_MB`` at every call); None leaves one as it is."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is not None:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _tiny_kernels(hidden: int) -> Iterator[None]:
    """--tiny: a kernel budget of vocabulary blocks of ``TINY_BLOCK_ROWS`` rows and small bf16 weight tiles."""
    from vgrpo.kernels import chunked

    old_tile = chunked.VOCAB_TILE
    chunked.VOCAB_TILE = TINY_VOCAB_TILE
    try:
        with _environ(VGRPO_KERNEL_BUDGET_MB=repr(16 * hidden * TINY_BLOCK_ROWS / 2**20)):
            yield
    finally:
        chunked.VOCAB_TILE = old_tile


class LargestTensor(TorchDispatchMode):
    """The elements of the largest tensor any op produces while active, among those ``keep`` accepts (every
    tensor by default): a memory check that needs no allocator statistics, so it holds on any device."""

    def __init__(self, keep: Callable[[torch.Tensor], bool] | None = None) -> None:
        super().__init__()
        self.keep = keep
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and (self.keep is None or self.keep(t)):
                self.largest = max(self.largest, t.numel())
        return out


def is_fp32(t: torch.Tensor) -> bool:
    """``LargestTensor(is_fp32)``: only fp32 tensors count."""
    return t.dtype == torch.float32


def weight_grad_of(impl: str) -> str | None:
    """The ``weight_grad`` an implementation runs with (None: not one of vgrpo's kernels)."""
    if not impl.startswith(("torch-", "triton-")):
        return None
    return "blocked" if impl.endswith("-blocked") else "buffer"


def _budget_mib(device: str) -> float:
    from vgrpo.kernels import _budget

    return _budget(torch.device(device)) / MIB


def auto_weight_grad(dtype: str, hidden: int, vocab: int, device: str) -> str:
    """What ``weight_grad="auto"`` picks for this weight on ``device`` under the current kernel budget."""
    from vgrpo.kernels import _budget, chunked

    weight = torch.empty(vocab, hidden, dtype=getattr(torch, dtype), device="meta")
    blocked = chunked.blocked_weight_grad("auto", weight, _budget(torch.device(device)))
    return "blocked" if blocked else "buffer"


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def reference(x: dict[str, Any], rows: int) -> dict[str, torch.Tensor]:
    """fp32 loss, log-probs and gradients of the workload, ``rows`` completions at a time (dapo's normaliser is
    the step's token count, so per-chunk losses add up exactly)."""
    from vgrpo.loss import grpo_loss

    with _full_precision():
        w = x["weight"].detach().float().requires_grad_(True)
        num_items = float(x["mask"].sum())
        loss, logps, grad_h = torch.zeros((), device=w.device), [], []
        for s in range(0, x["ids"].shape[0], rows):
            e = min(s + rows, x["ids"].shape[0])
            h = x["hidden"][s:e].detach().float().requires_grad_(True)
            lp = torch.log_softmax(h @ w.t(), dim=-1).gather(-1, x["ids"][s:e, :, None]).squeeze(-1)
            out = grpo_loss(
                lp,
                x["old"][s:e],
                x["adv"][s:e],
                x["mask"][s:e],
                ref_logps=x["ref"][s:e],
                num_items=num_items,
                **LOSS,  # type: ignore[arg-type]
            )
            out.loss.backward()
            loss += out.loss.detach()
            logps.append(lp.detach())
            grad_h.append(h.grad)
    return {"loss": loss, "logps": torch.cat(logps), "grad_h": torch.cat(grad_h), "grad_w": w.grad}


def matmul_rate(tokens: int, hidden: int, vocab: int, device: str, reps: int) -> float:
    """Measured bf16 ``[N, H] @ [H, V]`` flop/s on this device, median of ``reps``."""
    a = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
    b = torch.randn(hidden, vocab, device=device, dtype=torch.bfloat16)
    times = []
    for i in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        c = a @ b
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
        del c
    del a, b
    _free(device)
    return 2 * tokens * hidden * vocab / statistics.median(times)


def _logps_of(impl: str, x: dict[str, Any]) -> torch.Tensor | None:
    """The implementation's own per-token log-probs (forward only), where it exposes them."""
    from vgrpo.kernels import fused_grpo_loss, token_logprobs

    h, w, ids = x["hidden"].detach(), x["weight"].detach(), x["ids"]
    with torch.no_grad():
        if impl == "naive":
            return torch.log_softmax((h @ w.t()).float(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
        if "-logprobs" in impl:
            return token_logprobs(h, w, ids)  # type: ignore[return-value]
        if "-fused" in impl:
            return fused_grpo_loss(
                h,
                w,
                ids,
                x["adv"],
                x["mask"],
                old_logps=x["old"],
                ref_logps=x["ref"],
                **LOSS,  # type: ignore[arg-type]
            ).logps
    return None


def _max_err(a: torch.Tensor, ref: torch.Tensor, relative: bool = False) -> float:
    err = float((a.float() - ref.float()).abs().max())
    return err / max(float(ref.abs().max()), 1e-30) if relative else err


def measure_impl(
    impl: str, x: dict[str, Any], ref: dict[str, torch.Tensor], device: str, reps: int
) -> dict[str, Any]:
    """Errors (from the first, untimed step), median time and peak memory of one implementation; off CUDA also
    the largest fp32 tensor of the first step (counted there, so the tiny time includes the counting)."""
    weight_grad = weight_grad_of(impl)
    backend = impl.split("-")[0] if weight_grad else None
    name = {"naive": "naive", "liger": "liger"}.get(impl) or (
        "vgrpo" if "-fused" in impl else "vgrpo-logprobs"
    )
    with _environ(VGRPO_KERNELS=backend, VGRPO_KERNEL_WEIGHT_GRAD=weight_grad):
        run = step_fn(name, x, 1.0)
        mem = PeakMemory(device)
        mem.start()
        times, loss = [], None
        for i in range(1 + reps):
            x["hidden"].grad = None
            x["weight"].grad = None
            _sync(device)
            start = time.perf_counter()
            with LargestTensor(is_fp32) if i == 0 and device != "cuda" else contextlib.nullcontext() as seen:
                loss = run()
            _sync(device)
            if i > 0 or reps == 0:  # reps 0 (tiny): the one step gives both the errors and the time
                times.append(time.perf_counter() - start)
            if i == 0:
                row: dict[str, Any] = {
                    "loss_err": _max_err(loss.detach(), ref["loss"]),
                    "grad_h_err": _max_err(x["hidden"].grad, ref["grad_h"], relative=True),
                    "grad_w_err": _max_err(x["weight"].grad, ref["grad_w"], relative=True),
                }
                if seen is not None:
                    row["largest_fp32"] = seen.largest
        peak = mem.peak()
        mem.stop()
        x["hidden"].grad = None
        x["weight"].grad = None
        lp = _logps_of(impl, x)
    row["logp_err"] = _max_err(lp, ref["logps"]) if lp is not None else None
    row["finite"] = bool(torch.isfinite(loss.detach()))  # type: ignore[union-attr]
    row["seconds"] = statistics.median(times)
    row["peak_mib"] = peak / MIB
    row["weight_grad"] = weight_grad
    return row


def _available(impl: str, device: str) -> str | None:
    """Why ``impl`` cannot run here, or None."""
    import importlib.util

    if impl == "liger" and importlib.util.find_spec("liger_kernel") is None:
        return "Liger-Kernel is not installed"
    if impl.startswith("triton-"):
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton on CPU needs TRITON_INTERPRET=1"
    return None


def _judge(ctx: SectionContext, rows: list[dict[str, Any]], label: str, dtype: str) -> None:
    """Errors of vgrpo's implementations (and, off CUDA, that a blocked bf16 weight gradient holds no fp32
    ``[V, H]`` tensor); the speed, memory and rate targets of :data:`JUDGED` (on a GPU)."""
    tol = TOLERANCE[dtype]
    for r in rows:
        if not r["impl"].startswith(("torch-", "triton-")) or "seconds" not in r:
            continue
        errs = [r["loss_err"], r["logp_err"]]
        ok = r["finite"] and max(errs) <= tol["abs"] and max(r["grad_h_err"], r["grad_w_err"]) <= tol["grad"]
        ctx.result.checks.append(
            Check(
                f"{r['impl']} {label} matches fp32",
                bool(ok),
                f"loss {r['loss_err']:.2e}, log-probs {r['logp_err']:.2e} (≤ {tol['abs']:g}); grad h "
                f"{r['grad_h_err']:.2e}, grad W {r['grad_w_err']:.2e} of max (≤ {tol['grad']:g})",
            )
        )
        if r["impl"].endswith("-blocked") and dtype != "float32" and "largest_fp32" in r:
            full = r["V"] * r["H"]
            ctx.result.checks.append(
                Check(
                    f"{r['impl']} {label} holds no fp32 [V, H] tensor",
                    r["largest_fp32"] < full,
                    f"largest fp32 tensor {r['largest_fp32']:,} elements; V·H = {full:,}",
                )
            )
    by = {r["impl"]: r for r in rows if "seconds" in r}
    for impl in JUDGED:
        _judge_targets(ctx, by, impl, label, dtype)


def _judge_targets(
    ctx: SectionContext, by: dict[str, dict[str, Any]], impl: str, label: str, dtype: str
) -> None:
    """Speed, memory and rate targets of ``impl`` against naive and Liger (judged on a GPU only)."""
    ours, naive, liger = by.get(impl), by.get("naive"), by.get("liger")
    if ours is None or naive is None:
        return
    judged = not ctx.tiny

    def check(name: str, ok: bool, value: str, judge: bool = True) -> None:
        verdict = ok if judged and judge else None
        ctx.result.checks.append(Check(f"{impl} {label}: {name}", verdict, value))

    check(
        "faster than naive",
        ours["seconds"] < naive["seconds"],
        f"{ours['seconds']:.4f} s vs {naive['seconds']:.4f} s",
    )
    if liger is not None:
        check(
            "faster than Liger",
            ours["seconds"] < liger["seconds"],
            f"{ours['seconds']:.4f} s vs {liger['seconds']:.4f} s",
        )
    ratio = ours["peak_mib"] / naive["peak_mib"] if naive["peak_mib"] > 0 else float("inf")
    check(
        f"peak ≤ {MEMORY_TARGET:g}× naive",
        ratio <= MEMORY_TARGET,
        f"{ours['peak_mib']:,.0f} MiB = {ratio:.3f}× naive",
    )
    check(
        f"≥ {RATE_TARGET:.0%} of the bf16 matmul rate",
        ours["rate_fraction"] >= RATE_TARGET,
        f"{ours['rate_fraction']:.1%} ({ours['tflops']:.1f} of {ours['matmul_tflops']:.1f} TFLOP/s)",
        judge=dtype == "bfloat16",  # fp32 math has no bf16 tensor-core rate to reach: reported only
    )


def run(ctx: SectionContext) -> None:
    """Every (dtype, H, N) in order of value while the section's time lasts; rows and checks into ``ctx``."""
    device, tiny = ctx.device, ctx.tiny
    sizes = TINY_SIZES if tiny else FULL_SIZES
    vocab = TINY_VOCAB if tiny else VOCAB
    seq_len = 32 if tiny else SEQ_LEN
    reps = 0 if tiny else 3
    ctx.result.sizes = {
        "V": vocab,
        "H x N": " ".join(f"{h}x{n}" for h, n in sizes),
        "dtypes": "/".join(DTYPES),
        "tokens per completion": seq_len,
        "reps": reps,
    }
    impls = []
    for impl in IMPLS:
        why = _available(impl, device)
        if why:
            ctx.result.notes.append(f"{impl}: skipped ({why})")
        else:
            impls.append(impl)
    rates: dict[tuple[int, int], float] = {}
    for dtype in DTYPES:
        for hidden, tokens in sizes:
            label = f"{dtype} H={hidden} N={tokens}"
            if ctx.left_s() < 5:
                ctx.result.notes.append(f"{label}: not run (section time spent)")
                continue
            log.info("kernels: %s", label)
            if (hidden, tokens) not in rates:
                rates[hidden, tokens] = matmul_rate(tokens, hidden, vocab, device, max(1, reps))
            rate = rates[hidden, tokens]
            x = make_inputs(tokens, hidden, vocab, seq_len, device, dtype, on_device=True)
            ref = reference(x, max(1, (2**31 // (vocab * 4)) // seq_len))
            rows = _measure_all(ctx, impls, x, ref, dtype, hidden, tokens, vocab, rate, reps)
            with _tiny_kernels(hidden) if tiny else contextlib.nullcontext():
                auto = auto_weight_grad(dtype, hidden, vocab, device)
                budget = _budget_mib(device)
            ctx.result.notes.append(
                f"{label}: weight_grad='auto' picks {auto} (kernel budget {budget:.4g} MiB)"
            )
            naive = next((r for r in rows if r["impl"] == "naive" and "seconds" in r), None)
            for r in rows:
                if naive and "seconds" in r:
                    r["x_naive_time"] = r["seconds"] / naive["seconds"]
                    r["x_naive_peak"] = r["peak_mib"] / naive["peak_mib"] if naive["peak_mib"] > 0 else None
            _judge(ctx, rows, label, dtype)
            ctx.save()
            del x, ref
            _free(device)


def _measure_all(
    ctx: SectionContext,
    impls: list[str],
    x: dict[str, Any],
    ref: dict[str, torch.Tensor],
    dtype: str,
    hidden: int,
    tokens: int,
    vocab: int,
    rate: float,
    reps: int,
) -> list[dict[str, Any]]:
    """One row per implementation at one size, saved to the section's result as it comes."""
    device = ctx.device
    label = f"{dtype} H={hidden} N={tokens}"
    rows = []
    for impl in impls:
        row: dict[str, Any] = {"impl": impl, "dtype": dtype, "H": hidden, "N": tokens, "V": vocab}
        if ctx.left_s() < 2:
            row["status"] = "not run (section time spent)"
        else:
            try:
                tiny_blocks = ctx.tiny and impl.endswith("-blocked")
                with _tiny_kernels(hidden) if tiny_blocks else contextlib.nullcontext():
                    row.update(measure_impl(impl, x, ref, device, reps))
                flops = 6 * tokens * hidden * vocab
                row["tflops"] = flops / row["seconds"] / 1e12
                row["matmul_tflops"] = rate / 1e12
                row["rate_fraction"] = flops / row["seconds"] / rate
                row["status"] = "ok"
            except torch.OutOfMemoryError:
                row["status"] = "out of memory"
            except Exception as exc:  # one implementation failing must not hide the others
                log.exception("kernels: %s %s failed", impl, label)
                row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                ours = impl.startswith(("torch-", "triton-"))
                ctx.result.checks.append(
                    Check(f"{impl} {label} runs", False if ours else None, row["status"])
                )
            _free(device)
        rows.append(row)
        ctx.result.rows.append(row)
        ctx.save()
    return rows
