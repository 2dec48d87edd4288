"""Per-token log-probs and the GRPO loss, forward + backward: time and peak memory per implementation.

The workload is one GRPO policy-loss step on ``--tokens`` completion tokens (``tokens / seq_len`` completions):
hidden states ``[B, T, H]`` and the lm_head weight ``[V, H]`` (both requiring grad), per-token log-probs of the
completion tokens, TRL's ``dapo`` loss with clipping (0.2 / 0.28) and a k3 KL (beta 0.04) against given old and
reference log-probs, then backward into hidden and weight. Implementations:

* ``naive`` — ``log_softmax(h @ W.T / T).gather(...)`` on the full logits, then :func:`vgrpo.loss.grpo_loss`.
* ``trl`` — TRL's ``selective_log_softmax`` on the full logits, then the same loss.
* ``liger`` — Liger-Kernel's ``LigerFusedLinearGRPOLoss`` (its chunked PyTorch path, ``compiled=False``).
* ``vgrpo`` — :func:`vgrpo.kernels.fused_grpo_loss` (loss and gradients in one chunked pass).
* ``vgrpo-logprobs`` — :func:`vgrpo.kernels.token_logprobs` (backward recomputes chunk logits), then the loss.

Each implementation runs in its own process so its peak memory is its own. Peak memory is the increase over a
baseline taken after the inputs exist: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the kernel's
resident-set high-water mark (``VmHWM``), reset to the current RSS at the baseline by writing 5 to
``/proc/self/clear_refs`` (where that is not allowed, a thread sampling RSS every millisecond). Time is the
median of ``--reps`` fwd+bwd steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

IMPLS = ("naive", "trl", "liger", "vgrpo", "vgrpo-logprobs")
MIB = 2**20
LOSS = dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.04)


# ---------------------------------------------------------------------------------------------------------------
# Memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory above a baseline: CUDA allocator stats, else the CPU resident-set high-water mark."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def start(self) -> None:
        """Take the baseline now."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated - allocated at baseline"
            return
        self.base = _rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.method = "VmHWM (reset via /proc/self/clear_refs) - RSS at baseline"
        except OSError:
            self.method = "RSS sampled every 1 ms - RSS at baseline"
            self._sampled = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _rss_bytes())
            time.sleep(0.001)

    def peak(self) -> int:
        """Bytes of the peak above the baseline so far."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if self._thread is not None:
            return max(self._sampled, _rss_bytes()) - self.base
        return _status_kib("VmHWM") * 1024 - self.base

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------------------------------
# Workload


def make_inputs(
    tokens: int,
    hidden: int,
    vocab: int,
    seq_len: int,
    device: str,
    dtype: str,
    seed: int = 0,
    on_device: bool = False,
) -> dict[str, Any]:
    """Hidden states, weight, completion ids, advantages, old/ref log-probs; allocated without temporaries.
    ``on_device``: drawn by a generator on ``device`` (fast at GPU sizes; other numbers than the CPU stream)."""
    import torch

    where = device if on_device else "cpu"
    gen = torch.Generator(device=where).manual_seed(seed)
    dt = getattr(torch, dtype)
    b = max(1, tokens // seq_len)
    t = tokens // b
    h = torch.empty(b, t, hidden, dtype=dt, device=where)
    h.normal_(generator=gen)
    w = torch.empty(vocab, hidden, dtype=dt, device=where)
    w.normal_(generator=gen).mul_(hidden**-0.5)
    ids = torch.randint(0, vocab, (b, t), generator=gen, device=where)
    # old/ref log-probs near the true ones (about -log V), so ratios straddle the clip range
    base = torch.full((b, t), -float(torch.log(torch.tensor(float(vocab)))), device=where)
    old = base + 0.3 * torch.randn(b, t, generator=gen, device=where)
    ref = base + 0.2 * torch.randn(b, t, generator=gen, device=where)
    adv = torch.randn(b, generator=gen, device=where)
    mask = torch.ones(b, t, device=where)
    out = dict(hidden=h, weight=w, ids=ids, old=old, ref=ref, adv=adv, mask=mask)
    out = {k: v.to(device) for k, v in out.items()}
    out["hidden"].requires_grad_(True)
    out["weight"].requires_grad_(True)
    return out


def _reference_loss(logps: Any, x: dict[str, Any]) -> Any:
    from vgrpo.loss import grpo_loss

    out = grpo_loss(logps, x["old"], x["adv"], x["mask"], ref_logps=x["ref"], **LOSS)  # type: ignore[arg-type]
    return out.loss


def step_fn(impl: str, x: dict[str, Any], temperature: float) -> Callable[[], Any]:
    """A closure running one forward + backward of ``impl``; returns the loss."""
    import torch.nn.functional as F

    h, w, ids = x["hidden"], x["weight"], x["ids"]
    if impl == "naive":

        def run() -> Any:
            logits = h @ w.t() / temperature
            logps = F.log_softmax(logits.float(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
            loss = _reference_loss(logps, x)
            loss.backward()
            return loss

    elif impl == "trl":
        from trl.trainer.utils import selective_log_softmax

        def run() -> Any:
            logits = h @ w.t()
            logps = selective_log_softmax(logits.float(), ids, temperature=temperature)
            loss = _reference_loss(logps, x)
            loss.backward()
            return loss

    elif impl == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        fn = LigerFusedLinearGRPOLoss(
            beta=LOSS["beta"],
            compiled=False,
            use_ref_model=True,
            epsilon_low=LOSS["epsilon"],
            epsilon_high=LOSS["epsilon_high"],
            loss_type=LOSS["loss_type"],
            temperature=temperature,
        )

        def run() -> Any:
            loss, _ = fn(
                h, w, ids, x["mask"], x["adv"], ref_per_token_logps=x["ref"], old_per_token_logps=x["old"]
            )
            loss.backward()
            return loss

    elif impl == "vgrpo":
        from vgrpo.kernels import fused_grpo_loss

        def run() -> Any:
            out = fused_grpo_loss(
                h,
                w,
                ids,
                x["adv"],
                x["mask"],
                old_logps=x["old"],
                ref_logps=x["ref"],
                temperature=temperature,
                **LOSS,  # type: ignore[arg-type]
            )
            out.loss.backward()
            return out.loss

    elif impl == "vgrpo-logprobs":
        from vgrpo.kernels import token_logprobs

        def run() -> Any:
            logps = token_logprobs(h, w, ids, temperature=temperature)
            loss = _reference_loss(logps, x)
            loss.backward()
            return loss

    else:
        raise ValueError(f"unknown implementation {impl!r}; one of {', '.join(IMPLS)}")
    return run


def measure(
    impl: str,
    tokens: int,
    hidden: int,
    vocab: int,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    seq_len: int = 128,
    reps: int = 3,
    warmup: int = 1,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Median fwd+bwd seconds and peak extra memory of one implementation, in this process."""
    import torch

    x = make_inputs(tokens, hidden, vocab, seq_len, device, dtype)
    run = step_fn(impl, x, temperature)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    mem = PeakMemory(device)
    mem.start()
    times, loss = [], None
    for i in range(warmup + reps):
        x["hidden"].grad = None
        x["weight"].grad = None
        sync()
        start = time.perf_counter()
        loss = run()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = mem.peak()
    mem.stop()
    seconds = statistics.median(times)
    flops = 6 * tokens * hidden * vocab
    return {
        "impl": impl,
        "tokens": x["ids"].numel(),
        "hidden": hidden,
        "vocab": vocab,
        "device": device,
        "dtype": dtype,
        "seconds": round(seconds, 4),
        "times": [round(t, 4) for t in times],
        "peak_mib": round(peak / MIB, 1),
        "tflops": round(flops / seconds / 1e12, 3),
        "loss": float(loss.detach()),  # type: ignore[union-attr]
        "grad_weight_norm": float(x["weight"].grad.float().norm()),
        "grad_hidden_norm": float(x["hidden"].grad.float().norm()),
        "memory_method": mem.method,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"{platform.machine()} {os.cpu_count()} cores"


def _run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for impl in IMPLS:
        cmd = [sys.executable, "-m", "vgrpo.bench", "logprobs", "--impl", impl, *_shared_args(args), "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"impl": impl, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(proc.stdout)["results"][0])
    return rows


def _shared_args(args: argparse.Namespace) -> list[str]:
    return [
        "--tokens",
        str(args.tokens),
        "--hidden",
        str(args.hidden),
        "--vocab",
        str(args.vocab),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--seq-len",
        str(args.seq_len),
        "--reps",
        str(args.reps),
        "--warmup",
        str(args.warmup),
        "--temperature",
        str(args.temperature),
    ]


def targets_met(rows: list[dict[str, Any]]) -> dict[str, bool | None]:
    """The CPU targets for ``vgrpo``: memory <= 0.35x naive and < liger; time <= 1.1x naive and <= liger."""
    by = {r["impl"]: r for r in rows if "error" not in r}
    ours, naive, liger = by.get("vgrpo"), by.get("naive"), by.get("liger")
    if not ours or not naive:
        return {}
    res: dict[str, bool | None] = {
        "memory <= 0.35x naive": ours["peak_mib"] <= 0.35 * naive["peak_mib"],
        "time <= 1.1x naive": ours["seconds"] <= 1.1 * naive["seconds"],
    }
    if liger:
        res["memory < liger"] = ours["peak_mib"] < liger["peak_mib"]
        res["time <= liger"] = ours["seconds"] <= liger["seconds"]
    return res


def _print_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    naive = next((r for r in rows if r["impl"] == "naive" and "error" not in r), None)
    title = (
        f"log-probs + GRPO loss fwd+bwd: N={meta['tokens']} H={meta['hidden']} V={meta['vocab']} "
        f"{meta['dtype']} on {meta['machine']} ({meta['device']}), {meta['date']}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("impl", "fwd+bwd s", "x naive", "peak MiB", "x naive", "TFLOP/s", "loss", "|grad W|"):
        table.add_column(col, justify="left" if col == "impl" else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["impl"], f"[red]{r['error']}[/red]", "", "", "", "", "", "")
            continue
        tx = f"{r['seconds'] / naive['seconds']:.2f}" if naive else ""
        mx = f"{r['peak_mib'] / naive['peak_mib']:.2f}" if naive and naive["peak_mib"] > 0 else ""
        table.add_row(
            r["impl"],
            f"{r['seconds']:.3f}",
            tx,
            f"{r['peak_mib']:,.0f}",
            mx,
            f"{r['tflops']:.3f}",
            f"{r['loss']:.6f}",
            f"{r['grad_weight_norm']:.6f}",
        )
    console = Console(width=max(Console().width, 120))  # a pipe would get 80 columns and truncated names
    console.print(table)
    for name, ok in targets_met(rows).items():
        console.print(f"vgrpo {name}: " + ("yes" if ok else "[red]NO[/red]"))
    method = next((r["memory_method"] for r in rows if "memory_method" in r), "")
    console.print(f"peak memory: {method}; time: median of {meta['reps']} after {meta['warmup']} warm-up")


def run(args: argparse.Namespace) -> int:
    meta = {
        "benchmark": "logprobs",
        "tokens": args.tokens,
        "hidden": args.hidden,
        "vocab": args.vocab,
        "device": args.device,
        "dtype": args.dtype,
        "machine": _machine(args.device),
        "date": date.today().isoformat(),
        "reps": args.reps,
        "warmup": args.warmup,
    }
    if args.impl == "all":
        rows = _run_all(args)
    else:
        row = measure(
            args.impl,
            args.tokens,
            args.hidden,
            args.vocab,
            device=args.device,
            dtype=args.dtype,
            seq_len=args.seq_len,
            reps=args.reps,
            warmup=args.warmup,
            temperature=args.temperature,
        )
        rows = [row]
    if args.json:
        print(json.dumps({**meta, "results": rows, "targets": targets_met(rows)}, indent=2))
    else:
        _print_table(rows, meta)
    return 0 if all("error" not in r for r in rows) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--impl", default="all", choices=(*IMPLS, "all"), help="implementation (default: all)"
    )
    parser.add_argument("--tokens", type=int, default=1024, help="completion tokens N (default 1024)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size H (default 256)")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary V (default 151,936: Qwen2.5)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per completion (default 128)")
    parser.add_argument("--reps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)
