"""Rollout: sample G completions per prompt, and the per-token log-probs of completions under a model.

The encoded prompts (:func:`vgrpo.prompts.encode_prompts`) hold each prompt's row G times, so the same
left-padded inputs serve generation and every later forward pass (policy, old policy, reference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from vgrpo.config import GenerationConfig
from vgrpo.distributed import run_as_forward
from vgrpo.models.adapters import ModelAdapter

if TYPE_CHECKING:
    from vgrpo.prompts import PromptGroups


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
    sampler_logps: torch.Tensor | None = field(default=None, kw_only=True)
    """``[N, T]`` log-probs of the sampled tokens as the generation engine computed them (0 where masked);
    None from the hf backend, whose sampler is the trainer's model."""
    groups: PromptGroups | None = field(default=None, kw_only=True)
    """Each prompt once with its group sizes: the log-prob passes share each prompt among its completions
    (``model.shared_prefix``); None runs the repeated rows of ``inputs``."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


def end_of_sequence_mask(ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask up to and including the first EOS, truncated flags) for generated ``ids`` ``[N, T]``."""
    is_eos = torch.isin(ids, torch.tensor(list(eos_ids), device=ids.device))
    has_eos = is_eos.any(dim=1)
    first = torch.where(
        has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, ids.size(1), dtype=torch.long)
    )
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


VISUAL_TOKEN_KEYS = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "image_token_index",
    "video_token_index",
    "boi_token_index",
    "eoi_token_index",
)


def visual_token_ids(model: Any) -> list[int]:
    """Placeholder tokens for images and videos: a completion must never contain them (the next forward pass
    would look for image features that do not exist)."""
    config = model.config
    ids = {getattr(config, key) for key in VISUAL_TOKEN_KEYS if isinstance(getattr(config, key, None), int)}
    return sorted(ids)


