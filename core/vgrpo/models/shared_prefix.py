"""Shared-prefix forward passes: each prompt and its images run once per GRPO group, and the group's G
completions attend to the prompt's keys and values.

The prompt rows (one per group, left-padded) run through the backbone with a key/value cache; each layer's keys
and values are repeated G ways (``repeat_interleave``, differentiable, so the gradients of all G completions flow
back into the shared prompt), and the completion tokens then run with that cache, an attention mask of the
prompt's padding followed by the completion mask, and explicit positions: Qwen's mRoPE text positions continue
from each prompt's, exactly as one forward pass over prompt + completion computes them. The hidden states that
predict the completion tokens go to the fused log-prob kernels as on the repeated path.

A token position costs (P + C)·G on the repeated path and P + G·C here (P prompt, C completion tokens).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from vgrpo.errors import ParamsError

if TYPE_CHECKING:
    from vgrpo.models.adapters import ModelAdapter

log = logging.getLogger(__name__)

SharedPrefixSetting = Literal["auto", "on", "off"]


def backbone(model: Any) -> Any:
    """The model's backbone (``base_model_prefix``): embeddings, vision tower and decoder, without the lm_head."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None or base is model:
        raise TypeError(f"{type(model).__name__}: cannot find the backbone (base_model_prefix)")
    return base


def supports_mrope_prefix(model: Any) -> bool:
    """True when ``model``'s backbone computes its 3-D (mRoPE) positions through ``compute_3d_position_ids`` and
    takes a key/value cache: what :func:`shared_prefix_hidden` relies on."""
    try:
        base = backbone(model)
    except TypeError:
        return False
    params = inspect.signature(base.forward).parameters
    return hasattr(base, "compute_3d_position_ids") and ("cache" in params or "past_key_values" in params)


