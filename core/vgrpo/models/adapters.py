"""Model adapters: what vgrpo needs to know about a family of Hugging Face vision-language models.

An adapter loads the model and processor, turns chat messages and images into model inputs, reports the
size of each image as the model saw it (rewards rescale coordinates with it), names the family's default
box-coordinate convention, and exposes the backbone's hidden states and the output layer so log-probs can
be computed by the fused kernels without materialising logits. Adapters are registered through the
``vgrpo_model_adapters`` hook; vgrpo's own are below.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from vgrpo.hookspecs import hookimpl

log = logging.getLogger(__name__)

TINY = "tiny"


class ModelAdapter:
    """How vgrpo drives one family of image-text-to-text models (the generic fallback as it stands)."""

    name: ClassVar[str] = "generic"
    #: ``config.model_type`` values this adapter handles; the generic adapter handles any.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The box convention the family was trained with (a task's ``coords`` default).
    default_coords: ClassVar[str] = "abs"

    def handles(self, model_type: str) -> bool:
        return model_type in self.model_types

    # -- loading -----------------------------------------------------------------------------------------
    def processor_kwargs(self, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        return {}

    def load(
        self,
        name_or_path: str,
        *,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        seed: int = 0,
    ) -> tuple[Any, Any]:
        """(model, processor) from a local path or hub id (``tiny``: the embedded model)."""
        if name_or_path == TINY:
            from vgrpo.models.tiny import build_tiny

            model, processor = build_tiny(seed)
            return model.to(dtype), processor
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(name_or_path, **self.processor_kwargs(min_pixels, max_pixels))
            if not hasattr(processor, "image_processor"):  # a processor class transformers does not know
                raise TypeError(f"AutoProcessor gave a {type(processor).__name__}, not an image processor")
        except (ImportError, AttributeError, TypeError) as exc:  # e.g. a video processor that needs torchvision
            processor = self._image_only_processor(name_or_path, exc)
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation=attn_implementation
        )
        return model, processor

    def _image_only_processor(self, name_or_path: str, cause: Exception) -> Any:
        raise cause

    # -- inputs ------------------------------------------------------------------------------------------
    def encode(self, processor: Any, messages: Sequence[list[dict[str, Any]]], images: Sequence[list[Any]]) -> Any:
        """Left-padded model inputs for a batch of chat prompts (each with its PIL images)."""
        texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
        flat = [img for imgs in images for img in imgs]
        processor.tokenizer.padding_side = "left"
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if flat:
            kwargs["images"] = flat
        return processor(**kwargs)

    def input_sizes(self, processor: Any, inputs: Any, images: Sequence[list[Any]]) -> list[tuple[float, float] | None]:
        """Size (w, h) of each sample's first image as the model saw it; ``None`` when unknown or imageless."""
        return [(float(imgs[0].width), float(imgs[0].height)) if imgs else None for imgs in images]

    # -- log-prob path -----------------------------------------------------------------------------------
    def output_layer(self, model: Any) -> torch.nn.Module:
        """The lm_head (a Linear over the vocabulary)."""
        return model.get_output_embeddings()

    def hidden_states(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """Final hidden states ``[B, T, H]`` (after the last norm), without computing logits."""
        base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
        if base is None or base is model:
            raise TypeError(f"{type(model).__name__}: cannot find the backbone (base_model_prefix)")
        out = base(**inputs, use_cache=False)
        return out.last_hidden_state


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL: boxes in 0–1000 coordinates; images resized to multiples of 28 (patch 14 × merge 2)."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    default_coords = "norm1000"
    patch_size = 14

    def processor_kwargs(self, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}

    def encode(self, processor: Any, messages: Sequence[list[dict[str, Any]]], images: Sequence[list[Any]]) -> Any:
        """Left-padded model inputs; a run of identical rows (a GRPO group: the same prompt and image objects G
        times in a row) is encoded once and repeated, so each image is preprocessed once per group, not G times."""
        runs = _identical_runs(messages, images)
        if len(runs) < len(messages):
            firsts = [start for start, _ in runs]
            unique = super().encode(processor, [messages[i] for i in firsts], [images[i] for i in firsts])
            repeated = _repeat_rows(unique, [n for _, n in runs], [len(images[i]) for i in firsts])
            if repeated is not None:
                return repeated
        return super().encode(processor, messages, images)

    def input_sizes(self, processor: Any, inputs: Any, images: Sequence[list[Any]]) -> list[tuple[float, float] | None]:
        grids = inputs.get("image_grid_thw")
        patch = getattr(processor.image_processor, "patch_size", self.patch_size)
        out: list[tuple[float, float] | None] = []
        k = 0
        for imgs in images:
            if not imgs:
                out.append(None)
                continue
            _, h, w = (int(v) for v in grids[k])
            out.append((float(w * patch), float(h * patch)))
            k += len(imgs)
        return out

    def hidden_states(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """Final hidden states; with ``model.vgrpo_vision_every_forward`` set (ZeRO-3 on several processes) a batch
        without images still runs the vision tower once on a blank patch grid, weighted 0: under ZeRO-3 every
        module's forward is a collective, and a rank that skipped it would leave the others waiting."""
        if not getattr(model, "vgrpo_vision_every_forward", False) or inputs.get("pixel_values") is not None:
            return super().hidden_states(model, inputs)

        def after_embedding(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
            return out + 0.0 * _blank_image_features(model).to(out.dtype)  # where the real images would run

        handle = model.get_input_embeddings().register_forward_hook(after_embedding)
        try:
            return super().hidden_states(model, inputs)
        finally:
            handle.remove()

    def _image_only_processor(self, name_or_path: str, cause: Exception) -> Any:
        from vgrpo.models.tiny import load_image_only_processor

        log.info("loading %s's processor without its video half (%s)", name_or_path, cause)
        return load_image_only_processor(name_or_path)


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: boxes in absolute pixels of the resized input image."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    default_coords = "abs"


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: boxes in 0–1000 coordinates again; patch 16."""

    name = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    default_coords = "norm1000"
    patch_size = 16


def _blank_image_features(model: Any) -> torch.Tensor:
    """The sum of the vision tower's features for the smallest valid image grid (one merge window of patches)."""
    vc = model.config.vision_config
    merge = int(getattr(vc, "spatial_merge_size", 2))
    channels = int(getattr(vc, "in_channels", getattr(vc, "in_chans", 3)))
    dim = channels * int(getattr(vc, "temporal_patch_size", 2)) * int(vc.patch_size) ** 2
    base = getattr(model, getattr(model, "base_model_prefix", "model"))
    visual = getattr(base, "visual", None) or model.visual
    param = next(visual.parameters())
    pixels = torch.zeros(merge * merge, dim, dtype=param.dtype, device=param.device)
    grid = torch.tensor([[1, merge, merge]], device=param.device)
    out = base.get_image_features(pixel_values=pixels, image_grid_thw=grid)
    # only the image embeddings, as the real path uses them: a second output of the tower joining the graph
    # would run the tower's backward hooks twice, and ZeRO-3 would see a different module trace on this rank
    embeds = getattr(out, "pooler_output", None)
    return _tensor_sum(embeds if embeds is not None else out)


def _tensor_sum(out: Any) -> torch.Tensor:
    if torch.is_tensor(out):
        return out.float().sum()
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (list, tuple)):
        parts = [_tensor_sum(x) for x in out if x is not None]
        return torch.stack(parts).sum() if parts else torch.zeros(())
    return torch.zeros(())


def _identical_runs(messages: Sequence[Any], images: Sequence[Any]) -> list[tuple[int, int]]:
    """(start, length) of each run of rows that are the very same message and image-list objects."""
    runs: list[tuple[int, int]] = []
    for i in range(len(messages)):
        if runs and messages[i] is messages[i - 1] and images[i] is images[i - 1]:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def _repeat_rows(inputs: Any, counts: list[int], n_images: list[int]) -> Any:
    """Qwen-VL processor outputs with row i repeated ``counts[i]`` times (its image patches and grids too);
    ``None`` when an output has a layout this does not know."""
    from transformers import BatchFeature

    grid = inputs.get("image_grid_thw")
    repeat = torch.tensor(counts)
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key == "image_grid_thw":
            blocks = torch.split(value, n_images)
        elif key == "pixel_values" and grid is not None:  # patches of all images, concatenated
            per_row = [int(g.prod(-1).sum()) for g in torch.split(grid, n_images)]
            blocks = torch.split(value, per_row)
        elif torch.is_tensor(value) and value.dim() > 0 and value.size(0) == len(counts):
            out[key] = value.repeat_interleave(repeat, dim=0)
            continue
        else:
            return None
        out[key] = torch.cat([b for b, n in zip(blocks, counts) for _ in range(n)])
    return BatchFeature(data=out)


BUILTIN_ADAPTERS: tuple[ModelAdapter, ...] = (Qwen2VLAdapter(), Qwen25VLAdapter(), Qwen3VLAdapter(), ModelAdapter())


def select_adapter(adapters: dict[str, ModelAdapter], name: str, model_type: str) -> ModelAdapter:
    """The adapter called ``name``, or with ``auto`` the first that handles ``model_type`` (else generic)."""
    if name != "auto":
        if name not in adapters:
            raise KeyError(f"unknown model adapter {name!r}; installed: {sorted(adapters)}")
        return adapters[name]
    for adapter in adapters.values():
        if adapter.model_types and adapter.handles(model_type):
            return adapter
    return adapters.get("generic", ModelAdapter())


@hookimpl
def vgrpo_model_adapters() -> list[ModelAdapter]:
    """vgrpo's own adapters: Qwen2-VL, Qwen2.5-VL, Qwen3-VL and a generic fallback."""
    return list(BUILTIN_ADAPTERS)
