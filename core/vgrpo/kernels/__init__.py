"""Fused log-prob kernels: per-token log-probs and the GRPO loss without materialising ``[N, V]`` logits.

Public names:

* :func:`token_logprobs` — ``log_softmax((h @ W.T + b) / T).gather(targets)`` (and the entropy), differentiable
  in ``h``, ``W`` and ``b``, for any downstream loss (policy, old and reference log-probs).
* :func:`fused_grpo_loss` — the GRPO loss (TRL 1.x semantics, as :func:`vgrpo.loss.grpo_loss`) straight from
  hidden states: loss and gradients in one pass over token chunks, no recomputation.
* :class:`FusedLossOutput` — what :func:`fused_grpo_loss` returns.

Dispatch: Triton kernels when the tensors are on CUDA and ``triton`` imports, the chunked PyTorch
implementation everywhere else. ``backend="torch"|"triton"`` (or ``VGRPO_KERNELS=torch|triton``) forces one.
The weight's gradient is accumulated in one fp32 ``[V, H]`` buffer or by vocabulary blocks without one:
``weight_grad="auto"|"buffer"|"blocked"`` (or ``VGRPO_KERNEL_WEIGHT_GRAD``); "auto" blocks a bf16/fp16 weight
whose fp32 buffer would exceed the chunk budget.
See docs/kernels.md for the memory model and numerics.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from vgrpo.kernels import chunked
from vgrpo.kernels.grpo import IS_LEVELS, LOSS_TYPES, Objective

__all__ = ["FusedLossOutput", "fused_grpo_loss", "token_logprobs"]

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "triton"]
WeightGrad = Literal["auto", "buffer", "blocked"]
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_INTS = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


@dataclass
class FusedLossOutput:
    """The loss to backpropagate, detached statistics for logging and the per-token log-probs."""

    loss: torch.Tensor  # scalar, differentiable in hidden, weight and bias
    kl: torch.Tensor  # mean k3 KL over masked tokens (0 when beta == 0)
    clip_ratio: torch.Tensor  # share of clipped tokens (of sequences, at sequence level)
    logps: torch.Tensor  # [B, T] fp32, detached; 0 where mask == 0
    entropy: torch.Tensor | None  # [B, T] fp32, detached, when return_entropy; 0 where mask == 0


def _triton_ops(**kwargs: Any) -> Any:
    from vgrpo.kernels.triton_logprobs import TritonOps

    return TritonOps(**kwargs)


def _select_ops(device: torch.device, backend: Backend) -> Any:
    """The chunk backend for tensors on ``device``."""
    choice = backend if backend != "auto" else os.environ.get("VGRPO_KERNELS", "auto")
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {choice!r}")
    if choice == "torch":
        return chunked.TorchOps()
    if choice == "triton" or device.type == "cuda":
        try:
            return _triton_ops()
        except ImportError as exc:
            if choice == "triton":
                raise ValueError(f"backend 'triton' needs the triton package: {exc}") from exc
            log.debug("triton unavailable (%s); using the chunked PyTorch kernels", exc)
    return chunked.TorchOps()


def _budget(device: torch.device) -> int:
    env = os.environ.get("VGRPO_KERNEL_BUDGET_MB")
    if env:
        return int(float(env) * 2**20)
    return chunked.DEFAULT_BUDGET_BYTES.get(device.type, chunked.DEFAULT_BUDGET_BYTES["cuda"])


def _weight_grad_mode(weight_grad: str) -> str:
    """``weight_grad``, or ``VGRPO_KERNEL_WEIGHT_GRAD`` in its place when it is "auto"; both checked."""
    if weight_grad not in chunked.WEIGHT_GRADS:
        raise ValueError(f"weight_grad must be 'auto', 'buffer' or 'blocked', got {weight_grad!r}")
    mode = weight_grad if weight_grad != "auto" else os.environ.get("VGRPO_KERNEL_WEIGHT_GRAD") or "auto"
    if mode not in chunked.WEIGHT_GRADS:
        raise ValueError(f"VGRPO_KERNEL_WEIGHT_GRAD must be 'auto', 'buffer' or 'blocked', got {mode!r}")
    return mode


def _weight_blocks(
    weight: torch.Tensor, mode: str, n: int, buffers: int, chunk_size: int | None, budget: int
) -> chunked.WeightBlocks | None:
    """The blocked weight gradient's sizes, or None for one fp32 ``[V, H]`` buffer (see
    :func:`vgrpo.kernels.chunked.blocked_weight_grad`)."""
    if not weight.requires_grad or not chunked.blocked_weight_grad(mode, weight, budget):
        return None
    vocab, size = weight.shape
    block = chunked.weight_block_rows(vocab, size, budget)
    rows = chunk_size or chunked.rows_for_budget(n, block, buffers, budget)
    log.debug("weight gradient by vocabulary blocks of %d rows, %d tokens per chunk", block, rows)
    return chunked.WeightBlocks(vocab=block, rows=max(1, rows))


def _check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    temperature: float,
) -> None:
    """Shapes, dtypes, devices and temperature; raises ValueError naming the argument."""
    for name, t in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if hidden.dim() < 2:
        raise ValueError(
            f"hidden must be [..., H] (e.g. [N, H] or [B, T, H]), got shape {tuple(hidden.shape)}"
        )
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H] (the lm_head weight), got shape {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"hidden size mismatch: hidden has H={hidden.shape[-1]}, weight is {tuple(weight.shape)} = [V, H]"
        )
    if weight.shape[0] == 0:
        raise ValueError("weight has an empty vocabulary (V = 0)")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}"
        )
    if hidden.dtype not in _FLOATS:
        raise ValueError(f"hidden must be float32, bfloat16 or float16, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}; cast one")
    if targets.dtype not in _INTS:
        raise ValueError(f"targets must be an integer tensor of token ids, got {targets.dtype}")
    devices = {hidden.device, weight.device, targets.device}
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
            got = getattr(bias, "shape", bias)
            raise ValueError(f"bias must be a [V] = [{weight.shape[0]}] tensor, got {got}")
        if bias.dtype != weight.dtype:
            raise ValueError(f"bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")
        devices.add(bias.device)
    if len(devices) > 1:
        names = sorted(map(str, devices))
        raise ValueError(f"hidden, weight, targets (and bias) must be on one device, got {names}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_range(
    targets: torch.Tensor, valid: torch.Tensor | None, vocab: int, ignore_index: int | None
) -> None:
    """Every target that counts must be a token id in ``[0, V)``; the first bad one is named."""
    bad = (targets < 0) | (targets >= vocab)
    if valid is not None:
        bad &= valid
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"targets{list(pos)} = {int(targets[pos])} is outside the vocabulary [0, {vocab}){extra}"
        )


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    return_entropy: bool = False,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    weight_grad: WeightGrad = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``log_softmax((hidden @ weight.T + bias) / temperature)[targets]`` in fp32, no ``[N, V]`` logits.

    ``hidden`` is ``[..., H]`` (``[N, H]`` or ``[B, T, H]``), ``targets`` its leading shape, ``weight``
    ``[V, H]``; the result has ``targets``' shape. Positions whose target is ``ignore_index`` get log-prob
    (and entropy) 0 and no gradient. With ``return_entropy`` also returns the entropy of each position's
    distribution (nats, differentiable). ``chunk_size`` overrides the rows per chunk picked from the memory
    budget (``VGRPO_KERNEL_BUDGET_MB``, default 128 MiB on CPU, 1 GiB on CUDA). ``weight_grad`` chooses how the
    weight's gradient is accumulated: "buffer" (one fp32 ``[V, H]`` buffer), "blocked" (by vocabulary blocks, no
    such buffer, same cost) or "auto" (``VGRPO_KERNEL_WEIGHT_GRAD`` when set, else blocked for a bf16/fp16 weight
    whose fp32 buffer exceeds the budget).
    """
    _check_inputs(hidden, weight, targets, bias, temperature)
    mode = _weight_grad_mode(weight_grad)
    vocab, size = weight.shape
    valid = targets != ignore_index
    _check_range(targets, valid, vocab, ignore_index)
    flat_h = hidden.reshape(-1, size)
    flat_t = targets.reshape(-1).to(torch.long)
    flat_valid = valid.reshape(-1)
    idx = None
    if not bool(flat_valid.all()):
        idx = flat_valid.nonzero().squeeze(1)
        flat_h, flat_t = flat_h.index_select(0, idx), flat_t.index_select(0, idx)
    ops = _select_ops(hidden.device, backend)
    buffers = max(ops.work_buffers("forward", return_entropy), ops.work_buffers("backward", return_entropy))
    budget = _budget(hidden.device)
    rows = chunk_size or chunked.rows_for_budget(flat_h.shape[0], vocab, buffers, budget)
    blocks = _weight_blocks(
        weight, mode, flat_h.shape[0], ops.work_buffers("backward", return_entropy), chunk_size, budget
    )
    logp, ent = chunked.TokenLogprobs.apply(
        flat_h, weight, bias, flat_t, 1.0 / temperature, return_entropy, max(1, rows), ops, blocks
    )
    n = targets.numel()
    if idx is not None:
        logp = logp.new_zeros(n).index_copy(0, idx, logp)
        if return_entropy:
            ent = ent.new_zeros(n).index_copy(0, idx, ent)
    logp = logp.reshape(targets.shape)
    return (logp, ent.reshape(targets.shape)) if return_entropy else logp


