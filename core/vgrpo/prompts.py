"""Prompts into model inputs, one path for training and evaluation: draw the records (training), open the images,
render the task's template, encode through the model adapter (each prompt repeated for its group), and record
the size each image had as the model saw it (``Sample.input_size``, which REC rewards rescale boxes with).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vgrpo.errors import DataError
from vgrpo.task import Sample, Task, TaskParams

if TYPE_CHECKING:
    from collections import Counter

    import torch

    from vgrpo.distributed import Distributed
    from vgrpo.mixture import MixtureEntry, MixtureSampler
    from vgrpo.models.adapters import ModelAdapter

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One prompt of a batch: the record, its task and params, and its images, opened."""

    task: Task
    params: TaskParams
    sample: Sample
    images: list[Any]
    """PIL images in RGB, one per path of ``sample.images``."""
    entry: int = 0
    """Which mixture entry (or evaluation split) the prompt came from."""


@dataclass
class EncodedPrompts:
    """Model inputs for a batch of prompts, one row per completion to make."""

    inputs: dict[str, Any]
    """Left-padded model inputs on the requested device; prompt ``i`` fills ``group_size[i]`` rows in a row."""
    samples: list[Sample]
    """One per row: the prompt's sample with ``input_size`` filled in when the adapter knows it."""


def open_images(sample: Sample, task: str = "") -> list[Any]:
    """The sample's images as RGB PIL images; a :class:`DataError` naming the record and path when one does not
    open (training skips and counts such a sample; evaluation checks every path before it starts)."""
    from PIL import Image

    images = []
    for path in sample.images:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any decoder error is the same problem: this file does not open
            where = f"task {task}, record {sample.id!r}" if task else f"record {sample.id!r}"
            raise DataError(f"{where}: image {path} does not open ({type(exc).__name__}: {exc})",
                            field="image") from None  # fmt: skip
    return images


def draw_prompts(sampler: MixtureSampler, entries: Sequence[MixtureEntry], n: int, dist: Distributed,
                 counters: Counter[str]) -> list[Prompt]:  # fmt: skip
    """This process's ``n`` prompts of a global batch of ``n × dist.world``, images opened.

    Every rank draws the same global batch; each opens the images of its own slots only. A sample whose images
    do not open is skipped and counted (``skipped_samples``, by its rank); its slot is refilled by the next draw of
    the sampler on every rank alike, so all ranks keep the same sampler position.
    """
    rank, world = dist.rank, dist.world
    slots = [sampler.draw() for _ in range(n * world)]
    mine: dict[int, Prompt] = {}
    while True:
        failed = []
        for j in range(rank * n, (rank + 1) * n):
            if j in mine:
                continue
            d = slots[j]
            entry = entries[d.task_index]
            s = entry.samples[d.record_index]
            try:
                mine[j] = Prompt(entry.task, entry.params, s, open_images(s, entry.task.name), entry=d.task_index)
            except DataError as exc:  # an unreadable image costs one sample, not the run
                counters["skipped_samples"] += 1
                log.warning("skipping a sample: %s", exc)
                failed.append(j)
        everywhere = sorted(j for part in dist.gather_objects(failed) for j in part)
        if not everywhere:
            return [mine[j] for j in range(rank * n, (rank + 1) * n)]
        for j in everywhere:
            slots[j] = sampler.draw()


def encode_prompts(
    adapter: ModelAdapter,
    processor: Any,
    prompts: Sequence[Prompt],
    device: torch.device | str | None = None,
    *,
    group_size: int | Sequence[int] = 1,
) -> EncodedPrompts:
    """Render each prompt's template, encode the batch (each prompt ``group_size`` times: an int for all, or one
    count per prompt) and fill in each row's ``input_size``. Tensors go to ``device`` when given."""
    import torch

    counts = [group_size] * len(prompts) if isinstance(group_size, int) else [int(n) for n in group_size]
    if len(counts) != len(prompts):
        raise ValueError(f"group_size: expected {len(prompts)} counts, one per prompt, got {len(counts)}")
    messages = [p.task.build_prompt(p.sample, p.params) for p in prompts]
    images = [p.images for p in prompts]
    encoded = _encode(adapter, processor, messages, images, counts)
    row_images = [imgs for imgs, n in zip(images, counts) for _ in range(n)]
    sizes = adapter.input_sizes(processor, encoded, row_images)
    rows = [p.sample for p, n in zip(prompts, counts) for _ in range(n)]
    samples = [replace(s, input_size=size) if size is not None else s for s, size in zip(rows, sizes)]
    inputs = dict(encoded)
    if device is not None:
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return EncodedPrompts(inputs=inputs, samples=samples)


def _encode(adapter: ModelAdapter, processor: Any, messages: list[Any], images: list[list[Any]],
            counts: list[int]) -> Any:  # fmt: skip
    """``adapter.encode`` with the group sizes; an adapter written before ``group_size`` existed gets the rows
    repeated instead (the contract grows the pluggy way)."""
    if "group_size" in inspect.signature(adapter.encode).parameters:
        return adapter.encode(processor, messages, images, group_size=counts)
    rows = [m for m, n in zip(messages, counts) for _ in range(n)]
    row_images = [i for i, n in zip(images, counts) for _ in range(n)]
    return adapter.encode(processor, rows, row_images)
