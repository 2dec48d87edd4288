"""Chunked log-prob kernels in plain PyTorch, and the autograd functions every backend shares.

Rows (tokens) are processed in chunks of ``rows`` sized from a memory budget. For one chunk the logits
``z = (h @ W.T + b) / T`` are computed in fp32 into a reusable ``[rows, V]`` buffer, reduced to a log-sum-exp,
the target's log-prob and optionally the entropy, and then turned in place into the gradient of the logits
``G = dL/dz`` from which ``grad_hidden = G @ W / T`` and ``grad_weight += G.T @ h / T`` follow. Nothing of size
``N x V`` is ever allocated. The weight's gradient is accumulated in one of two ways:

* ``buffer`` — one fp32 ``[V, H]`` buffer for the whole call, added to by every chunk, cast to the weight's
  dtype at the end (free for an fp32 weight: the buffer is the gradient).
* ``blocked`` — vocabulary blocks of ``Vb`` rows: for each block, every token chunk's logits of that block are
  recomputed from the saved per-token log-sum-exp, reduced over all chunks in one fp32 ``[Vb, H]`` buffer and
  written once in the weight's dtype. No fp32 ``[V, H]`` buffer; ``grad_hidden`` adds up over the blocks.

* :class:`TokenLogprobs` saves only the per-token log-sum-exp (and entropy) and recomputes each chunk's logits
  in backward, so its gradient works for any downstream loss.
* :class:`FusedLoss` takes a callback giving the loss of a chunk and its gradient with respect to the chunk's
  log-probs (the GRPO objective needs nothing else), computes loss and parameter gradients in the forward
  pass over chunks, and only scales them in backward: no recomputation. Blocked, the chunk pass computes the
  loss, ``dloss/dlogp``, ``grad_hidden`` and ``grad_bias``; a second pass over vocabulary blocks recomputes
  the logits for ``grad_weight`` (one matmul more than the buffer's three).

A backend (:class:`TorchOps` here, ``TritonOps`` for CUDA) supplies the per-chunk work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

#: Bytes of ``[rows, V]`` fp32 work buffers a call may hold at once, per device type.
DEFAULT_BUDGET_BYTES = {"cpu": 128 * 2**20, "cuda": 1024 * 2**20}
#: Vocabulary rows of a bf16/fp16 weight upcast to fp32 at a time on the PyTorch path.
VOCAB_TILE = 8192
#: How the weight's gradient is accumulated: "auto" picks (see :func:`blocked_weight_grad`).
WEIGHT_GRADS = ("auto", "buffer", "blocked")
#: Stands in for -inf log-probs in the entropy terms so that ``0 * log 0`` counts as 0, not NaN.
NEG_BIG = -1e30

#: ``chunk_loss_grad(logp_chunk, start, end, need_grad) -> (loss of the chunk, dloss/dlogp or None)``.
ChunkLossGrad = Callable[[torch.Tensor, int, int, bool], tuple[torch.Tensor, "torch.Tensor | None"]]
#: ``loss_grad(logp_chunk) -> (loss of the chunk, dloss/dlogp or None)`` for one chunk.
LossGrad = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


def rows_for_budget(n: int, vocab: int, buffers: int, budget: int) -> int:
    """Rows per chunk so that ``buffers`` fp32 ``[rows, vocab]`` buffers fit ``budget``, balanced over chunks."""
    if n <= 0:
        return 1
    rows = max(1, budget // max(1, buffers * vocab * 4))
    chunks = math.ceil(n / rows)
    return math.ceil(n / chunks)


def weight_block_rows(vocab: int, size: int, budget: int) -> int:
    """Vocabulary rows per block of the blocked weight gradient: its fp32 ``[rows, H]`` accumulator takes at
    most a quarter of ``budget``; blocks are balanced."""
    most = max(1, budget // max(1, 4 * size * 4))
    blocks = math.ceil(vocab / most)
    return math.ceil(vocab / blocks)


def blocked_weight_grad(mode: str, weight: torch.Tensor, budget: int) -> bool:
    """Whether the weight's gradient goes by vocabulary blocks: ``mode`` "blocked", or "auto" with a bf16/fp16
    weight whose fp32 ``[V, H]`` buffer would exceed ``budget`` (the bytes allowed for the chunk buffers).

    An fp32 weight keeps the buffer under "auto": the buffer is then the gradient itself (no extra memory),
    and the fused loss would pay a fourth logits matmul for nothing.
    """
    if mode != "auto":  # checked by the public entry points (vgrpo.kernels)
        return mode == "blocked"
    return weight.dtype != torch.float32 and weight.numel() * 4 > budget


class Ops(Protocol):
    """The per-chunk work a backend provides (all math in fp32).

    ``backward`` may get a block of vocabulary rows as ``weight`` (and ``bias``), with ``targets`` shifted to
    the block's first row: a target outside ``[0, rows of the block)`` then contributes no one-hot term.
    ``accumulate`` adds to ``grad_h`` instead of overwriting it. ``fused`` returns (loss, logp, lse, entropy).
    """

    def work_buffers(self, phase: str, entropy: bool) -> int: ...

    def forward_rows(self, n: int, rows: int) -> int: ...

    def forward(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        entropy: bool,
        work: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...

    def backward(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        lse: torch.Tensor,
        ent: torch.Tensor | None,
        g: torch.Tensor,
        g_ent: torch.Tensor | None,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        work: list[torch.Tensor],
        accumulate: bool = False,
    ) -> None: ...

    def fused(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        entropy: bool,
        loss_grad: LossGrad,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        work: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


# ---------------------------------------------------------------------------------------------------------------
# The PyTorch backend


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of two ``[c, V]`` tensors without a ``[c, V]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _onehot_add(grad: torch.Tensor, targets: torch.Tensor, values: torch.Tensor) -> None:
    """``grad[i, targets[i]] += values[i]`` in place, for the rows whose target is a column of ``grad``."""
    cols = grad.shape[1]
    inside = (targets >= 0) & (targets < cols)
    flat = torch.arange(targets.numel(), device=targets.device) * cols + targets.clamp(0, cols - 1)
    grad.view(-1).index_add_(0, flat, torch.where(inside, values, 0.0))


class TorchOps:
    """Chunk work in plain PyTorch (CPU, or any device without Triton)."""

    name = "torch"

    def work_buffers(self, phase: str, entropy: bool) -> int:
        """fp32 ``[rows, V]`` buffers per chunk in every phase: the logits, plus one for ``exp`` with entropy."""
        return 2 if entropy else 1

    def forward_rows(self, n: int, rows: int) -> int:
        """The forward materialises logits too, so it chunks like the backward."""
        return rows

    @staticmethod
    def _logits(
        h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, inv_t: float, out: torch.Tensor
    ) -> torch.Tensor:
        """``out = (h @ W.T + b) / T`` in fp32; returns ``h / T`` in fp32 (the right factor of grad_weight)."""
        h32 = h.to(torch.float32) * inv_t
        b32 = None if bias is None else bias.to(torch.float32) * inv_t
        if weight.dtype == torch.float32:
            if b32 is None:
                torch.mm(h32, weight.t(), out=out)
            else:
                torch.addmm(b32, h32, weight.t(), out=out)
            return h32
        for v0 in range(0, weight.shape[0], VOCAB_TILE):
            v1 = min(v0 + VOCAB_TILE, weight.shape[0])
            block = h32 @ weight[v0:v1].to(torch.float32).t()
            if b32 is not None:
                block += b32[v0:v1]
            out[:, v0:v1] = block
        return h32

    @staticmethod
    def _apply_grad(
        grad_z: torch.Tensor,
        h32: torch.Tensor,
        weight: torch.Tensor,
        inv_t: float,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        accumulate: bool = False,
    ) -> None:
        """Accumulate the parameter gradients of ``z = (h @ W.T + b) / T`` given ``grad_z = dL/dz``
        (``grad_h`` is overwritten unless ``accumulate``)."""
        if grad_h is not None and accumulate:  # a vocabulary block's share: grad_h += G @ W_block / T
            for v0 in range(0, weight.shape[0], VOCAB_TILE):
                v1 = min(v0 + VOCAB_TILE, weight.shape[0])
                grad_h.addmm_(grad_z[:, v0:v1], weight[v0:v1].to(torch.float32), alpha=inv_t)
        elif grad_h is not None:
            if weight.dtype == torch.float32:
                torch.mm(grad_z, weight, out=grad_h)
            else:
                grad_h.zero_()
                for v0 in range(0, weight.shape[0], VOCAB_TILE):
                    v1 = min(v0 + VOCAB_TILE, weight.shape[0])
                    grad_h.addmm_(grad_z[:, v0:v1], weight[v0:v1].to(torch.float32))
            grad_h.mul_(inv_t)
        if grad_w is not None:
            grad_w.addmm_(grad_z.t(), h32)  # h32 already carries the 1/T
        if grad_b is not None:
            grad_b.add_(grad_z.sum(0), alpha=inv_t)

    def _stats(
        self, z: torch.Tensor, targets: torch.Tensor, entropy: bool, spare: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """logp, lse, entropy of logits ``z``; leaves ``exp(z - max)`` in a buffer, returned with its row sums."""
        zmax = z.amax(1)
        target_z = z.gather(1, targets[:, None]).squeeze(1)
        z.sub_(zmax[:, None])
        ent = None
        if entropy:
            e = torch.exp(z, out=spare)
            s = e.sum(1)
            ent = s.log() - _rowdot(e, z.clamp_(min=NEG_BIG)) / s
        else:
            e = z.exp_()
            s = e.sum(1)
        lse = zmax + s.log()
        return target_z - lse, lse, ent, e, s

    def forward(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        entropy: bool,
        work: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs of the targets, log-sum-exp and (optionally) entropy of one chunk."""
        c = h.shape[0]
        z = work[0][:c]
        self._logits(h, weight, bias, inv_t, z)
        logp, lse, ent, _, _ = self._stats(z, targets, entropy, work[1][:c] if entropy else None)
        return logp, lse, ent

    def backward(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        lse: torch.Tensor,
        ent: torch.Tensor | None,
        g: torch.Tensor,
        g_ent: torch.Tensor | None,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        work: list[torch.Tensor],
        accumulate: bool = False,
    ) -> None:
        """Recompute one chunk's logits and accumulate the gradients of ``g . logp + g_ent . entropy``."""
        c = h.shape[0]
        z = work[0][:c]
        h32 = self._logits(h, weight, bias, inv_t, z)
        z.sub_(lse[:, None])  # log p
        if g_ent is None:  # dL/dz = g * (onehot - p)
            grad_z = z.exp_().mul_(-g[:, None])
        else:  # ... - g_ent * p * (log p + H)
            p = torch.exp(z, out=work[1][:c])
            grad_z = z.clamp_(min=NEG_BIG).add_(ent[:, None])  # type: ignore[index]
            grad_z.mul_(g_ent[:, None]).add_(g[:, None]).mul_(p).neg_()
        _onehot_add(grad_z, targets, g)
        self._apply_grad(grad_z, h32, weight, inv_t, grad_h, grad_w, grad_b, accumulate)

    def fused(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        entropy: bool,
        loss_grad: LossGrad,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        work: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One pass over a chunk: log-probs, the loss and its gradient, with the logits computed once."""
        c = h.shape[0]
        z = work[0][:c]
        h32 = self._logits(h, weight, bias, inv_t, z)
        logp, lse, ent, e, s = self._stats(z, targets, entropy, work[1][:c] if entropy else None)
        loss, g = loss_grad(logp)
        if g is not None:
            grad_z = e.mul_((-g / s)[:, None])  # -g * softmax
            _onehot_add(grad_z, targets, g)
            self._apply_grad(grad_z, h32, weight, inv_t, grad_h, grad_w, grad_b)
        return loss, logp, lse, ent


# ---------------------------------------------------------------------------------------------------------------
# Autograd functions shared by the backends


def _grad_buffers(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, need: tuple[bool, bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """fp32 gradient accumulators for hidden ``[N, H]``, weight ``[V, H]``, bias ``[V]`` (None if not needed)."""
    f32 = dict(dtype=torch.float32, device=hidden.device)
    grad_h = torch.empty(hidden.shape, **f32) if need[0] else None  # type: ignore[arg-type]
    grad_w = torch.zeros(weight.shape, **f32) if need[1] else None  # type: ignore[arg-type]
    grad_b = torch.zeros(bias.shape, **f32) if need[2] and bias is not None else None  # type: ignore[arg-type]
    return grad_h, grad_w, grad_b


def _work(
    ops: Ops, phase: str, rows: int, vocab: int, entropy: bool, device: torch.device
) -> list[torch.Tensor]:
    """The ``[rows, V]`` fp32 buffers reused by every chunk of one phase ("forward", "backward" or "fused")."""
    count = ops.work_buffers(phase, entropy) if rows > 0 else 0
    return [torch.empty(rows, vocab, dtype=torch.float32, device=device) for _ in range(count)]


def _cast(grad: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None or like is None else grad.to(like.dtype)


@dataclass(frozen=True)
class WeightBlocks:
    """The blocked weight gradient's sizes: vocabulary rows per block, token rows per chunk within a block."""

    vocab: int
    rows: int


def _blocked_grads(
    ops: Ops,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    inv_t: float,
    lse: torch.Tensor,
    ent: torch.Tensor | None,
    g: torch.Tensor,
    g_ent: torch.Tensor | None,
    grad_h: torch.Tensor | None,
    grad_b: torch.Tensor | None,
    blocks: WeightBlocks,
) -> torch.Tensor:
    """Gradients of ``g . logp + g_ent . entropy`` by vocabulary blocks; returns the weight's, in its dtype.

    For each block of ``blocks.vocab`` rows of ``weight``, every chunk of ``blocks.rows`` tokens recomputes its
    logits of the block (log-probs from the saved ``lse``), adds its share to ``grad_h`` (fp32, overwritten by
    the first block) and to ``grad_b`` (fp32), and reduces the block's weight gradient over all chunks in fp32;
    the block is then written once. An fp32 weight's gradient is accumulated in place, a bf16/fp16 one's in a
    reused fp32 ``[Vb, H]`` buffer.
    """
    n, (vocab, size) = hidden.shape[0], weight.shape
    step, width = max(1, blocks.rows), max(1, blocks.vocab)
    grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    in_place = weight.dtype == torch.float32
    acc = (
        None if in_place else torch.empty(min(width, vocab), size, dtype=torch.float32, device=weight.device)
    )
    work = _work(ops, "backward", min(step, n), min(width, vocab), g_ent is not None, hidden.device)
    for v0 in range(0, vocab, width):
        v1 = min(v0 + width, vocab)
        gw = grad_w[v0:v1] if in_place else acc[: v1 - v0]  # type: ignore[index]
        gw.zero_()
        local = targets - v0  # targets outside the block add no one-hot term
        cols = v1 - v0  # the last block may be narrower: contiguous [rows, cols] views of the buffers
        block_work = [b.view(-1)[: b.shape[0] * cols].view(b.shape[0], cols) for b in work]
        for s in range(0, n, step):
            e = min(s + step, n)
            ops.backward(
                hidden[s:e],
                weight[v0:v1],
                None if bias is None else bias[v0:v1],
                local[s:e],
                inv_t,
                lse[s:e],
                None if ent is None else ent[s:e],
                g[s:e],
                None if g_ent is None else g_ent[s:e],
                None if grad_h is None else grad_h[s:e],
                gw,
                None if grad_b is None else grad_b[v0:v1],
                block_work,
                accumulate=v0 > 0,
            )
        if not in_place:
            grad_w[v0:v1].copy_(gw)
    return grad_w


class TokenLogprobs(torch.autograd.Function):
    """Per-token log-probs (and entropy) of ``softmax((h @ W.T + b) / T)``; backward recomputes chunk logits.

    ``blocks`` (None: one fp32 ``[V, H]`` buffer) computes the weight's gradient by vocabulary blocks.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        entropy: bool,
        rows: int,
        ops: Any,
        blocks: WeightBlocks | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = hidden.shape[0], weight.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        ent = torch.empty_like(logp) if entropy else logp.new_empty(0)
        step = ops.forward_rows(n, rows)
        work = _work(ops, "forward", min(step, n), vocab, entropy, hidden.device)
        for s in range(0, n, step):
            e = min(s + step, n)
            lp, ls, en = ops.forward(hidden[s:e], weight, bias, targets[s:e], inv_t, entropy, work)
            logp[s:e], lse[s:e] = lp, ls
            if entropy:
                ent[s:e] = en
        del work
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent if entropy else None)
        ctx.inv_t, ctx.entropy, ctx.rows, ctx.ops, ctx.blocks = inv_t, entropy, rows, ops, blocks
        ctx.set_materialize_grads(False)
        if not entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, g_logp: torch.Tensor | None, g_ent: torch.Tensor | None
    ) -> tuple[Any, ...]:
        hidden, weight, bias, targets, lse, ent = ctx.saved_tensors
        none = (None,) * 6
        if g_logp is None and g_ent is None:
            return (None, None, None) + none
        n = hidden.shape[0]
        g = g_logp.to(torch.float32) if g_logp is not None else lse.new_zeros(n)
        g_ent = None if g_ent is None or not ctx.entropy else g_ent.to(torch.float32)
        need = ctx.needs_input_grad[:3]
        if ctx.blocks is not None and need[1]:
            grad_h, _, grad_b = _grad_buffers(hidden, weight, bias, (need[0], False, need[2]))
            grad_w = _blocked_grads(
                ctx.ops,
                hidden,
                weight,
                bias,
                targets,
                ctx.inv_t,
                lse,
                ent,
                g,
                g_ent,
                grad_h,
                grad_b,
                ctx.blocks,
            )
            return (_cast(grad_h, hidden), grad_w, _cast(grad_b, bias)) + none
        grad_h, grad_w, grad_b = _grad_buffers(hidden, weight, bias, need)
        work = _work(ctx.ops, "backward", min(ctx.rows, n), weight.shape[0], g_ent is not None, hidden.device)
        for s in range(0, n, ctx.rows):
            e = min(s + ctx.rows, n)
            ctx.ops.backward(
                hidden[s:e],
                weight,
                bias,
                targets[s:e],
                ctx.inv_t,
                lse[s:e],
                None if ent is None else ent[s:e],
                g[s:e],
                None if g_ent is None else g_ent[s:e],
                None if grad_h is None else grad_h[s:e],
                grad_w,
                grad_b,
                work,
            )
        return (_cast(grad_h, hidden), _cast(grad_w, weight), _cast(grad_b, bias)) + none


class FusedLoss(torch.autograd.Function):
    """A loss of per-token log-probs whose gradients are computed in the forward pass over chunks.

    With ``blocks`` (and a weight that needs its gradient) the chunk pass keeps each token's log-sum-exp and
    ``dloss/dlogp`` and computes every gradient but the weight's; a second pass computes that one by vocabulary
    blocks (:func:`_blocked_grads`), with no fp32 ``[V, H]`` buffer.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        bounds: list[tuple[int, int]],
        loss_grad: ChunkLossGrad,
        inv_t: float,
        entropy: bool,
        need: tuple[bool, bool, bool],
        ops: Any,
        blocks: WeightBlocks | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, vocab = hidden.shape[0], weight.shape[0]
        need_any = any(need)
        blocked = blocks is not None and need[1]
        grad_h, grad_w, grad_b = _grad_buffers(
            hidden, weight, bias, (need[0], need[1] and not blocked, need[2])
        )
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        ent = torch.empty_like(logp) if entropy else logp.new_empty(0)
        lse = torch.empty_like(logp) if blocked else None
        g_all = torch.zeros_like(logp) if blocked else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = max((e - s for s, e in bounds), default=0)
        work = _work(ops, "fused", rows, vocab, entropy, hidden.device)

        def chunk_loss_grad(lp: torch.Tensor, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            chunk_loss, g = loss_grad(lp, s, e, need_any)
            if g_all is not None and g is not None:
                g_all[s:e] = g
            return chunk_loss, g

        for s, e in bounds:
            chunk_loss, lp, ls, en = ops.fused(
                hidden[s:e],
                weight,
                bias,
                targets[s:e],
                inv_t,
                entropy,
                lambda lp, s=s, e=e: chunk_loss_grad(lp, s, e),
                None if grad_h is None else grad_h[s:e],
                grad_w,
                grad_b,
                work,
            )
            loss += chunk_loss
            logp[s:e] = lp
            if lse is not None:
                lse[s:e] = ls
            if entropy:
                ent[s:e] = en
        del work
        if blocked:
            grad_w = _blocked_grads(
                ops,
                hidden,
                weight,
                bias,
                targets,
                inv_t,
                lse,
                None,
                g_all,
                None,
                None,
                None,
                blocks,  # type: ignore[arg-type]
            )
        ctx.grads = (_cast(grad_h, hidden), _cast(grad_w, weight), _cast(grad_b, bias))
        ctx.mark_non_differentiable(logp, ent)
        return loss, logp, ent

    @staticmethod
    def backward(ctx: Any, g_loss: torch.Tensor, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError(
                "the fused loss was already backpropagated; its gradients are gone (recompute it)"
            )
        grads, ctx.grads = ctx.grads, None  # hand the buffers over: autograd then stores them without a copy
        if not bool(g_loss == 1):
            grads = tuple(None if g is None else g.mul_(g_loss.to(g.dtype)) for g in grads)
        return grads + (None,) * 8