def fused_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    loss_type: str = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    num_items: float | torch.Tensor | None = None,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    return_entropy: bool = False,
    token_weights: torch.Tensor | None = None,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    weight_grad: WeightGrad = "auto",
) -> FusedLossOutput:
    """The GRPO loss of completions straight from hidden states, with gradients computed in one chunked pass.

    Same semantics and arguments as :func:`vgrpo.loss.grpo_loss` (TRL 1.x), with the per-token log-probs
    computed inside from ``hidden`` ``[B, T, H]``, ``weight`` ``[V, H]`` and ``targets`` ``[B, T]`` (the
    completion token ids). ``mask`` ``[B, T]`` is the completion mask; positions where it is 0 are skipped
    entirely (their targets are not checked). ``advantages`` ``[B]``; ``old_logps``/``ref_logps`` ``[B, T]``
    (``None`` old = on-policy); ``token_weights`` ``[B, T]`` weight each token's surrogate (not its KL), as in
    :func:`vgrpo.loss.grpo_loss`. The returned loss can be backpropagated once. Gradient accumulation scaling
    is the caller's. ``weight_grad`` as in :func:`token_logprobs`; "blocked" costs one logits matmul more here
    (a second pass over vocabulary blocks for the weight's gradient: four matmuls instead of three).
    """
    _check_inputs(hidden, weight, targets, bias, temperature)
    mode = _weight_grad_mode(weight_grad)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H] for the GRPO loss, got shape {tuple(hidden.shape)}")
    b, t = targets.shape
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask must be [B, T] = {[b, t]}, got {tuple(mask.shape)}")
    if tuple(advantages.shape) != (b,):
        raise ValueError(
            f"advantages must be [B] = [{b}] (one per completion), got {tuple(advantages.shape)}"
        )
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps), ("token_weights", token_weights)):
        if x is not None and tuple(x.shape) != (b, t):
            raise ValueError(f"{name} must be [B, T] = {[b, t]}, got {tuple(x.shape)}")
    per_token = (
        ("mask", mask),
        ("advantages", advantages),
        ("old_logps", old_logps),
        ("ref_logps", ref_logps),
        ("token_weights", token_weights),
    )
    for name, x in per_token:
        if x is not None and x.device != hidden.device:
            raise ValueError(f"{name} is on {x.device}, hidden on {hidden.device}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    if importance_sampling_level not in IS_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}"
        )
    if beta != 0.0 and ref_logps is None:
        raise ValueError("beta != 0 needs ref_logps (log-probs of the frozen reference model)")
    if loss_type == "dr_grpo" and max_completion_length is None:
        raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
    vocab, size = weight.shape
    _check_range(targets, mask != 0, vocab, None)

    objective, idx = Objective.build(
        mask,
        advantages,
        old_logps,
        ref_logps,
        loss_type=loss_type,
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        beta=beta,
        level=importance_sampling_level,
        max_completion_length=max_completion_length,
        num_items=num_items,
        token_weights=token_weights,
    )
    flat_h = hidden.reshape(-1, size)
    flat_t = targets.reshape(-1).to(torch.long)
    if idx.numel() != flat_t.numel():
        flat_h, flat_t = flat_h.index_select(0, idx), flat_t.index_select(0, idx)
    n = flat_t.numel()
    ops = _select_ops(hidden.device, backend)
    buffers = ops.work_buffers("fused", return_entropy)
    budget = _budget(hidden.device)
    rows = chunk_size or chunked.rows_for_budget(n, vocab, buffers, budget)
    bounds = objective.chunk_bounds(max(1, rows))
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    if bounds is None:  # a sequence longer than a chunk at sequence level: log-probs first, then the loss
        log.debug("sequence-level GRPO loss with sequences over %d tokens: two passes", rows)
        res = token_logprobs(
            flat_h,
            weight,
            flat_t,
            temperature=temperature,
            bias=bias,
            return_entropy=return_entropy,
            chunk_size=chunk_size,
            backend=backend,
            weight_grad=weight_grad,
        )
        logp, ent = res if return_entropy else (res, None)
        loss = objective.chunk_loss(logp, 0, n)
        logp, ent = logp.detach(), None if ent is None else ent.detach()
    else:
        blocks = None
        if need[1]:
            buffers = ops.work_buffers("backward", False)
            blocks = _weight_blocks(weight, mode, n, buffers, chunk_size, budget)
        loss, logp, ent = chunked.FusedLoss.apply(
            flat_h,
            weight,
            bias,
            flat_t,
            bounds,
            objective.loss_and_grad,
            1.0 / temperature,
            return_entropy,
            need,
            ops,
            blocks,
        )
    kl, clip_ratio = objective.stats(logp)

    def unflatten(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(b * t).index_copy(0, idx, x).reshape(b, t)

    return FusedLossOutput(
        loss=loss,
        kl=kl,
        clip_ratio=clip_ratio,
        logps=unflatten(logp),
        entropy=unflatten(ent) if return_entropy and ent is not None else None,
    )
