"""Prompts into model inputs, one path for training and evaluation: draw the records (training), open the images,
render the task's template, encode through the model adapter (each prompt repeated for its group), and record
the size each image had as the model saw it (``Sample.input_size``, which REC rewards rescale boxes with).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vgrpo.errors import DataError
from vgrpo.task import Sample, Task, TaskParams

if TYPE_CHECKING:
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
class PromptGroups:
    """The prompts of a batch once each, for passes that share each prompt among its group's completions."""

    inputs: dict[str, Any]
    """Left-padded model inputs, one row per prompt (the same padded length as the repeated rows)."""
    counts: list[int]
    """Completions per prompt: row ``i`` here stands for the next ``counts[i]`` rows of the repeated inputs."""


@dataclass
class EncodedPrompts:
    """Model inputs for a batch of prompts, one row per completion to make."""

    inputs: dict[str, Any]
    """Left-padded model inputs on the requested device; prompt ``i`` fills ``group_size[i]`` rows in a row."""
    samples: list[Sample]
    """One per row: the prompt's sample with ``input_size`` filled in when the adapter knows it."""
    groups: PromptGroups | None = None
    """Each prompt once (``share_prefix``), else None."""


#: Images with more pixels than this are not decoded (a 144-megapixel PNG would take gigabytes): a JPEG is
#: reduced while it decodes, anything else is skipped and counted.
MAX_DECODE_PIXELS = 64_000_000
#: The widest aspect ratio the Qwen-VL image processors accept (their smart resize refuses more).
MAX_ASPECT_RATIO = 200.0


