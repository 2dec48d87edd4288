"""Triton kernels for per-token log-probs on CUDA (also runnable on CPU tensors under ``TRITON_INTERPRET=1``).

* ``_lse_fwd_kernel`` — a tiled ``h @ W.T`` (fp32 accumulation) with an online log-sum-exp, the target's
  logit and the entropy accumulator, per block of rows and a contiguous range of vocabulary tiles (the
  vocabulary is split over programs when there are few row blocks); partial results are combined in PyTorch.
  It can also store the logits of the chunk (the fused GRPO loss reuses them instead of recomputing).
* ``_grad_logits_kernel`` — recomputes a ``[BM, BN]`` logits tile (or loads the stored one) and writes
  ``dL/d(h @ W.T) = (g * (onehot - p) - g_ent * p * (log p + H)) / T`` for a chunk of rows.
* ``_matmul_kernel`` — ``C (+)= A @ B`` with fp32 accumulation: ``grad_hidden = G @ W`` and, accumulating into
  one fp32 ``[V, H]`` buffer (or, blocked, into an fp32 ``[Vb, H]`` block of vocabulary rows), ``grad_weight += G.T
  @ h`` (each program owns its output tile: no atomics, so the result is deterministic).

Interpreter note: Triton 3.x's interpreter multiplies the raw uint16 storage of bfloat16 operands in ``tl.dot``
(``interpreter.py``, ``create_dot`` calls ``np.matmul`` on the bit patterns), so under ``TRITON_INTERPRET=1`` bf16
tiles are upcast to fp32 before each ``tl.dot`` (``DOT_F32``). On a GPU the bf16 tiles go to the tensor cores.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from vgrpo.kernels.chunked import LossGrad


@triton.jit
def _logit_tile(
    h_ptr,
    w_ptr,
    b_ptr,
    rows64,
    row_ok,
    cols,
    col_ok,
    H,
    inv_t,
    stride_h,
    stride_w,
    HAS_BIAS: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """One [BM, BN] tile of (h @ W.T + b) / T, accumulated in fp32 over H in steps of BK."""
    cols64 = cols.to(tl.int64)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < H
        hk = tl.load(
            h_ptr + rows64[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
        )
        wk = tl.load(
            w_ptr + cols64[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0
        )
        if DOT_F32:
            hk = hk.to(tl.float32)
            wk = wk.to(tl.float32)
        acc = tl.dot(hk, tl.trans(wk), acc, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc * inv_t


@triton.jit
def _lse_fwd_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    t_ptr,
    z_ptr,
    m_ptr,
    s_ptr,
    a_ptr,
    zt_ptr,
    n,
    V,
    H,
    inv_t,
    stride_h,
    stride_w,
    stride_z,
    tiles_per_split,
    n_tiles,
    HAS_BIAS: tl.constexpr,
    STORE_Z: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    tgt = tl.load(t_ptr + rows, mask=row_ok, other=0)
    m = tl.full((BM,), float("-inf"), tl.float32)
    s = tl.zeros((BM,), tl.float32)
    a = tl.zeros((BM,), tl.float32)  # sum of exp(z - m) * (z - m)
    zt = tl.zeros((BM,), tl.float32)
    first = pid_s * tiles_per_split
    last = tl.minimum(first + tiles_per_split, n_tiles)
    for tile in range(first, last):
        cols = tile * BN + tl.arange(0, BN)
        col_ok = cols < V
        z = _logit_tile(
            h_ptr,
            w_ptr,
            b_ptr,
            rows64,
            row_ok,
            cols,
            col_ok,
            H,
            inv_t,
            stride_h,
            stride_w,
            HAS_BIAS,
            DOT_F32,
            PREC,
            BM,
            BN,
            BK,
        )
        if STORE_Z:
            z_ptrs = z_ptr + rows64[:, None] * stride_z + cols[None, :]
            tl.store(z_ptrs, z, mask=row_ok[:, None] & col_ok[None, :])
        z = tl.where(col_ok[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, 1))
        alpha = tl.exp(m - m_new)
        y = z - m_new[:, None]
        e = tl.exp(y)
        ey = e * tl.where(e == 0.0, 0.0, y)  # 0 * -inf counts as 0; NaN stays NaN
        shift = s * tl.where(s == 0.0, 0.0, m - m_new)
        a = alpha * (a + shift) + tl.sum(ey, 1)
        s = alpha * s + tl.sum(e, 1)
        m = m_new
        zt += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), 1)
    out = pid_s * n + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(s_ptr + out, s, mask=row_ok)
    tl.store(a_ptr + out, a, mask=row_ok)
    tl.store(zt_ptr + out, zt, mask=row_ok)


@triton.jit
def _grad_logits_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    t_ptr,
    z_ptr,
    g_out_ptr,
    lse_ptr,
    ent_ptr,
    g_ptr,
    g_ent_ptr,
    n,
    V,
    H,
    inv_t,
    stride_h,
    stride_w,
    stride_z,
    RECOMPUTE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ENT: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    cols = pid_v * BN + tl.arange(0, BN)
    row_ok = rows < n
    col_ok = cols < V
    rows64 = rows.to(tl.int64)
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if RECOMPUTE:
        z = _logit_tile(
            h_ptr,
            w_ptr,
            b_ptr,
            rows64,
            row_ok,
            cols,
            col_ok,
            H,
            inv_t,
            stride_h,
            stride_w,
            HAS_BIAS,
            DOT_F32,
            PREC,
            BM,
            BN,
            BK,
        )
    else:
        z = tl.load(z_ptr + rows64[:, None] * stride_z + cols[None, :], mask=tile_ok, other=0.0)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    tgt = tl.load(t_ptr + rows, mask=row_ok, other=0)
    logp = z - lse[:, None]
    p = tl.exp(logp)
    if HAS_ENT:
        ent = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)
        g_ent = tl.load(g_ent_ptr + rows, mask=row_ok, other=0.0)
        inner = g[:, None] + g_ent[:, None] * (tl.maximum(logp, -1e30) + ent[:, None])
        grad = -p * tl.where(p == 0.0, 0.0, inner)
    else:
        grad = -p * g[:, None]
    grad = tl.where(cols[None, :] == tgt[:, None], grad + g[:, None], grad) * inv_t
    tl.store(g_out_ptr + rows64[:, None] * stride_z + cols[None, :], grad, mask=tile_ok)


@triton.jit
def _matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    s_am,
    s_ak,
    s_bk,
    s_bn,
    s_cm,
    s_cn,
    ACCUMULATE: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rm64 = rm.to(tl.int64)
    rn64 = rn.to(tl.int64)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        rk64 = rk.to(tl.int64)
        a_ptrs = a_ptr + rm64[:, None] * s_am + rk64[None, :] * s_ak
        b_ptrs = b_ptr + rk64[:, None] * s_bk + rn64[None, :] * s_bn
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        b = tl.load(b_ptrs, mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        a = a.to(b.dtype)  # fp32 logit gradients meet the weight's dtype (bf16/fp16 tensor cores)
        if DOT_F32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    c_ptrs = c_ptr + rm64[:, None] * s_cm + rn64[None, :] * s_cn
    c_ok = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE:
        acc += tl.load(c_ptrs, mask=c_ok, other=0.0).to(tl.float32)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_ok)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class TritonOps:
    """Chunk work done by the Triton kernels above (the backend used on CUDA)."""

    name = "triton"

    def __init__(
        self,
        fwd_blocks: tuple[int, int, int] = (64, 128, 64),
        grad_blocks: tuple[int, int, int] = (64, 128, 64),
        mm_blocks: tuple[int, int, int] = (128, 128, 32),
        num_warps: int = 8,
        min_programs: int | None = None,
    ) -> None:
        self.fwd_blocks, self.grad_blocks, self.mm_blocks = fwd_blocks, grad_blocks, mm_blocks
        self.num_warps = num_warps
        self.min_programs = min_programs

    # --- helpers ---------------------------------------------------------------------------------------------

    def _launch_opts(self) -> dict[str, Any]:
        return {} if _interpreted() else {"num_warps": self.num_warps}

    @staticmethod
    def _prec(dtype: torch.dtype) -> str:
        """fp32 dots follow torch's TF32 setting for matmuls; other dtypes ignore it."""
        if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
            return "ieee"
        return "tf32"

    @staticmethod
    def _dot_f32(dtype: torch.dtype) -> bool:
        return dtype == torch.bfloat16 and _interpreted()

    def _splits(self, row_blocks: int, n_tiles: int, device: torch.device) -> tuple[int, int]:
        """(vocab tiles per program, programs along the vocabulary) so that the grid fills the device."""
        want = self.min_programs
        if want is None:
            sms = (
                torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
            )
            want = 2 * sms
        splits = max(1, min(n_tiles, -(-want // max(1, row_blocks))))
        per = -(-n_tiles // splits)
        return per, -(-n_tiles // per)

    def _lse(
        self,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        inv_t: float,
        z_out: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logp, lse, entropy of rows ``h`` (optionally storing their scaled logits in ``z_out``)."""
        n, size = h.shape
        vocab = weight.shape[0]
        bm, bn, bk = self.fwd_blocks
        row_blocks, n_tiles = triton.cdiv(n, bm), triton.cdiv(vocab, bn)
        per, splits = self._splits(row_blocks, n_tiles, h.device)
        part = torch.empty(4, splits, n, dtype=torch.float32, device=h.device)
        z = z_out if z_out is not None else part  # dummy pointer when not storing
        _lse_fwd_kernel[(row_blocks, splits)](
            h,
            weight,
            bias if bias is not None else weight,
            targets,
            z,
            part[0],
            part[1],
            part[2],
            part[3],
            n,
            vocab,
            size,
            inv_t,
            h.stride(0),
            weight.stride(0),
            z.stride(0),
            per,
            n_tiles,
            HAS_BIAS=bias is not None,
            STORE_Z=z_out is not None,
            DOT_F32=self._dot_f32(h.dtype),
            PREC=self._prec(h.dtype),
            BM=bm,
            BN=bn,
            BK=bk,
            **self._launch_opts(),
        )
        m, s, a, zt = part
        top = m.amax(0)
        scale = torch.exp(m - top)
        total = (s * scale).sum(0)
        shifted = (scale * (a + s * (m - top))).sum(0)
        lse = top + total.log()
        ent = total.log() - shifted / total
        return zt.sum(0) - lse, lse, ent

    def _grad_logits(
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
        z: torch.Tensor | None,
        out: torch.Tensor,
    ) -> None:
        """Write ``dL/d(h @ W.T + b)`` of rows ``h`` into ``out`` (recomputing logits unless ``z`` is given)."""
        n, size = h.shape
        vocab = weight.shape[0]
        bm, bn, bk = self.grad_blocks
        _grad_logits_kernel[(triton.cdiv(n, bm), triton.cdiv(vocab, bn))](
            h,
            weight,
            bias if bias is not None else weight,
            targets,
            z if z is not None else out,
            out,
            lse,
            ent if ent is not None else lse,
            g,
            g_ent if g_ent is not None else g,
            n,
            vocab,
            size,
            inv_t,
            h.stride(0),
            weight.stride(0),
            out.stride(0),
            RECOMPUTE=z is None,
            HAS_BIAS=bias is not None,
            HAS_ENT=g_ent is not None,
            DOT_F32=self._dot_f32(h.dtype),
            PREC=self._prec(h.dtype),
            BM=bm,
            BN=bn,
            BK=bk,
            **self._launch_opts(),
        )

    def _mm(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, accumulate: bool) -> None:
        """``c (+)= a @ b`` with fp32 accumulation (``a`` is cast to ``b``'s dtype per tile)."""
        (m, k), n = a.shape, b.shape[1]
        bm, bn, bk = self.mm_blocks
        _matmul_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn))](
            a,
            b,
            c,
            m,
            n,
            k,
            a.stride(0),
            a.stride(1),
            b.stride(0),
            b.stride(1),
            c.stride(0),
            c.stride(1),
            ACCUMULATE=accumulate,
            DOT_F32=self._dot_f32(b.dtype),
            PREC=self._prec(b.dtype),
            BM=bm,
            BN=bn,
            BK=bk,
            **self._launch_opts(),
        )

    def _apply_grad(
        self,
        grad_z: torch.Tensor,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        grad_h: torch.Tensor | None,
        grad_w: torch.Tensor | None,
        grad_b: torch.Tensor | None,
        accumulate: bool = False,
    ) -> None:
        """grad_hidden (+)= G @ W; grad_weight += G.T @ h; grad_bias += G.sum(0) (G already carries the 1/T)."""
        if grad_h is not None:
            self._mm(grad_z, weight, grad_h, accumulate=accumulate)
        if grad_w is not None:
            self._mm(grad_z.t(), h, grad_w, accumulate=True)
        if grad_b is not None:
            grad_b.add_(grad_z.sum(0))

    # --- the Ops protocol ------------------------------------------------------------------------------------

    def work_buffers(self, phase: str, entropy: bool) -> int:
        """None in the forward (online log-sum-exp); else one fp32 ``[rows, V]`` buffer of logit gradients."""
        return 0 if phase == "forward" else 1

    def forward_rows(self, n: int, rows: int) -> int:
        """The forward keeps no logits, so it takes every row at once."""
        return max(1, n)

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
        """Log-probs, log-sum-exp and entropy of the rows; no logits are stored."""
        h, weight, bias = h.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous()
        logp, lse, ent = self._lse(h, weight, bias, targets.contiguous(), inv_t, None)
        return logp, lse, ent if entropy else None

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
        """Recompute the chunk's logit tiles into their gradient, then the parameter gradients."""
        h, weight, targets = h.contiguous(), weight.contiguous(), targets.contiguous()
        bias = None if bias is None else bias.contiguous()
        grad_z = work[0][: h.shape[0]]
        self._grad_logits(
            h,
            weight,
            bias,
            targets,
            inv_t,
            lse.contiguous(),
            None if ent is None else ent.contiguous(),
            g.contiguous(),
            None if g_ent is None else g_ent.contiguous(),
            None,
            grad_z,
        )
        self._apply_grad(grad_z, h, weight, bias, grad_h, grad_w, grad_b, accumulate)

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
        """Logits stored once per chunk, then turned in place into their gradient: no recomputation."""
        h, weight, targets = h.contiguous(), weight.contiguous(), targets.contiguous()
        bias = None if bias is None else bias.contiguous()
        z = work[0][: h.shape[0]]
        logp, lse, ent = self._lse(h, weight, bias, targets, inv_t, z)
        loss, g = loss_grad(logp)
        if g is not None:
            self._grad_logits(h, weight, bias, targets, inv_t, lse, None, g.contiguous(), None, z, z)
            self._apply_grad(z, h, weight, bias, grad_h, grad_w, grad_b)
        return loss, logp, lse, ent if entropy else None
