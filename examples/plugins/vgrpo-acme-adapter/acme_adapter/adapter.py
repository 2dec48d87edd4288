"""A vgrpo model adapter for LLaVA-1.5-style models: CLIP vision tower, MLP projector, Llama-family LLM.

What it does differently from vgrpo's generic adapter, and why:

* ``default_coords = "norm1"``: LLaVA-1.5 was trained to write boxes as fractions 0–1 of the image
  (``[0.12, 0.30, 0.55, 0.81]``); the generic adapter assumes pixels, which would score every box as a
  sub-pixel speck in the corner.
* ``input_sizes``: the image as the model saw it is the square the processor made (336×336 for LLaVA-1.5),
  not the original size the generic adapter reports.
* ``encode``: one image per prompt is preprocessed once and its rows repeated for the group, instead of
  preprocessing the same image G times; the result equals encoding the repeated rows.
* ``prepare(every_rank_runs_vision=True)``: a batch without images still runs the vision tower (on a blank
  image, weighted 0), so under ZeRO-3 on several processes no rank skips a collective the others wait in.

Everything else (``load`` through ``AutoModelForImageTextToText``, ``hidden_states`` from the backbone,
``lm_head``, the vision-tower freeze rule) is inherited: the generic implementations already fit LLaVA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import vgrpo


class LlavaAdapter(vgrpo.ModelAdapter):
    """LLaVA-1.5 (``model_type: llava``): boxes as fractions 0–1, one fixed-size square image input."""

    name = "acme.llava"
    model_types = ("llava",)
    default_coords = "norm1"

    def encode(
        self,
        processor: Any,
        prompts: Sequence[list[dict[str, Any]]],
        images: Sequence[list[Any]],
        *,
        group_size: int | Sequence[int] = 1,
    ) -> Any:
        """As :meth:`vgrpo.ModelAdapter.encode`, preprocessing each prompt and its images once: token rows are
        repeated per prompt, ``pixel_values`` (one ``[3, S, S]`` entry per image) per image."""
        counts = [group_size] * len(prompts) if isinstance(group_size, int) else [int(n) for n in group_size]
        if len(counts) != len(prompts) or any(n < 1 for n in counts):
            raise ValueError(
                f"group_size: expected an int >= 1 or {len(prompts)} counts >= 1, got {group_size!r}"
            )
        unique = super().encode(processor, prompts, images)
        if all(n == 1 for n in counts):
            return unique
        repeated = _repeat_rows(unique, counts, [len(i) for i in images])
        if repeated is None:  # an output this does not know how to repeat: the plain path
            return super().encode(processor, prompts, images, group_size=counts)
        return repeated

    def input_sizes(
        self, processor: Any, inputs: Any, images: Sequence[list[Any]]
    ) -> list[tuple[float, float] | None]:
        """(w, h) of each row's first image as the vision tower saw it: the processed square, read from
        ``pixel_values``; ``None`` for a row without images."""
        pixels = inputs.get("pixel_values")
        sizes: list[tuple[float, float] | None] = []
        k = 0  # index of the row's first image in pixel_values (images of all rows, in order)
        for imgs in images:
            if not imgs:
                sizes.append(None)
                continue
            height, width = pixels[k].shape[-2:]
            sizes.append((float(width), float(height)))
            k += len(imgs)
        return sizes

    def hidden_states(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """As :meth:`vgrpo.ModelAdapter.hidden_states`; for a model prepared with ``every_rank_runs_vision`` a
        batch without images runs the vision tower and projector once on a blank image, weighted 0, right
        after the token embedding, where a batch with images runs them."""
        if not self.runs_vision_every_forward(model) or inputs.get("pixel_values") is not None:
            return super().hidden_states(model, inputs)

        def after_embedding(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
            return out + 0.0 * _blank_image_features(model).to(out.dtype)

        handle = model.get_input_embeddings().register_forward_hook(after_embedding)
        try:
            return super().hidden_states(model, inputs)
        finally:
            handle.remove()


def _blank_image_features(model: Any) -> torch.Tensor:
    """The sum of the projected features of one all-zero image of the vision tower's input size."""
    config = model.config
    side = int(config.vision_config.image_size)
    param = next(model.model.vision_tower.parameters())
    pixels = torch.zeros(
        1, int(config.vision_config.num_channels), side, side, dtype=param.dtype, device=param.device
    )
    out = model.model.get_image_features(
        pixel_values=pixels,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.stack([f.float().sum() for f in features]).sum()


def _repeat_rows(inputs: Any, counts: list[int], n_images: list[int]) -> Any:
    """LLaVA processor outputs with prompt i's row repeated ``counts[i]`` times and its images with it;
    ``None`` when an output has a layout this does not know."""
    from transformers import BatchFeature

    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key == "pixel_values":  # [n_images, 3, S, S]: the images of all prompts, in order
            blocks = torch.split(value, n_images)
            out[key] = torch.cat([b for b, n in zip(blocks, counts) for _ in range(n)])
        elif torch.is_tensor(value) and value.dim() > 0 and value.size(0) == len(counts):
            out[key] = value.repeat_interleave(torch.tensor(counts), dim=0)
        else:
            return None
    return BatchFeature(data=out)