def shared_prefix_hidden(
    model: Any,
    prompts: dict[str, Any],
    counts: Sequence[int],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Hidden states ``[N, T, H]`` that predict each completion token (``N = sum(counts)`` rows, prompt ``i``'s
    ``counts[i]`` completions contiguous), with each prompt of ``prompts`` (one left-padded row per group) run
    once. Equal to the last ``T`` predicting positions of one forward pass over the repeated prompt + completion."""
    base = backbone(model)
    ids, attn = prompts["input_ids"], prompts["attention_mask"]
    n_prompts, prompt_len = ids.shape
    if len(counts) != n_prompts:
        raise ValueError(f"shared prefix: {n_prompts} prompt rows but {len(counts)} group sizes")
    repeat = torch.tensor(list(counts), device=ids.device)
    if completion_ids.size(0) != int(repeat.sum()):
        raise ValueError(
            f"shared prefix: {completion_ids.size(0)} completions, expected sum(counts) = {int(repeat.sum())}"
        )
    length = completion_ids.size(1)
    positions = _positions(base, prompts, length)
    cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    prefix = base(
        **_with_unique_images(base, prompts),
        position_ids=positions[..., :prompt_len],
        use_cache=True,
        **{cache_key: None},
    )
    cache = _cache_of(prefix)
    last = prefix.last_hidden_state[:, -1:].repeat_interleave(repeat, dim=0)  # predicts completion token 0
    if length == 1:
        return last
    _expand_cache(cache, repeat)
    mask = torch.cat([attn.repeat_interleave(repeat, dim=0), completion_mask[:, :-1].to(attn.dtype)], dim=1)
    out = base(
        input_ids=completion_ids[:, :-1],
        attention_mask=mask,
        position_ids=positions[..., prompt_len : prompt_len + length - 1].repeat_interleave(repeat, dim=1),
        use_cache=True,
        **{cache_key: cache},
    )
    return torch.cat([last, out.last_hidden_state], dim=1)


@torch.no_grad()
def generation_prefix(model: Any, prompts: dict[str, Any], counts: Sequence[int]) -> dict[str, Any] | None:
    """``generate`` keyword arguments that start sampling from a shared prefill: each prompt but its last token
    runs once, its key/value cache is repeated for its ``counts[i]`` rows, and the model's mRoPE deltas are set
    for the repeated rows (the positions ``generate`` computes itself). The caller drops the image inputs and
    passes the repeated rows. None where the prompts do not end in a text token."""
    base = backbone(model)
    ids = prompts["input_ids"]
    types = prompts.get("mm_token_type_ids")
    if ids.size(1) < 2 or (types is not None and bool(types[:, -1].any())):
        return None
    repeat = torch.tensor(list(counts), device=ids.device)
    positions, deltas = _generation_positions(base, prompts)
    short = {
        k: v[:, :-1] if torch.is_tensor(v) and v.dim() == 2 and v.shape == ids.shape else v
        for k, v in prompts.items()
    }
    cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    out = base(
        **_with_unique_images(base, short),
        position_ids=positions[..., :-1],
        use_cache=True,
        **{cache_key: None},
    )
    cache = _cache_of(out)
    _expand_cache(cache, repeat)
    base.rope_deltas = deltas.repeat_interleave(repeat, dim=0)
    return {cache_key: cache}


def _with_unique_images(base: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with the vision tower run once per distinct image: several prompts of a batch often share
    one (REC data asks several questions of an image). Its features go in as ``mm_encoder_outputs`` (each use
    of an image gets the same tensor, so its gradient is the sum over uses, as the repeated path's); the
    inputs unchanged where no image repeats or the model takes no precomputed features."""
    pixels, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
    if (
        pixels is None
        or grid is None
        or "mm_encoder_outputs" not in inspect.signature(base.forward).parameters
    ):
        return inputs
    blocks = torch.split(pixels, grid.prod(-1).tolist())
    first: list[int] = []  # for each image, the index of its first copy among the distinct ones
    distinct: list[int] = []
    for i, block in enumerate(blocks):
        same = next(
            (
                k
                for k, j in enumerate(distinct)
                if torch.equal(grid[j], grid[i]) and torch.equal(blocks[j], block)
            ),
            None,
        )
        if same is None:
            distinct.append(i)
            same = len(distinct) - 1
        first.append(same)
    if len(distinct) == len(blocks):
        return inputs
    features = base.get_image_features(
        pixel_values=torch.cat([blocks[j] for j in distinct]), image_grid_thw=grid[distinct], return_dict=True
    )
    features.pooler_output = tuple(features.pooler_output[k] for k in first)
    deepstack = getattr(features, "deepstack_features", None)  # Qwen3-VL: per layer, one tensor per image
    if deepstack is not None:
        features.deepstack_features = [tuple(layer[k] for k in first) for layer in deepstack]
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = {"image": features}
    return out


def _generation_positions(base: Any, prompts: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[3, prompts, P]`` positions, ``[prompts, 1]`` mRoPE deltas) as ``generate`` computes them for a prefill:
    mRoPE where the batch has images, else each row's count of real tokens (padding skipped), deltas 0."""
    ids, attn = prompts["input_ids"], prompts["attention_mask"]
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "inputs_embeds": None,
        "image_grid_thw": prompts.get("image_grid_thw"),
        "video_grid_thw": prompts.get("video_grid_thw"),
        "attention_mask": attn,
        "mm_token_type_ids": prompts.get("mm_token_type_ids"),
        "cache": None,  # transformers >= 5.24; before, past_key_values (the one the signature lacks is dropped)
        "past_key_values": None,
    }
    params = inspect.signature(base.compute_3d_position_ids).parameters
    base.rope_deltas = None
    positions = base.compute_3d_position_ids(**{k: v for k, v in kwargs.items() if k in params})
    if positions is None:
        text = (attn.long().cumsum(-1) - 1).masked_fill(attn == 0, 0)
        return text.unsqueeze(0).expand(3, -1, -1), torch.zeros(
            ids.size(0), 1, dtype=torch.long, device=ids.device
        )
    if positions.dim() == 3 and positions.size(0) == 4:
        positions = positions[1:]
    return positions, base.rope_deltas


