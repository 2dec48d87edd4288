"""Model adapters: what vgrpo needs to know about a family of Hugging Face vision-language models.

An adapter loads the model and processor, turns chat messages and images into model inputs, reports the
size of each image as the model saw it (rewards rescale coordinates with it), names the family's default
box-coordinate convention, and exposes the backbone's hidden states and the output layer so log-probs can
be computed by the fused kernels without materialising logits. Adapters are registered through the
``vgrpo_model_adapters`` hook; vgrpo's own are below.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch

from vgrpo.errors import ParamsError, UnknownNameError
from vgrpo.hookspecs import hookimpl

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_TEXT = "tiny-text"  # vgrpo.models.text: a text-only Qwen2
#: What names a vision-tower parameter (Qwen-VL: ``visual``; most other families: ``vision_...``).
VISION_NAME = re.compile(r"visual|vision")
#: Models prepared with ``every_rank_runs_vision`` (see :meth:`ModelAdapter.prepare`).
_VISION_EVERY_FORWARD: weakref.WeakSet[Any] = weakref.WeakSet()


class ModelAdapter:
    """How vgrpo drives one family of image-text-to-text models; this base class is the generic fallback.

    The public contract (pinned by ``tests/test_adapter_contract.py``): :meth:`model_type`, :meth:`handles`,
    :meth:`load`, :meth:`encode`, :meth:`input_sizes`, :meth:`hidden_states`, :meth:`lm_head`,
    :meth:`vision_parameters`, :meth:`prepare`, :meth:`runs_vision_every_forward`, the optional shared-prefix
    pair :meth:`supports_shared_prefix` and :meth:`shared_prefix_hidden`, and the class attributes ``name``,
    ``model_types`` and ``default_coords``. A subclass overrides what its family does differently;
    every method has a working default.
    """

    name: ClassVar[str] = "generic"
    #: ``config.model_type`` values this adapter handles; the generic adapter handles any.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The box convention the family was trained with: a task param ``coords`` defaults to it when the config
    #: sets none (``abs``: pixels of the model input, ``norm1000``: 0–1000, ``norm1``: 0–1).
    default_coords: ClassVar[str] = "abs"

    @staticmethod
    def model_type(source: str) -> str:
        """``config.model_type`` of a local folder or hub id, read from its config only (``tiny``: qwen2_5_vl)."""
        if source == TINY:
            return "qwen2_5_vl"
        if source == TINY_TEXT:
            return "qwen2"
        from transformers import AutoConfig

        try:
            return str(AutoConfig.from_pretrained(source).model_type)
        except (OSError, ValueError) as exc:
            raise ParamsError(f"model {source!r}: cannot read its config.json ({exc})") from None

    def handles(self, model_type: str) -> bool:
        """True when this adapter drives models of ``model_type``."""
        return model_type in self.model_types

    # -- loading -----------------------------------------------------------------------------------------
    def processor_kwargs(self, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        """Keyword arguments for ``AutoProcessor.from_pretrained`` (image size bounds, where the family has them)."""
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
        """(model, processor) from a local path or hub id (``tiny``, ``tiny-text``: the embedded models)."""
        if name_or_path == TINY:
            from vgrpo.models.tiny import build_tiny

            model, processor = build_tiny(seed)
            return model.to(dtype), processor
        if name_or_path == TINY_TEXT:
            from vgrpo.models.text import build_tiny_text

            model, processor = build_tiny_text(seed)
            return model.to(dtype), processor
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(
                name_or_path, **self.processor_kwargs(min_pixels, max_pixels)
            )
            if not hasattr(processor, "image_processor"):  # a processor class transformers does not know
                from vgrpo.models.text import is_text_only, load_causal_lm

                if is_text_only(processor):  # a text-only model (a tiny-text checkpoint, say): its tokenizer
                    return load_causal_lm(name_or_path, dtype=dtype, attn_implementation=attn_implementation)
                raise TypeError(f"AutoProcessor gave a {type(processor).__name__}, not an image processor")
        except (
            ImportError,
            AttributeError,
            TypeError,
        ) as exc:  # e.g. a video processor that needs torchvision
            processor = self._image_only_processor(
                name_or_path, exc, self.processor_kwargs(min_pixels, max_pixels)
            )
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation=attn_implementation
        )
        return model, processor

    def _image_only_processor(self, name_or_path: str, cause: Exception, kwargs: dict[str, Any]) -> Any:
        raise cause

    def prepare(self, model: Any, *, every_rank_runs_vision: bool = False) -> None:
        """Set ``model`` up for a run. ``every_rank_runs_vision``: every forward runs the vision tower, also on a
        batch without images (several processes under ZeRO-3, where each module's forward is a collective)."""
        if every_rank_runs_vision:
            _VISION_EVERY_FORWARD.add(model)
        else:
            _VISION_EVERY_FORWARD.discard(model)
        model.vgrpo_vision_every_forward = every_rank_runs_vision  # what adapters written before 0.2 read

    def runs_vision_every_forward(self, model: Any) -> bool:
        """True when ``model`` was prepared with ``every_rank_runs_vision`` (read it in :meth:`hidden_states`)."""
        return model in _VISION_EVERY_FORWARD

    def vision_parameters(self, model: Any) -> list[tuple[str, torch.nn.Parameter]]:
        """The vision tower's (name, parameter) pairs: what ``model.freeze_vision`` freezes and LoRA leaves alone."""
        return [(n, p) for n, p in model.named_parameters() if VISION_NAME.search(n)]

    # -- inputs ------------------------------------------------------------------------------------------
    def encode(
        self,
        processor: Any,
        prompts: Sequence[list[dict[str, Any]]],
        images: Sequence[list[Any]],
        *,
        group_size: int | Sequence[int] = 1,
    ) -> Any:
        """Left-padded model inputs for chat prompts (each with its PIL images), each prompt's row repeated
        ``group_size`` times (an int for all, or one count per prompt): the G rows of a GRPO group."""
        counts = _counts(group_size, len(prompts))
        rows = [m for m, n in zip(prompts, counts) for _ in range(n)]
        row_images = [i for i, n in zip(images, counts) for _ in range(n)]
        return self._encode_rows(processor, rows, row_images)

    def _encode_rows(self, processor: Any, prompts: Sequence[Any], images: Sequence[list[Any]]) -> Any:
        """One row per prompt, through the processor's chat template."""
        texts = [
            processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts
        ]
        flat = [img for imgs in images for img in imgs]
        processor.tokenizer.padding_side = "left"
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if flat:
            kwargs["images"] = flat
        return processor(**kwargs)

    def input_sizes(
        self, processor: Any, inputs: Any, images: Sequence[list[Any]]
    ) -> list[tuple[float, float] | None]:
        """Size (w, h) of each row's first image as the model saw it (``images``: one list per row of ``inputs``);
        ``None`` when unknown or imageless. REC rewards rescale ``abs`` boxes with it."""
        return [(float(imgs[0].width), float(imgs[0].height)) if imgs else None for imgs in images]

    # -- log-prob path -----------------------------------------------------------------------------------
    def lm_head(self, model: Any) -> torch.nn.Module:
        """The output layer (a Linear over the vocabulary) whose weight the fused log-prob kernels read."""
        return self.output_layer(model)

    def output_layer(self, model: Any) -> torch.nn.Module:
        """The earlier name of :meth:`lm_head`; adapters that override it keep working."""
        return model.get_output_embeddings()

    def hidden_states(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """Final hidden states ``[B, T, H]`` (after the last norm), without computing logits."""
        base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
        if base is None or base is model:
            raise TypeError(f"{type(model).__name__}: cannot find the backbone (base_model_prefix)")
        out = base(**inputs, use_cache=False)
        return out.last_hidden_state

    # -- shared prefix (optional: an adapter without it runs each prompt once per completion) --------------
    def supports_shared_prefix(self, model: Any) -> bool:
        """True when :meth:`shared_prefix_hidden` works for ``model``: ``model.shared_prefix: auto`` then runs each
        prompt once per group. The generic adapter does not know how a family positions its tokens: False."""
        return False

    def shared_prefix_hidden(
        self,
        model: Any,
        prompts: dict[str, Any],
        counts: Sequence[int],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Hidden states ``[N, T, H]`` predicting each completion token, each prompt of ``prompts`` (one row per
        group) run once for its ``counts[i]`` completions; equal to the repeated path's. Adapters that return True
        from :meth:`supports_shared_prefix` implement it."""
        raise NotImplementedError(f"model adapter {self.name!r} does not support a shared prefix")

    def generation_prefix(
        self, model: Any, prompts: dict[str, Any], counts: Sequence[int]
    ) -> dict[str, Any] | None:
        """Keyword arguments for ``generate`` with each prompt of ``prompts`` prefilled once and its cache repeated
        ``counts[i]`` times (the image inputs are then left out); None: ``generate`` prefills every row."""
        return None


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL: boxes in 0–1000 coordinates; images resized to multiples of 28 (patch 14 × merge 2)."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    default_coords = "norm1000"
    patch_size = 14

    def processor_kwargs(self, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}

    def encode(
        self,
        processor: Any,
        prompts: Sequence[list[dict[str, Any]]],
        images: Sequence[list[Any]],
        *,
        group_size: int | Sequence[int] = 1,
    ) -> Any:
        """As :meth:`ModelAdapter.encode`; each prompt and its images are preprocessed once and the rows repeated,
        not preprocessed ``group_size`` times."""
        counts = _counts(group_size, len(prompts))
        if any(n > 1 for n in counts):
            unique = self._encode_rows(processor, prompts, images)
            repeated = _repeat_rows(unique, counts, [len(i) for i in images])
            if repeated is not None:
                return repeated
        return super().encode(processor, prompts, images, group_size=counts)

    def input_sizes(
        self, processor: Any, inputs: Any, images: Sequence[list[Any]]
    ) -> list[tuple[float, float] | None]:
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
        """Final hidden states; for a model prepared with ``every_rank_runs_vision`` (ZeRO-3 on several processes)
        a batch without images still runs the vision tower once on a blank patch grid, weighted 0: under ZeRO-3
        every module's forward is a collective, and a rank that skipped it would leave the others waiting."""
        with self._vision_on_every_rank(model, inputs):
            return super().hidden_states(model, inputs)

    def supports_shared_prefix(self, model: Any) -> bool:
        """Qwen-VL models share the prompt: mRoPE positions and a key/value cache (vgrpo.models.shared_prefix)."""
        from vgrpo.models.shared_prefix import supports_mrope_prefix

        return supports_mrope_prefix(model)

    def shared_prefix_hidden(
        self,
        model: Any,
        prompts: dict[str, Any],
        counts: Sequence[int],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """As :meth:`ModelAdapter.shared_prefix_hidden`, by :func:`vgrpo.models.shared_prefix.shared_prefix_hidden`;
        the vision tower runs in the prompts' pass (on every rank where the model was prepared so)."""
        from vgrpo.models.shared_prefix import shared_prefix_hidden

        with self._vision_on_every_rank(model, prompts, once=True):
            return shared_prefix_hidden(model, prompts, counts, completion_ids, completion_mask)

    def generation_prefix(
        self, model: Any, prompts: dict[str, Any], counts: Sequence[int]
    ) -> dict[str, Any] | None:
        """As :meth:`ModelAdapter.generation_prefix`, by :func:`vgrpo.models.shared_prefix.generation_prefix`."""
        from vgrpo.models.shared_prefix import generation_prefix

        if not self.supports_shared_prefix(model):
            return None
        with self._vision_on_every_rank(model, prompts, once=True):
            return generation_prefix(model, prompts, counts)

    @contextlib.contextmanager
    def _vision_on_every_rank(self, model: Any, inputs: dict[str, Any], once: bool = False) -> Iterator[None]:
        """Where ``model`` runs vision on every rank and ``inputs`` have no images, the embedding's output gets
        the blank image's features × 0 (``once``: in the first forward only, the prompts' pass)."""
        if not self.runs_vision_every_forward(model) or inputs.get("pixel_values") is not None:
            yield
            return
        handle: Any = None

        def after_embedding(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
            if once:
                handle.remove()
            return out + 0.0 * _blank_image_features(model).to(out.dtype)  # where the real images would run

        handle = model.get_input_embeddings().register_forward_hook(after_embedding)
        try:
            yield
        finally:
            handle.remove()

    def _image_only_processor(self, name_or_path: str, cause: Exception, kwargs: dict[str, Any]) -> Any:
        from vgrpo.models.tiny import load_image_only_processor

        log.info("loading %s's processor without its video half (%s)", name_or_path, cause)
        return load_image_only_processor(name_or_path, **kwargs)


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


class CausalLMAdapter(ModelAdapter):
    """Text-only causal language models (Qwen2/3, Llama, Mistral, ...; ``tiny-text``): loaded with
    ``AutoModelForCausalLM`` and their tokenizer, prompts from the text parts of the chat messages."""

    name = "causal_lm"
    model_types = ("qwen2", "qwen3", "qwen3_moe", "llama", "mistral", "gemma", "gemma2", "phi3", "olmo2")

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
        """(model, :class:`~vgrpo.models.text.TextProcessor`) from a local path or hub id (``tiny-text``: the
        embedded one); the pixel bounds do not apply."""
        from vgrpo.models.text import build_tiny_text, load_causal_lm

        if name_or_path == TINY_TEXT:
            model, processor = build_tiny_text(seed)
            return model.to(dtype), processor
        return load_causal_lm(name_or_path, dtype=dtype, attn_implementation=attn_implementation)

    def vision_parameters(self, model: Any) -> list[tuple[str, torch.nn.Parameter]]:
        """None: a text model has no vision tower."""
        return []


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


def _counts(group_size: int | Sequence[int], n_prompts: int) -> list[int]:
    """Rows per prompt: ``group_size`` for each, or the given per-prompt counts."""
    counts = [group_size] * n_prompts if isinstance(group_size, int) else [int(n) for n in group_size]
    if len(counts) != n_prompts or any(n < 1 for n in counts):
        raise ValueError(f"group_size: expected an int >= 1 or {n_prompts} counts >= 1, got {group_size!r}")
    return counts


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


BUILTIN_ADAPTERS: tuple[ModelAdapter, ...] = (
    Qwen2VLAdapter(),
    Qwen25VLAdapter(),
    Qwen3VLAdapter(),
    CausalLMAdapter(),
    ModelAdapter(),
)


def select_adapter(adapters: Mapping[str, ModelAdapter], name: str, model_type: str) -> ModelAdapter:
    """The adapter called ``name``, or with ``auto`` the first that handles ``model_type`` (else generic)."""
    if name != "auto":
        if name not in adapters:
            raise UnknownNameError(
                f"unknown model adapter {name!r} (model.adapter); installed: {sorted(adapters)}"
            )
        return adapters[name]
    candidates = [a for a in adapters.values() if a.handles(model_type)]
    if not candidates:
        return adapters.get("generic", ModelAdapter())
    builtin = {a.name for a in BUILTIN_ADAPTERS}
    chosen = next(
        (a for a in candidates if a.name not in builtin), candidates[0]
    )  # a plugin's is more specific
    if len(candidates) > 1:
        log.warning(
            "model type %s: adapters %s all handle it; using %r (set model.adapter to choose)",
            model_type,
            [a.name for a in candidates],
            chosen.name,
        )
    return chosen


def adapter_for(adapters: Mapping[str, ModelAdapter], name: str, source: str) -> ModelAdapter:
    """The adapter for the model at ``source`` (``name`` as in :func:`select_adapter`); reads only its config."""
    return select_adapter(adapters, name, "" if name != "auto" else ModelAdapter.model_type(source))


@hookimpl
def vgrpo_model_adapters() -> list[ModelAdapter]:
    """vgrpo's own adapters: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, text-only causal LMs and a generic fallback."""
    return list(BUILTIN_ADAPTERS)