#: Processor outputs that carry images; a prefilled cache holds what they gave already.
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def row_seed(*parts: object) -> int:
    """The sampling seed of one completion, a function of what names it only: the run seed, the step and its
    place in the global batch in training; the seed, task, record id and sample index in evaluation. A row
    therefore samples the same completion whatever batch or process it lands in."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededSampling:
    """A logits processor that turns greedy decoding into sampling with one random stream per row.

    Each row draws its uniform numbers from its own generator, seeded by the caller (from the run seed, the step
    and the row's place in the *global* batch), and picks its token by inverting the cumulative distribution. A
    completion therefore does not depend on which other rows share its batch: one process and eight processes
    sample the same completions for the same step. Temperature, top-k and top-p are applied first, with the
    semantics of transformers' warpers. The returned scores are 0 for the drawn token and -inf elsewhere.
    """

    BLOCK = 64  # uniforms drawn per row per generator call (a constant, so streams never depend on the batch)

    def __init__(
        self, seeds: Sequence[int], temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
    ) -> None:
        self.seeds = list(seeds)
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self._generators: list[torch.Generator] | None = None
        self._uniforms: torch.Tensor | None = None  # [rows, BLOCK]
        self._calls = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.size(0) != len(self.seeds):
            raise ValueError(f"SeededSampling: {scores.size(0)} rows to sample but {len(self.seeds)} seeds")
        logits = scores.double() / self.temperature
        vocab = logits.size(-1)
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True, dim=-1)
            drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p  # mass before this token
            probs = probs.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), 0.0)
        if self._generators is None:
            self._generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        step = self._calls % self.BLOCK
        if step == 0:
            self._uniforms = torch.stack(
                [
                    torch.rand(self.BLOCK, generator=g, device=scores.device, dtype=torch.float64)
                    for g in self._generators
                ]
            )
        self._calls += 1
        assert self._uniforms is not None
        cdf = probs.cumsum(dim=-1)
        target = self._uniforms[:, step : step + 1] * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, tokens, 0.0)


@torch.no_grad()
def sample(
    model: Any,
    processor: Any,
    inputs: dict[str, torch.Tensor],
    gen: GenerationConfig,
    eos_ids: Sequence[int],
    *,
    greedy: bool = False,
    seeds: Sequence[int] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    groups: PromptGroups | None = None,
    adapter: ModelAdapter | None = None,
) -> Rollout:
    """One completion per input row (rows are already repeated G times): sampled, or greedy for evaluation.

    With ``seeds`` (one per row) sampling uses :class:`SeededSampling`, so each row's completion depends only on
    its seed; without, transformers' own sampling from the global RNG. ``groups`` (each prompt once) go into
    the rollout, so its log-prob passes share each prompt; with the ``adapter`` too, each prompt is prefilled
    once and its cache repeated for its group (:meth:`ModelAdapter.generation_prefix`).
    """
    tokenizer = processor.tokenizer
    extra: dict[str, Any] = dict(generate_kwargs or {})
    if (
        not greedy
    ):  # sample the plain softmax the loss assumes (Qwen's generation_config ships a penalty of 1.05)
        extra["repetition_penalty"] = 1.0
    if greedy:
        extra["do_sample"] = False
    elif seeds is not None:
        extra["do_sample"] = False
        extra["logits_processor"] = [SeededSampling(seeds, gen.temperature, gen.top_k, gen.top_p)]
    else:
        extra.update(
            do_sample=True,
            temperature=gen.temperature,
            top_p=gen.top_p,
            top_k=gen.top_k if gen.top_k > 0 else None,
        )
    model_inputs = dict(inputs)
    prefix = adapter.generation_prefix(model, groups.inputs, groups.counts) if groups and adapter else None
    if prefix is not None:  # the prompts' images are in the cache already
        model_inputs = {k: v for k, v in model_inputs.items() if k not in IMAGE_INPUTS}
        extra.update(prefix)
    out = model.generate(
        **model_inputs,
        **extra,
        max_new_tokens=gen.max_completion_length,
        eos_token_id=list(eos_ids),
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=visual_token_ids(model) or None,
    )
    completion_ids = out[:, inputs["input_ids"].size(1) :]
    mask, truncated = end_of_sequence_mask(completion_ids, eos_ids)
    completion_ids = torch.where(
        mask.bool(), completion_ids, torch.full_like(completion_ids, tokenizer.pad_token_id)
    )
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(dict(inputs), completion_ids, mask, truncated, texts, groups=groups)


def _full_inputs(
    inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor, mask: torch.Tensor
) -> dict[str, Any]:
    """Prompt + completion as one model input; per-token side tensors are extended with zeros."""
    ids = inputs["input_ids"]
    full = dict(inputs)
    full["input_ids"] = torch.cat([ids, completion_ids], dim=1)
    full["attention_mask"] = torch.cat(
        [inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], dim=1
    )
    for key, value in inputs.items():
        if (
            key in ("input_ids", "attention_mask")
            or not torch.is_tensor(value)
            or value.shape[:2] != ids.shape
        ):
            continue
        full[key] = torch.cat([value, torch.zeros_like(completion_ids, dtype=value.dtype)], dim=1)
    return full


def completion_hidden(
    model: Any, adapter: ModelAdapter, rollout: Rollout
) -> tuple[torch.Tensor, torch.nn.Module]:
    """(hidden states ``[N, T, H]`` that predict each completion token, the output layer). With
    ``rollout.groups`` each prompt runs once for its group (the adapter's shared-prefix pass)."""
    if rollout.groups is not None:
        g = rollout.groups
        hidden = adapter.shared_prefix_hidden(
            model, g.inputs, g.counts, rollout.completion_ids, rollout.completion_mask
        )
        return hidden, adapter.lm_head(model)
    full = _full_inputs(rollout.inputs, rollout.completion_ids, rollout.completion_mask)
    hidden = adapter.hidden_states(model, full)
    prompt_len = rollout.inputs["input_ids"].size(1)
    return hidden[:, prompt_len - 1 : -1, :], adapter.lm_head(model)  # position t predicts token t + 1


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
    if impl not in ("naive", "fused"):
        raise ValueError(f"impl must be 'fused' or 'naive', got {impl!r}")

    def head_logps(hidden: torch.Tensor) -> torch.Tensor:  # runs as the lm_head's forward (ZeRO-3 gathers it)
        bias = getattr(head, "bias", None)
        if impl == "naive":
            logits = torch.nn.functional.linear(hidden, head.weight, bias).float() / temperature
            return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        from vgrpo.kernels import token_logprobs

        return token_logprobs(hidden, head.weight, targets, temperature=temperature, bias=bias)

    return run_as_forward(head, head_logps, h) * rollout.completion_mask
