"""Rollout: sample G completions per prompt, and the per-token log-probs of completions under a model.

Prompts are repeated G times before encoding (as TRL does), so the same left-padded inputs serve
generation and every later forward pass (policy, old policy, reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from vgrpo.config import GenerationConfig
from vgrpo.models.adapters import ModelAdapter


@dataclass
class Rollout:
    """A batch of sampled completions and what the loss needs about them."""

    inputs: dict[str, torch.Tensor]
    """The encoded prompts, one row per completion (left-padded)."""
    completion_ids: torch.Tensor
    """``[N, T]`` sampled tokens, padded after the end-of-sequence token."""
    completion_mask: torch.Tensor
    """``[N, T]`` 1.0 up to and including the end-of-sequence token."""
    truncated: torch.Tensor
    """``[N]`` True when a completion hit ``max_completion_length`` without ending."""
    texts: list[str]
    """Decoded completions (special tokens removed), what the tasks parse."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


def end_of_sequence_mask(ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask up to and including the first EOS, truncated flags) for generated ``ids`` ``[N, T]``."""
    is_eos = torch.isin(ids, torch.tensor(list(eos_ids), device=ids.device))
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, ids.size(1), dtype=torch.long))
    positions = torch.arange(ids.size(1), device=ids.device).expand_as(ids)
    return (positions <= first.unsqueeze(1)).float(), ~has_eos


def eos_token_ids(model: Any, processor: Any) -> list[int]:
    """Every token id that ends a completion (generation config and tokenizer)."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    tok_eos = processor.tokenizer.eos_token_id
    if tok_eos is not None and tok_eos not in ids:
        ids.append(tok_eos)
    if not ids:
        raise ValueError("the model has no end-of-sequence token (generation_config.eos_token_id is unset)")
    return ids


VISUAL_TOKEN_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                     "image_token_index", "video_token_index", "boi_token_index", "eoi_token_index")  # fmt: skip


def visual_token_ids(model: Any) -> list[int]:
    """Placeholder tokens for images and videos: a completion must never contain them (the next forward pass
    would look for image features that do not exist)."""
    config = model.config
    ids = {getattr(config, key) for key in VISUAL_TOKEN_KEYS if isinstance(getattr(config, key, None), int)}
    return sorted(ids)


@torch.no_grad()
def sample(
    model: Any,
    processor: Any,
    inputs: dict[str, torch.Tensor],
    gen: GenerationConfig,
    eos_ids: Sequence[int],
    *,
    greedy: bool = False,
) -> Rollout:
    """One completion per input row (rows are already repeated G times); sampled, or greedy for evaluation."""
    tokenizer = processor.tokenizer
    sampling = {} if greedy else {
        "temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k if gen.top_k > 0 else None,
    }  # fmt: skip
    out = model.generate(
        **inputs,
        do_sample=not greedy,
        **sampling,
        max_new_tokens=gen.max_completion_length,
        eos_token_id=list(eos_ids),
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=visual_token_ids(model) or None,
    )
    completion_ids = out[:, inputs["input_ids"].size(1) :]
    mask, truncated = end_of_sequence_mask(completion_ids, eos_ids)
    completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, tokenizer.pad_token_id))
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(dict(inputs), completion_ids, mask, truncated, texts)


def _full_inputs(inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Prompt + completion as one model input; per-token side tensors are extended with zeros."""
    ids = inputs["input_ids"]
    full = dict(inputs)
    full["input_ids"] = torch.cat([ids, completion_ids], dim=1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], dim=1)
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask") or not torch.is_tensor(value) or value.shape[:2] != ids.shape:
            continue
        full[key] = torch.cat([value, torch.zeros_like(completion_ids, dtype=value.dtype)], dim=1)
    return full


def completion_hidden(model: Any, adapter: ModelAdapter, rollout: Rollout) -> tuple[torch.Tensor, torch.nn.Module]:
    """(hidden states ``[N, T, H]`` that predict each completion token, the output layer)."""
    full = _full_inputs(rollout.inputs, rollout.completion_ids, rollout.completion_mask)
    hidden = adapter.hidden_states(model, full)
    prompt_len = rollout.inputs["input_ids"].size(1)
    return hidden[:, prompt_len - 1 : -1, :], adapter.output_layer(model)  # position t predicts token t + 1


def completion_logprobs(
    model: Any,
    adapter: ModelAdapter,
    rollout: Rollout,
    *,
    temperature: float = 1.0,
    impl: Literal["fused", "naive"] = "fused",
) -> torch.Tensor:
    """``[N, T]`` fp32 log-probs of the completion tokens under ``model`` (0 where masked).

    ``fused`` never materialises ``[N, T, V]`` logits (vgrpo.kernels); ``naive`` is log_softmax + gather.
    """
    h, head = completion_hidden(model, adapter, rollout)
    targets = rollout.completion_ids
    bias = getattr(head, "bias", None)
    if impl == "naive":
        logits = torch.nn.functional.linear(h, head.weight, bias).float() / temperature
        logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    elif impl == "fused":
        from vgrpo.kernels import token_logprobs

        logps = token_logprobs(h, head.weight, targets, temperature=temperature, bias=bias)
    else:
        raise ValueError(f"impl must be 'fused' or 'naive', got {impl!r}")
    return logps * rollout.completion_mask