def _positions(base: Any, prompts: dict[str, Any], length: int) -> torch.Tensor:
    """``[3, prompts, P + length]`` positions of each prompt followed by ``length`` text tokens, as the model
    computes them for prompt + completion in one pass (mRoPE where the batch has images, else 0, 1, 2, ...)."""
    ids, attn = prompts["input_ids"], prompts["attention_mask"]
    n_prompts, prompt_len = ids.shape
    tail = torch.full((n_prompts, length), _text_token(base, ids), dtype=ids.dtype, device=ids.device)
    types = prompts.get("mm_token_type_ids")
    kwargs: dict[str, Any] = {
        "input_ids": torch.cat([ids, tail], dim=1),
        "inputs_embeds": None,
        "image_grid_thw": prompts.get("image_grid_thw"),
        "video_grid_thw": prompts.get("video_grid_thw"),
        "attention_mask": torch.cat([attn, torch.ones_like(tail, dtype=attn.dtype)], dim=1),
        "mm_token_type_ids": None
        if types is None
        else torch.cat([types, torch.zeros_like(tail, dtype=types.dtype)], 1),
        "cache": None,  # transformers >= 5.24; before, past_key_values (the one the signature lacks is dropped)
        "past_key_values": None,
    }
    params = inspect.signature(base.compute_3d_position_ids).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    saved = getattr(
        base, "rope_deltas", None
    )  # computing positions stores deltas; a pass of its own never did
    try:
        positions = base.compute_3d_position_ids(**kwargs)
    finally:
        base.rope_deltas = saved
    if (
        positions is None
    ):  # no images in the batch: the text model's default, 0 .. P + length - 1 on every row
        positions = (
            torch.arange(prompt_len + length, device=ids.device).view(1, 1, -1).expand(3, n_prompts, -1)
        )
    if (
        positions.dim() == 3 and positions.size(0) == 4
    ):  # text positions first (packed layouts); not used here
        positions = positions[1:]
    return positions


def _text_token(base: Any, ids: torch.Tensor) -> int:
    """A plain text token id to stand for the completion while positions are computed (the pad token)."""
    pad = getattr(base.config, "pad_token_id", None)
    if pad is None:
        pad = getattr(getattr(base.config, "text_config", None), "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _cache_of(out: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned (``cache``, or ``past_key_values`` before
    transformers renamed it)."""
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise TypeError(f"shared prefix: the backbone returned no key/value cache ({type(out).__name__})")
    return cache


def _expand_cache(cache: Any, repeat: torch.Tensor) -> None:
    """Repeat row ``i`` of every layer's keys and values ``repeat[i]`` times, in place (differentiably)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(
            f"shared prefix: a {type(cache).__name__} has no per-layer keys and values (cache.layers)"
        )
    for layer in layers:
        if getattr(layer, "keys", None) is None:
            raise TypeError(
                f"shared prefix: a cache layer {type(layer).__name__} holds no keys after the prompt"
            )
        layer.keys = layer.keys.repeat_interleave(repeat, dim=0)
        layer.values = layer.values.repeat_interleave(repeat, dim=0)


def use_shared_prefix(setting: SharedPrefixSetting, adapter: ModelAdapter, model: Any) -> bool:
    """Whether a run shares prompts (``model.shared_prefix``): ``auto`` where the model adapter supports it for
    ``model``; ``on`` raises a :class:`ParamsError` naming the adapter when it does not; ``off`` never."""
    if setting == "off":
        return False
    check = getattr(adapter, "supports_shared_prefix", None)  # optional in the adapter contract
    supported = bool(check(model)) if callable(check) else False
    if setting == "on" and not supported:
        raise ParamsError(
            f"model.shared_prefix: on, but model adapter {getattr(adapter, 'name', type(adapter).__name__)!r} "
            f"({type(adapter).__module__}.{type(adapter).__qualname__}) does not support a shared prefix for "
            f"{type(model).__name__}; set model.shared_prefix to auto or off"
        )
    if setting == "auto" and not supported:
        log.info("model adapter %s: no shared prefix, each prompt runs once per completion", adapter.name)
    return supported
