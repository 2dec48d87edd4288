"""Supervised fine-tuning on a task mixture: the cold start before GRPO (``vgrpo sft CONFIG``).

A step draws ``sft.batch`` records from the mixture sampler GRPO uses, encodes their prompts through the one
prompt path (:func:`vgrpo.prompts.encode_prompts`) and trains on each record's *target*: its ``completion``
field when it has one, else its task's :meth:`~vgrpo.Task.reference_completion` (with ``input_size`` known,
so boxes are in the pixels the model sees), then the end-of-sequence token. The loss is the mean token
cross-entropy over the target tokens of the whole batch (on every process together), from the fused log-prob
kernels (:func:`vgrpo.rollout.completion_logprobs`: no ``[tokens, vocab]`` logits); prompt tokens carry no
loss.

Model loading, LoRA, freezing, the optimizer, logging, checkpoints, exact resume and the run-folder rules are
the GRPO recipe's (:class:`vgrpo.recipe.Recipe`); the run goes to ``sft.output_dir`` (default
``<output_dir>/sft``), and its last checkpoint is what ``vgrpo train model.name_or_path=...`` and
``vgrpo eval`` read.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vgrpo.checkpoint import MODEL_EXACTNESS_KEYS
from vgrpo.config import TrainConfig
from vgrpo.errors import DataError
from vgrpo.metrics import StepStats
from vgrpo.mixture import MixtureEntry
from vgrpo.plugins import PluginRegistry, plugin_output
from vgrpo.prompts import Prompt, draw_prompts, encode_prompts
from vgrpo.recipe import Recipe
from vgrpo.rollout import Rollout, completion_logprobs
from vgrpo.task import Sample, Task, TaskParams

__all__ = ["SFT_EXACTNESS_KEYS", "SFTTrainer", "record_target", "sft_entries", "sft_output_dir"]

log = logging.getLogger(__name__)

#: Config keys whose change breaks an exact SFT resume (refused unless checkpoint.allow_config_change): the
#: model and data keys every recipe shares, and SFT's batch and lengths. SFT has no groups, so
#: ``model.shared_prefix`` (GRPO's) does not apply.
SFT_EXACTNESS_KEYS = (
    *MODEL_EXACTNESS_KEYS,
    "sft.batch",
    "sft.max_length",
    "generation.max_completion_length",
    "generation.max_prompt_length",
)
#: The learning rate and schedule of SFT (the rate first), applied when they change on a resume.
SFT_SCHEDULE_KEYS = ("sft.lr", "sft.steps", "sft.warmup_steps", "sft.lr_scheduler")
#: The record field whose text, when present, is the target instead of the task's reference completion.
COMPLETION_FIELD = "completion"


def sft_output_dir(config: TrainConfig) -> Path:
    """Where the SFT run of a config goes: ``sft.output_dir``, default ``<output_dir>/sft``."""
    return Path(config.sft.output_dir) if config.sft.output_dir else Path(config.output_dir) / "sft"


def record_target(task: Task, sample: Sample, params: TaskParams) -> tuple[str | None, str | None]:
    """(target text, why there is none): the record's ``completion`` field, else the task's reference
    completion (plugin code: an exception or a value that is no string is a reason, never raised)."""
    given = sample.extra.get(COMPLETION_FIELD)
    if isinstance(given, str):
        return given, None
    method = getattr(task, "reference_completion", None)
    if method is None:  # a task class that predates the method and does not derive from vgrpo.Task
        return None, "the task has no reference_completion"
    try:
        with plugin_output():
            text = method(sample, params)
    except Exception as exc:  # noqa: BLE001 - plugin code: reported with the record, never fatal here
        return None, f"reference_completion raised {type(exc).__name__}: {exc}"
    if text is None:
        return None, "reference_completion returned None"
    if not isinstance(text, str):
        return None, f"reference_completion returned a {type(text).__name__}, expected a string or None"
    return text, None


def _implements_reference(task: Task) -> bool:
    method = getattr(type(task), "reference_completion", None)
    return method is not None and method is not Task.reference_completion


def sft_entries(entries: list[MixtureEntry], files: list[list[str]]) -> list[MixtureEntry]:
    """Each mixture entry with the records that have a target; a :class:`DataError` naming the task and both
    ways out (a ``completion`` field, or the task's ``reference_completion``) when one has none at all."""
    out = []
    for entry, data in zip(entries, files):
        name = entry.task.name
        kept, reasons = [], []
        for sample in entry.samples:
            text, why = record_target(entry.task, sample, entry.params)
            if text is not None:
                kept.append(sample)
            else:
                reasons.append((sample.id, why))
        if not kept:
            first_id, first_why = reasons[0]
            cause = (
                "the task implements no reference_completion"
                if not _implements_reference(entry.task)
                else f"its reference_completion gives none (record {first_id!r}: {first_why})"
            )
            raise DataError(
                f"task {name!r} has no SFT target for any of its {len(reasons)} records: they have no "
                f"{COMPLETION_FIELD!r} field and {cause}. Either add a {COMPLETION_FIELD!r} field (the "
                f"target text) to the records of {', '.join(data)}, or implement "
                "reference_completion(sample, params) in the task's plugin; or leave the task out of the "
                "SFT run"
            )
        if reasons:
            first_id, first_why = reasons[0]
            log.warning(
                "task %s: %d of %d records have no SFT target and are left out (e.g. %r: %s)",
                name,
                len(reasons),
                len(entry.samples),
                first_id,
                first_why,
            )
        out.append(replace(entry, samples=kept))
    return out


@dataclass
class SftBatch:
    """One step's prompts with their targets as the completion to score (mask 1 up to and with the EOS)."""

    rollout: Rollout
    tasks: list[str]
    """The task of each row."""


class SFTTrainer(Recipe):
    """Supervised fine-tuning on a task mixture (see the module). ``SFTTrainer(config).train()`` runs it."""

    label = "SFT"
    exactness_keys = SFT_EXACTNESS_KEYS
    schedule_keys = SFT_SCHEDULE_KEYS

    def __init__(self, config: TrainConfig, registry: PluginRegistry | None = None) -> None:
        super().__init__(config, registry, output_dir=sft_output_dir(config))
        self._fallback: dict[tuple[int, str], str] = {}

    # -- the recipe's knobs --------------------------------------------------------------------------------
    @property
    def max_steps(self) -> int:
        return self.config.sft.steps

    @property
    def max_length(self) -> int:
        """Target tokens at most (EOS included)."""
        return self.config.sft.max_length or self.config.generation.max_completion_length

    def schedule(self) -> dict[str, Any]:
        s = self.config.sft
        return {"lr": s.lr, "scheduler": s.lr_scheduler, "warmup_steps": s.warmup_steps}

    def micro_batch(self) -> tuple[int, int]:
        return self.config.sft.batch, 1

    def build_entries(self) -> list[MixtureEntry]:
        entries = sft_entries(super().build_entries(), [t.data for t in self.config.tasks])
        for e, entry in enumerate(entries):  # the target without input_size, should the step's one fail
            for sample in entry.samples:
                self._fallback[e, sample.id] = record_target(entry.task, sample, entry.params)[0] or ""
        return entries

    def memory_message(self, exc: BaseException) -> str:
        c = self.config
        return (
            f"out of memory at an SFT step ({type(exc).__name__}). Lower sft.batch={c.sft.batch}, "
            f"sft.max_length={self.max_length} or model.max_pixels={c.model.max_pixels}; or set "
            "model.gradient_checkpointing=true, model.dtype=bfloat16 or model.lora.enabled=true."
        )

    # -- one step ------------------------------------------------------------------------------------------
    def _batch(self, prompts: list[Prompt]) -> SftBatch:
        """The prompts encoded (one row each) and their targets tokenised, cut to :attr:`max_length`."""
        assert self.dist is not None and self.adapter is not None
        device = self.dist.device
        encoded = encode_prompts(
            self.adapter,
            self.processor,
            prompts,
            device,
            group_size=1,
            max_question_tokens=self.config.generation.max_prompt_length,
            counters=self.counters,
        )
        tokenizer = self.processor.tokenizer
        texts, rows = [], []
        for prompt, sample in zip(prompts, encoded.samples):
            text = record_target(prompt.task, sample, prompt.params)[0]
            if text is None:
                text = self._fallback[prompt.entry, sample.id]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_ids[0]]
            if len(ids) > self.max_length:
                ids = ids[: self.max_length]
                self.counters["sft_truncated"] += 1
            texts.append(text)
            rows.append(ids)
        width = max(len(ids) for ids in rows)
        targets = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width)
        for i, ids in enumerate(rows):
            targets[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1.0
        truncated = torch.tensor([ids[-1] != self.eos_ids[0] for ids in rows])
        rollout = Rollout(encoded.inputs, targets.to(device), mask.to(device), truncated, texts)
        return SftBatch(rollout, [p.task.name for p in prompts])

    def train_step(self) -> list[dict[str, Any]]:
        """One optimizer step on ``sft.batch`` records per process; its metrics row."""
        assert self.dist is not None and self.policy is not None and self.sampler is not None
        dist, policy = self.dist, self.policy
        start = time.perf_counter()
        batch = self._batch(
            draw_prompts(self.sampler, self.entries, self.config.sft.batch, dist, self.counters)
        )
        mask = batch.rollout.completion_mask
        num_items = max(dist.sum(float(mask.sum())) / dist.world, 1.0)  # gradients are averaged over ranks
        lr = policy.scheduler.get_last_lr()[0]
        impl = self.config.model.logprobs

        def forward() -> tuple[torch.Tensor, torch.Tensor]:
            logps = completion_logprobs(policy.unwrapped, self.adapter, batch.rollout, impl=impl)
            return -logps.sum() / num_items, logps.detach()

        with dist.accumulating(policy.model, last=True):
            loss, logps = dist.forward(policy.model, forward)
            finite = dist.deepspeed or dist.all_true(bool(torch.isfinite(loss)))  # DeepSpeed checks itself
            if finite:
                dist.backward(policy.model, loss, last=True)
        self.step += 1
        if not finite:
            dist.drop_gradients(policy.model, policy.optimizer)
            return [self._nonfinite_step("sft.lr")]
        params = [p for p in policy.model.parameters() if p.requires_grad]
        grad_norm = dist.step(
            policy.model, policy.optimizer, policy.scheduler, params, self.config.optim.max_grad_norm
        )
        if not math.isfinite(grad_norm):
            return [self._nonfinite_step("sft.lr")]
        self._nonfinite = 0
        return [self._row(batch, logps, grad_norm, lr, time.perf_counter() - start)]

    def _row(
        self, batch: SftBatch, logps: torch.Tensor, grad_norm: float, lr: float, seconds: float
    ) -> dict[str, Any]:
        """The step's metrics over every process: mean token loss, of each task too, and target lengths."""
        assert self.dist is not None
        mask = batch.rollout.completion_mask
        mine = list(zip(batch.tasks, (-logps.sum(1)).tolist(), mask.sum(1).tolist()))
        rows = [r for part in self.dist.gather_objects(mine) for r in part]
        tokens = sum(n for _, _, n in rows)
        row: dict[str, Any] = {
            "step": self.step,
            "loss": sum(x for _, x, _ in rows) / max(tokens, 1.0),
            "grad_norm": grad_norm,
            "lr": lr,
            "completion_length": tokens / len(rows),
            "step_time_s": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        }
        for task in sorted({t for t, _, _ in rows}):
            own = [(x, n) for t, x, n in rows if t == task]
            task_tokens = sum(n for _, n in own)
            row[f"tasks/{task}/loss"] = sum(x for x, _ in own) / max(task_tokens, 1.0)
            row[f"tasks/{task}/completion_length"] = task_tokens / len(own)
        counters = StepStats().reduce(self.dist, self.counters).counters
        row.update({f"counters/{k}": v for k, v in sorted(counters.items())})
        return row