def open_images(sample: Sample, task: str = "", max_decode_pixels: int = MAX_DECODE_PIXELS) -> list[Any]:
    """The sample's images as RGB PIL images; a :class:`DataError` naming the record and path when one does not
    open, is larger than ``max_decode_pixels`` (JPEGs are first reduced while decoding) or has an aspect ratio
    beyond :data:`MAX_ASPECT_RATIO`. Training skips and counts such a sample; evaluation reports it."""
    from PIL import Image

    where = f"task {task}, record {sample.id!r}" if task else f"record {sample.id!r}"
    images = []
    for path in sample.images:
        try:
            with Image.open(path) as image:
                w, h = image.size
                if w * h > max_decode_pixels and image.format == "JPEG":
                    # draft decodes at the smallest 1/2^k scale at least this size: half the side that fits
                    scale = (max_decode_pixels / (w * h)) ** 0.5 / 2
                    image.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                    w, h = image.size
                if w * h > max_decode_pixels:
                    raise ValueError(f"{w}×{h} pixels, more than the {max_decode_pixels:,} decoded at most")
                if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
                    raise ValueError(
                        f"{w}×{h}: aspect ratio above {MAX_ASPECT_RATIO:g}, which the processor refuses"
                    )
                images.append(image.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any decoder error is the same problem: this file does not open
            raise DataError(
                f"{where}: image {path} does not open ({type(exc).__name__}: {exc})", field="image"
            ) from None
    return images


def truncate_question(sample: Sample, tokenizer: Any, max_tokens: int | None) -> Sample:
    """``sample`` with its question cut from the left to its last ``max_tokens`` text tokens (the end of a
    question usually holds what is asked); the sample itself when it fits or there is no limit."""
    if max_tokens is None or len(sample.question) <= max_tokens:  # a token is at least one character
        return sample
    ids = tokenizer(sample.question, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return sample
    return replace(sample, question=tokenizer.decode(ids[-max_tokens:]))


#: How many unusable samples a step may skip before the run stops (every image of a task failing, say).
MAX_REDRAWS = 200
#: Why :func:`draw_prompts` skips a sample whose images do not open (a ``check`` says its own reason).
IMAGES_DO_NOT_OPEN = "whose images do not open"


def draw_prompts(
    sampler: MixtureSampler,
    entries: Sequence[MixtureEntry],
    n: int,
    dist: Distributed,
    counters: Counter[str],
    *,
    check: Callable[[Prompt], None] | None = None,
    check_reason: str = "refused by the prompt check",
) -> list[Prompt]:
    """This process's ``n`` prompts of a global batch of ``n × dist.world``, images opened.

    Every rank draws the same global batch; each opens the images of its own slots only. A sample whose images
    do not open is skipped and counted (``skipped_samples``, by its rank); its slot is refilled by the next draw of
    the sampler on every rank alike, so all ranks keep the same sampler position. ``check`` may refuse a prompt
    the same way (a :class:`DataError`: a prompt too long for the generation engine, say); ``check_reason`` says
    why, in the message that stops the run when too many samples in a row are skipped (counted per reason).
    """
    rank, world = dist.rank, dist.world
    slots = [sampler.draw() for _ in range(n * world)]
    mine: dict[int, Prompt] = {}
    reasons: Counter[str] = Counter()  # why the samples of this call were skipped, on every rank
    last_error = ""
    while True:
        failed: list[tuple[int, str]] = []
        for j in range(rank * n, (rank + 1) * n):
            if j in mine:
                continue
            d = slots[j]
            entry = entries[d.task_index]
            s = entry.samples[d.record_index]
            reason = IMAGES_DO_NOT_OPEN
            try:
                prompt = Prompt(
                    entry.task, entry.params, s, open_images(s, entry.task.name), entry=d.task_index
                )
                if check is not None:
                    reason = check_reason
                    check(prompt)
                mine[j] = prompt
            except DataError as exc:  # an unusable sample costs one sample, not the run
                counters["skipped_samples"] += 1
                log.warning("skipping a sample (%s): %s", reason, exc)
                failed.append((j, reason))
                last_error = str(exc)
        everywhere = sorted(item for part in dist.gather_objects(failed) for item in part)
        if not everywhere:
            return [mine[j] for j in range(rank * n, (rank + 1) * n)]
        reasons.update(reason for _, reason in everywhere)
        redraws = sum(reasons.values())
        if redraws > max(MAX_REDRAWS, 10 * n * world):
            why = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
            hint = ": check the data with `vgrpo data check`" if IMAGES_DO_NOT_OPEN in reasons else ""
            raise DataError(
                f"{redraws} samples in a row could not be used ({why}), e.g. "
                f"{last_error or 'on another process'}{hint}"
            )
        for j, _ in everywhere:
            slots[j] = sampler.draw()


def encode_prompts(
    adapter: ModelAdapter,
    processor: Any,
    prompts: Sequence[Prompt],
    device: torch.device | str | None = None,
    *,
    group_size: int | Sequence[int] = 1,
    max_question_tokens: int | None = None,
    counters: Counter[str] | None = None,
    share_prefix: bool = False,
) -> EncodedPrompts:
    """Render each prompt's template, encode the batch (each prompt ``group_size`` times: an int for all, or one
    count per prompt) and fill in each row's ``input_size``. Tensors go to ``device`` when given. A question longer
    than ``max_question_tokens`` text tokens is cut from the left and counted under ``truncated_prompts``.
    ``share_prefix``: also each prompt once (:class:`PromptGroups`), for the shared-prefix passes."""
    counts = [group_size] * len(prompts) if isinstance(group_size, int) else [int(n) for n in group_size]
    if len(counts) != len(prompts):
        raise ValueError(f"group_size: expected {len(prompts)} counts, one per prompt, got {len(counts)}")
    prompts = [_fit(p, processor.tokenizer, max_question_tokens, counters) for p in prompts]
    messages = [p.task.build_prompt(p.sample, p.params) for p in prompts]
    images = [p.images for p in prompts]
    groups = None
    if share_prefix:
        from vgrpo.models.adapters import _repeat_rows

        unique = _encode(adapter, processor, messages, images, [1] * len(counts))
        groups = PromptGroups(inputs=_to(dict(unique), device), counts=counts)
        encoded = _repeat_rows(unique, counts, [len(i) for i in images])
        if encoded is None:  # a layout the repeat does not know: encode the rows
            encoded = _encode(adapter, processor, messages, images, counts)
    else:
        encoded = _encode(adapter, processor, messages, images, counts)
    row_images = [imgs for imgs, n in zip(images, counts) for _ in range(n)]
    sizes = adapter.input_sizes(processor, encoded, row_images)
    rows = [p.sample for p, n in zip(prompts, counts) for _ in range(n)]
    samples = [replace(s, input_size=size) if size is not None else s for s, size in zip(rows, sizes)]
    return EncodedPrompts(inputs=_to(dict(encoded), device), samples=samples, groups=groups)


def _to(inputs: dict[str, Any], device: torch.device | str | None) -> dict[str, Any]:
    import torch

    if device is None:
        return inputs
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def _fit(prompt: Prompt, tokenizer: Any, max_tokens: int | None, counters: Counter[str] | None) -> Prompt:
    sample = truncate_question(prompt.sample, tokenizer, max_tokens)
    if sample is prompt.sample:
        return prompt
    if counters is not None:
        counters["truncated_prompts"] += 1
    log.debug("record %s: question cut to its last %s tokens", sample.id, max_tokens)
    return replace(prompt, sample=sample)


def _encode(
    adapter: ModelAdapter, processor: Any, messages: list[Any], images: list[list[Any]], counts: list[int]
) -> Any:
    """``adapter.encode`` with the group sizes; an adapter written before ``group_size`` existed gets the rows
    repeated instead (the contract grows the pluggy way)."""
    if "group_size" in inspect.signature(adapter.encode).parameters:
        return adapter.encode(processor, messages, images, group_size=counts)
    rows = [m for m, n in zip(messages, counts) for _ in range(n)]
    row_images = [i for i, n in zip(images, counts) for _ in range(n)]
    return adapter.encode(processor, rows, row_images)
