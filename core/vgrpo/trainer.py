"""The GRPO training recipe: setup, train, save_checkpoint, cleanup — on one process or many (vgrpo.distributed).

One optimizer step reads top to bottom: mixture sampler → task.build_prompt → model adapter → rollout (G
samples per prompt) → task.parse → rewards → advantages → log-probs → loss → optimizer → metrics/checkpoint.

With several processes every rank draws the same global batch of prompts and keeps its own slice (a GRPO group
stays on one rank); completions are sampled from per-row seeds, rewards are gathered before advantages, and the
loss is normalised over the global batch, so a step gives the same result on one process or on many.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import shutil
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vgrpo.advantages import group_advantages
from vgrpo.config import TrainConfig, dump_config
from vgrpo.data import load_jsonl
from vgrpo.distributed import Distributed, run_as_forward
from vgrpo.env import plugin_summary_lines, version_summary
from vgrpo.errors import DataError, TrainingError
from vgrpo.evaluate import build_eval_splits, eval_settings, evaluate, flat_metrics
from vgrpo.loss import LossOutput, grpo_loss
from vgrpo.metrics import MetricsLogger
from vgrpo.mixture import MixtureSampler
from vgrpo.models.adapters import TINY, ModelAdapter, select_adapter
from vgrpo.plugins import PluginRegistry, get_registry
from vgrpo.reward_pool import RewardPool
from vgrpo.rollout import Rollout, completion_hidden, completion_logprobs, eos_token_ids, sample
from vgrpo.scoring import resolve_weights, score
from vgrpo.task import Sample, Task, TaskParams

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"
DEEPSPEED_DIR = "deepspeed"
ADAPTER_DIR = "adapter"
MAX_NONFINITE_STEPS = 3


@dataclass
class MixtureEntry:
    """A task of the mixture, ready to use."""

    task: Task
    params: TaskParams
    weights: dict[str, float]
    samples: list[Sample]


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))]
    return max(found)[1] if found else None


def row_seed(seed: int, step: int, micro: int, row: int) -> int:
    """The sampling seed of one completion: a function of the run seed, the step and its place in the global
    batch only (not of the process that samples it)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{micro}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def out_of_memory_message(config: TrainConfig, exc: BaseException) -> str:
    """What to lower when a step runs out of memory, with the current values."""
    c = config
    return (
        f"out of memory at a training step ({type(exc).__name__}). Lower one of: optim.prompts_per_step="
        f"{c.optim.prompts_per_step} (raise optim.gradient_accumulation_steps={c.optim.gradient_accumulation_steps} "
        f"to keep the batch), grpo.num_generations={c.grpo.num_generations}, generation.max_completion_length="
        f"{c.generation.max_completion_length}, model.max_pixels={c.model.max_pixels}; or set "
        f"model.gradient_checkpointing=true (now {str(c.model.gradient_checkpointing).lower()}), "
        f"model.dtype=bfloat16 (now {c.model.dtype}), model.lora.enabled=true, or grpo.beta=0 (no reference model)."
    )


class Trainer:
    """GRPO on a task mixture. ``Trainer(config).train()`` runs the whole thing."""

    def __init__(self, config: TrainConfig, registry: PluginRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or get_registry()
        self.output_dir = Path(config.output_dir)
        self.step = 0
        self._stop_requested = False
        self._nonfinite = 0
        self._counters: Counter[str] = Counter()

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        if not cfg.tasks:
            raise DataError("the config lists no tasks: add entries under `tasks:` ({task, data})")
        self.registry.require(cfg.required_plugins)
        self.dist = Distributed()
        if self.dist.is_main:
            for line in [version_summary(), *plugin_summary_lines(self.registry)]:
                log.info("%s", line)
        self.entries = self._setup_mixture()
        self.eval_splits = build_eval_splits(cfg, self.registry) if cfg.eval.every else []
        self.sampler = MixtureSampler([len(e.samples) for e in self.entries], [t.weight for t in cfg.tasks], cfg.seed)
        torch.manual_seed(cfg.seed)
        resume_from = self._resume_path()
        self.adapter, model, self.processor, self.ref_model = self._setup_model(resume_from)
        torch.manual_seed(cfg.seed + self.dist.rank)  # ranks draw different dropout masks
        optimizer, self.scheduler = self._setup_optimizer(model)
        o = cfg.optim
        self.model, self.optimizer, _ = self.dist.prepare(
            model, optimizer, self.scheduler, rows_per_micro_batch=o.prompts_per_step * cfg.grpo.num_generations,
            gradient_accumulation_steps=o.gradient_accumulation_steps, max_grad_norm=o.max_grad_norm,
            bf16=cfg.model.dtype == "bfloat16",
        )  # fmt: skip
        self.unwrapped = self.dist.unwrap(self.model)
        if self.ref_model is not None:
            self.ref_model = self.dist.prepare_reference(self.ref_model)
        self.eos_ids = eos_token_ids(self.unwrapped, self.processor)
        workers = cfg.rewards.workers
        self.reward_pool = RewardPool(workers, cfg.rewards.timeout_s) if workers > 0 else None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = None
        if self.dist.is_main:
            (self.output_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
            self.metrics = MetricsLogger(self.output_dir, tensorboard=cfg.logging.tensorboard,
                                         wandb=cfg.logging.wandb, config=cfg.model_dump(mode="json"))  # fmt: skip
            log.info("distributed: %s", self.dist.describe())
        if resume_from is not None:
            self._load_state(resume_from)
            if self.metrics is not None:
                self.metrics.truncate_after(self.step)
        self._completions_path = self.output_dir / "completions.jsonl"

    def _setup_mixture(self) -> list[MixtureEntry]:
        entries = []
        for item in self.config.tasks:
            task = self.registry.task(item.task)
            params = task.params(item.params)
            weights = resolve_weights(task, item.rewards, self.registry.rewards)
            samples: list[Sample] = []
            for path in item.data:
                samples += load_jsonl(path, task, image_root=item.image_root, read_sizes=True)
            if item.max_samples is not None:
                samples = samples[: item.max_samples]
            if not samples:
                raise DataError(f"task {item.task!r}: no records in {item.data}")
            entries.append(MixtureEntry(task, params, weights, samples))
            log.info("task %s: %d records from %s", item.task, len(samples), ", ".join(item.data))
        return entries

    def _load(self, adapter: ModelAdapter, source: str) -> tuple[Any, Any]:
        mcfg = self.config.model
        with self.dist.full_parameters_at_load():
            return adapter.load(
                source, dtype=_dtype(mcfg.dtype), attn_implementation=mcfg.attn_implementation,
                min_pixels=mcfg.min_pixels, max_pixels=mcfg.max_pixels, seed=self.config.seed,
            )  # fmt: skip

    def _setup_model(self, resume_from: Path | None) -> tuple[ModelAdapter, Any, Any, Any]:
        """(adapter, policy, processor, reference model or None).

        The reference is the model the run *started* from, also after a resume: a copy of the freshly loaded
        base, or the base loaded again when the policy comes from a checkpoint. With LoRA there is none: the
        reference log-probs are the policy's with its adapters disabled."""
        mcfg = self.config.model
        # a LoRA checkpoint's model.safetensors holds merged weights: resume from the base model + the adapter
        from_checkpoint = resume_from is not None and not mcfg.lora.enabled
        source = str(resume_from) if from_checkpoint else mcfg.name_or_path
        if source == TINY:
            model_type = "qwen2_5_vl"
        else:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(source).model_type
        adapter = select_adapter(self.registry.model_adapters, mcfg.adapter, model_type)
        model, processor = self._load(adapter, source)
        ref = None
        if self.config.grpo.beta != 0.0 and not mcfg.lora.enabled:
            ref = self._load(adapter, mcfg.name_or_path)[0] if from_checkpoint else copy.deepcopy(model)
            ref.eval()
            for p in ref.parameters():
                p.requires_grad_(False)
        if self.dist.world > 1:  # see Qwen2VLAdapter.hidden_states: every rank runs the same modules
            for m in (model, ref):
                if m is not None:
                    m.vgrpo_vision_every_forward = True
        if mcfg.freeze_vision:
            for name, param in model.named_parameters():
                if "visual" in name or "vision" in name:
                    param.requires_grad_(False)
        if mcfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.peft_model = None
        if mcfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            lora = mcfg.lora
            self.peft_model = get_peft_model(model, LoraConfig(  # adapters are injected into `model` in place
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                exclude_modules=r".*(visual|vision).*" if mcfg.freeze_vision else None,
            ))  # fmt: skip
            if resume_from is not None:
                self._load_adapter(resume_from)
        log.info("model %s (adapter %s): %d trainable parameters", source, adapter.name,
                 sum(p.numel() for p in model.parameters() if p.requires_grad))  # fmt: skip
        return adapter, model, processor, ref

    def _load_adapter(self, checkpoint: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = checkpoint / ADAPTER_DIR / "adapter_model.safetensors"
        if not path.exists():
            raise DataError(f"{checkpoint}: no {ADAPTER_DIR}/adapter_model.safetensors: this checkpoint was not "
                            "written with model.lora.enabled=true; resume it without LoRA")  # fmt: skip
        result = set_peft_model_state_dict(self.peft_model, load_file(path))
        if getattr(result, "unexpected_keys", None):
            raise DataError(f"{path}: adapter weights that the model has no place for: {result.unexpected_keys[:5]}")

    def _setup_optimizer(self, model: Any) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_scheduler

        o = self.config.optim
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.warmup_steps,
                                  num_training_steps=o.max_steps)  # fmt: skip
        return optimizer, scheduler

    def _resume_path(self) -> Path | None:
        resume = self.config.checkpoint.resume
        if resume == "never":
            return None
        if resume == "auto":
            return latest_checkpoint(self.output_dir) if self.output_dir.exists() else None
        path = Path(resume)
        if not (path / STATE_FILE).exists():
            raise DataError(f"resume={resume}: not a checkpoint folder (no {STATE_FILE})")
        return path

    # -- one step --------------------------------------------------------------------------------------------
    def _draw_prompts(self, n: int) -> list[tuple[int, Sample, list[Any]]]:
        """This rank's n (entry, sample, images) triples of a global batch of n × world prompts.

        Every rank draws the same global batch; each opens the images of its own slots only. A sample whose
        images do not open is skipped and counted (by its rank); its slot is refilled by the next draw of the
        sampler on every rank alike, so all ranks keep the same sampler position.
        """
        from PIL import Image

        rank, world = self.dist.rank, self.dist.world
        slots = [self.sampler.draw() for _ in range(n * world)]
        mine: dict[int, tuple[int, Sample, list[Any]]] = {}
        while True:
            failed = []
            for j in range(rank * n, (rank + 1) * n):
                if j in mine:
                    continue
                d = slots[j]
                s = self.entries[d.task_index].samples[d.record_index]
                try:
                    mine[j] = (d.task_index, s, [Image.open(p).convert("RGB") for p in s.images])
                except Exception as exc:  # noqa: BLE001 - an unreadable image costs one sample, not the run
                    self._counters["skipped_samples"] += 1
                    log.warning("skipping sample %s of task %s: %s", s.id, self.entries[d.task_index].task.name, exc)
                    failed.append(j)
            everywhere = sorted(j for part in self.dist.gather_objects(failed) for j in part)
            if not everywhere:
                return [mine[j] for j in range(rank * n, (rank + 1) * n)]
            for j in everywhere:
                slots[j] = self.sampler.draw()

    def _rollout(self, prompts: list[tuple[int, Sample, list[Any]]],
                 micro: int = 0) -> tuple[Rollout, list[int], list[Sample]]:  # fmt: skip
        g = self.config.grpo.num_generations
        messages, images, entry_ids, samples = [], [], [], []
        for e, s, imgs in prompts:
            entry = self.entries[e]
            prompt = entry.task.build_prompt(s, entry.params)
            messages += [prompt] * g
            images += [imgs] * g
            entry_ids += [e] * g
            samples += [s] * g
        inputs = self.adapter.encode(self.processor, messages, images)
        sizes = self.adapter.input_sizes(self.processor, inputs, images)
        samples = [replace(s, input_size=size) if size is not None else s for s, size in zip(samples, sizes)]
        inputs = {k: v.to(self.dist.device) if torch.is_tensor(v) else v for k, v in dict(inputs).items()}
        first_row = self.dist.rank * len(messages)
        seeds = [row_seed(self.config.seed, self.step, micro, first_row + i) for i in range(len(messages))]
        self.model.eval()
        with self.dist.generation(self.model):
            rollout = sample(self.unwrapped, self.processor, inputs, self.config.generation, self.eos_ids, seeds=seeds)
        self.model.train()
        return rollout, entry_ids, samples

    def _rewards(self, rollout: Rollout, entry_ids: list[int], samples: list[Sample]) -> tuple[torch.Tensor, dict]:
        """Each completion scored by its own task's parser and rewards (in the reward workers when enabled)."""
        groups = []
        for e, entry in enumerate(self.entries):
            rows = [i for i, x in enumerate(entry_ids) if x == e]
            if rows:
                groups.append((entry, rows, {
                    "task": entry.task, "completions": [rollout.texts[i] for i in rows],
                    "samples": [samples[i] for i in rows], "params": entry.params, "weights": entry.weights,
                }))  # fmt: skip
        if self.reward_pool is not None:
            all_results = self.reward_pool.score_many([call for _, _, call in groups], failures=self._counters)
        else:
            all_results = [score(**call, plugin_rewards=self.registry.rewards, failures=self._counters)
                           for _, _, call in groups]  # fmt: skip
        totals = torch.zeros(len(samples))
        per_task: dict[str, Any] = defaultdict(lambda: defaultdict(list))
        for (entry, rows, _), results in zip(groups, all_results):
            stats = per_task[entry.task.name]
            for i, r in zip(rows, results):
                totals[i] = r.reward
                stats["reward"].append(r.reward)
                stats["parse_rate"].append(float(r.parsed is not None))
                stats["completion_length"].append(float(rollout.lengths[i]))
                if (count := pred_count(r.parsed)) is not None:
                    stats["pred_count"].append(count)
                for name, value in r.rewards.items():
                    stats[name].append(value)
        return totals, per_task

    def _loss(self, rollout: Rollout, advantages: torch.Tensor, mask: torch.Tensor, old: Any, ref: Any,
              num_items: float) -> Any:  # fmt: skip
        """GRPO loss: fused kernels straight from hidden states, or log_softmax log-probs + the reference loss.

        Runs inside the wrapped model's forward (DDP gradient sync, ZeRO-3 parameter gathering)."""
        g, gen = self.config.grpo, self.config.generation
        common = {
            "loss_type": g.loss_type, "epsilon": g.epsilon, "epsilon_high": g.epsilon_high, "beta": g.beta,
            "importance_sampling_level": g.importance_sampling_level,
            "max_completion_length": gen.max_completion_length, "num_items": num_items,
        }  # fmt: skip
        fused = self.config.model.logprobs == "fused"

        def forward() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if fused:
                from vgrpo.kernels import fused_grpo_loss

                hidden, head = completion_hidden(self.unwrapped, self.adapter, rollout)

                def head_loss(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                    out = fused_grpo_loss(h, head.weight, rollout.completion_ids, advantages, mask, old_logps=old,
                                          ref_logps=ref, temperature=gen.temperature,
                                          bias=getattr(head, "bias", None), **common)  # fmt: skip
                    return out.loss, out.kl, out.clip_ratio

                return run_as_forward(head, head_loss, hidden)
            logps = completion_logprobs(self.unwrapped, self.adapter, rollout, temperature=gen.temperature,
                                        impl="naive")  # fmt: skip
            out = grpo_loss(logps, old, advantages, mask, ref_logps=ref, **common)
            return out.loss, out.kl, out.clip_ratio

        loss, kl, clip_ratio = self.dist.forward(self.model, forward)
        return LossOutput(loss=loss, kl=kl.detach(), clip_ratio=clip_ratio.detach())

    def _logps_no_grad(self, model: Any, rollout: Rollout) -> torch.Tensor:
        with torch.no_grad():
            return completion_logprobs(self.dist.unwrap(model), self.adapter, rollout, temperature=self.config.generation.temperature,
                                       impl=self.config.model.logprobs)  # fmt: skip

    def _reference_logps(self, rollout: Rollout) -> torch.Tensor | None:
        if self.config.grpo.beta == 0.0:
            return None
        if self.peft_model is not None:
            with self.peft_model.disable_adapter():  # the base model, as the run started
                return self._logps_no_grad(self.model, rollout)
        return self._logps_no_grad(self.ref_model, rollout)

    def train_step(self) -> list[dict[str, Any]]:
        """Generate one batch, then num_iterations optimizer steps on it; returns their metric rows."""
        g, o = self.config.grpo, self.config.optim
        start = time.perf_counter()
        micro = []
        rank, n_rows = self.dist.rank, o.prompts_per_step * g.num_generations
        generated = []
        for m in range(o.gradient_accumulation_steps):
            rollout, entry_ids, samples = self._rollout(self._draw_prompts(o.prompts_per_step), m)
            rewards, per_task = self._rewards(rollout, entry_ids, samples)
            generated.append((rollout, entry_ids, samples, rewards, per_task, self.dist.gather(rewards)))
        # advantages see the whole generation batch (all micro-batches of all ranks), as TRL's do: groups are
        # contiguous in it, and `scale_rewards: batch` takes the std of all of it
        everyone = torch.cat([x[-1] for x in generated])
        advantages_all = group_advantages(everyone, g.num_generations, g.scale_rewards).split(len(generated[0][-1]))
        for (rollout, entry_ids, samples, rewards, per_task, all_rewards), adv in zip(generated, advantages_all):
            advantages = adv[rank * n_rows : (rank + 1) * n_rows].to(self.dist.device)
            mask = rollout.completion_mask
            if g.mask_truncated_completions:
                mask = mask * (~rollout.truncated).unsqueeze(1).float()
            old = self._logps_no_grad(self.model, rollout) if g.num_iterations > 1 else None
            ref = self._reference_logps(rollout)
            stats = {
                "rewards": all_rewards, "lengths": self.dist.gather(rollout.lengths.float().cpu()),
                "per_task": _merge_task_stats(self.dist.gather_objects(_plain(per_task))),
            }  # fmt: skip
            micro.append((rollout, stats, advantages, mask, old, ref))
            self._write_completions(rollout, entry_ids, samples, rewards)
        # dapo normalises by the tokens of the whole step on all ranks; gradients are then averaged over ranks
        num_items = self.dist.sum(float(sum(m[3].sum() for m in micro))) / self.dist.world
        rows = []
        for _ in range(g.num_iterations):
            rows.append(self._optimize(micro, num_items, start))
            start = time.perf_counter()
            if self.step >= o.max_steps:  # a stop request waits for the batch's last step: resume stays exact
                break
        return rows

    def _optimize(self, micro: list[Any], num_items: float, start: float) -> dict[str, Any]:
        o, g = self.config.optim, self.config.grpo
        ga = len(micro)
        losses, kls, clips = [], [], []
        finite = True
        for i, (rollout, _, advantages, mask, old, ref) in enumerate(micro):
            with self.dist.accumulating(self.model, last=i == ga - 1):
                out = self._loss(rollout, advantages, mask, old, ref, num_items)
                loss = out.loss if g.loss_type == "dapo" else out.loss / ga
                if not self.dist.deepspeed and not self.dist.all_true(bool(torch.isfinite(loss))):
                    finite = False  # every rank skips; DeepSpeed instead drops the step at its overflow check
                    break
                self.dist.backward(self.model, loss, last=i == ga - 1)
            losses.append(float(loss.detach()))
            tokens = float(mask.sum())  # statistics are weighted so they mean the same on any number of processes
            kls.append((float(out.kl) * tokens, tokens))
            per = tokens if g.importance_sampling_level == "token" else float(mask.size(0))
            clips.append((float(out.clip_ratio) * per, per))
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float("nan")
        lr = self.scheduler.get_last_lr()[0]
        if finite:
            grad_norm = self.dist.step(self.model, self.optimizer, self.scheduler, params, o.max_grad_norm)
            finite = math.isfinite(grad_norm) and all(math.isfinite(x) for x in losses)
        else:
            self.dist.drop_gradients(self.model, self.optimizer)
        self.step += 1
        if not finite:
            self._nonfinite += 1
            if self.dist.is_main:
                self._counters["nonfinite_steps"] += 1
            log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step, self._nonfinite)
            if self._nonfinite >= MAX_NONFINITE_STEPS:
                self.save_checkpoint()
                raise TrainingError(
                    f"{self._nonfinite} steps in a row had a non-finite loss or gradient (step {self.step}); a "
                    "checkpoint was saved. Lower optim.lr, set optim.max_grad_norm, or use model.dtype=float32."
                )
            return {"step": self.step, "loss": float("nan"), "skipped": True, **self._counter_fields()}
        self._nonfinite = 0
        loss = self.dist.mean(sum(losses))
        kl = self.dist.sum(sum(x for x, _ in kls)) / max(self.dist.sum(sum(w for _, w in kls)), 1.0)
        clip = self.dist.sum(sum(x for x, _ in clips)) / max(self.dist.sum(sum(w for _, w in clips)), 1.0)
        return self._metrics_row(micro, loss, kl, clip, grad_norm, lr, time.perf_counter() - start)

    def _metrics_row(self, micro: list[Any], loss: float, kl: float, clip: float, grad_norm: float, lr: float,
                     seconds: float) -> dict[str, Any]:  # fmt: skip
        rewards = torch.cat([m[1]["rewards"] for m in micro])
        lengths = torch.cat([m[1]["lengths"] for m in micro])
        row: dict[str, Any] = {
            "step": self.step, "loss": loss, "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "kl": kl, "clip_ratio": clip, "grad_norm": grad_norm, "lr": lr,
            "completion_length": float(lengths.mean()), "step_time_s": seconds,
            "tokens_per_s": float(lengths.sum()) / seconds if seconds > 0 else 0.0,
        }  # fmt: skip
        merged = _merge_task_stats([m[1]["per_task"] for m in micro])
        for task, stats in sorted(merged.items()):
            for key, values in stats.items():
                row[f"tasks/{task}/{key}"] = sum(values) / len(values)
        row.update(self._counter_fields())
        return row

    def _counter_fields(self) -> dict[str, int]:
        """Event counts summed over ranks (each rank counts what it saw)."""
        total: Counter[str] = Counter()
        for part in self.dist.gather_objects(dict(self._counters)):
            total.update(part)
        return {f"counters/{key}": count for key, count in sorted(total.items())}

    def _write_completions(self, rollout: Rollout, entry_ids: list[int], samples: list[Sample],
                           rewards: torch.Tensor) -> None:  # fmt: skip
        every = self.config.logging.completions_every
        if not every or (self.step + 1) % every:
            return
        rows = [{"step": self.step + 1, "task": self.entries[entry_ids[i]].task.name, "id": samples[i].id,
                 "completion": text, "reward": float(rewards[i])} for i, text in enumerate(rollout.texts)]  # fmt: skip
        everyone = self.dist.gather_objects(rows)
        if not self.dist.is_main:
            return
        with self._completions_path.open("a", encoding="utf-8") as f:
            for part in everyone:
                for row in part:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def evaluate(self) -> dict[str, float]:
        """``eval/<task>/<metric>`` of the current policy on the eval splits, in memory (the training RNG is left
        as it was). The ranks share the generation and gather the predictions, so every rank gets the same metrics
        over the whole splits; under ZeRO-3 (each forward a collective) every rank generates every row."""
        shared = self.dist.world > 1 and self.dist.zero_stage != 3
        shard = {"shard": (self.dist.rank, self.dist.world), "gather": self.dist.gather_objects} if shared else {}
        with self.dist.generation(self.model):
            metrics = evaluate(self.unwrapped, self.processor, self.adapter, self.eval_splits, **shard,
                               **eval_settings(self.config))  # fmt: skip
        return flat_metrics(metrics)

    def _guarded_step(self) -> list[dict[str, Any]]:
        """train_step, with an out-of-memory error turned into one that names the knobs to turn."""
        try:
            return self.train_step()
        except torch.OutOfMemoryError as exc:
            raise TrainingError(out_of_memory_message(self.config, exc)) from exc
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                raise TrainingError(out_of_memory_message(self.config, exc)) from exc
            raise

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """checkpoint-<step>/: model (safetensors) + processor, optimizer, scheduler, RNG, sampler, config.

        Collective: every rank calls it. Written to a temporary folder, renamed when complete."""
        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / f".tmp-checkpoint-{self.step}"
        main, dist = self.dist.is_main, self.dist
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        state_dict = None
        if dist.deepspeed:
            state_dict = dist.accelerator.get_state_dict(self.model)  # gathers ZeRO-3 partitions
            self.model.save_checkpoint(str(tmp / DEEPSPEED_DIR), tag="state")  # optimizer + scheduler shards
        if main:
            if self.peft_model is not None:
                state_dict = state_dict if state_dict is not None else self.unwrapped.state_dict()
                self.peft_model.save_pretrained(tmp / ADAPTER_DIR, state_dict={
                    f"base_model.model.{k}": v for k, v in state_dict.items()})  # fmt: skip
                state_dict = merged_lora_state_dict(state_dict, self.config.model.lora.alpha / self.config.model.lora.r)
            self.unwrapped.save_pretrained(tmp, state_dict=state_dict)
        if main:
            self.processor.save_pretrained(tmp)
            state = {
                "step": self.step,
                "optimizer": None if dist.deepspeed else self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "sampler": self.sampler.state_dict(),
                "world_size": dist.world,
                "config": self.config.model_dump(mode="json"),
            }
            torch.save(state, tmp / STATE_FILE)
            (tmp / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        torch.save({"rng": torch.get_rng_state(), "counters": dict(self._counters),
                    "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
                   tmp / f"rank-{dist.rank}.pt")  # fmt: skip
        dist.barrier()
        if main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._prune_checkpoints()
        dist.barrier()
        return final

    def _prune_checkpoints(self) -> None:
        limit = self.config.checkpoint.save_total_limit
        if limit is None:
            return
        found = sorted((int(m.group(1)), p) for p in self.output_dir.glob("checkpoint-*")
                       if (m := CHECKPOINT_RE.match(p.name)))  # fmt: skip
        for _, path in found[:-limit]:
            shutil.rmtree(path, ignore_errors=True)

    def _load_state(self, path: Path) -> None:
        state = torch.load(path / STATE_FILE, weights_only=False, map_location="cpu")
        self.step = int(state["step"])
        saved_world = int(state.get("world_size", 1))
        if self.dist.deepspeed:
            if not (path / DEEPSPEED_DIR).exists():
                raise DataError(f"{path}: no {DEEPSPEED_DIR}/ folder: this checkpoint was not written under "
                                "DeepSpeed; resume it without DeepSpeed, or start a new run (resume=never)")  # fmt: skip
            if saved_world != self.dist.world:
                raise DataError(f"{path}: DeepSpeed partitioned its optimizer state over {saved_world} processes; "
                                f"resume with --num_processes {saved_world} (now {self.dist.world})")  # fmt: skip
            self.model.load_checkpoint(str(path / DEEPSPEED_DIR), tag="state")
        elif state.get("optimizer") is None:
            raise DataError(f"{path}: written under DeepSpeed (optimizer state in {DEEPSPEED_DIR}/); resume it with "
                            "the same accelerate DeepSpeed config")  # fmt: skip
        else:
            self.optimizer.load_state_dict(state["optimizer"])  # moved to the parameters' device
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        ranks = {int(m.group(1)): f for f in path.glob("rank-*.pt") if (m := re.match(r"rank-(\d+)\.pt$", f.name))}
        own = ranks.get(self.dist.rank)
        mine = torch.load(own, weights_only=False) if own is not None else {"rng": state["rng"]}
        torch.set_rng_state(mine["rng"])
        if mine.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
        if self.dist.is_main:  # event counts of every saved rank, whatever the number of processes now
            for f in ranks.values():
                self._counters.update(torch.load(f, weights_only=False).get("counters", {}))
        log.info("resumed from %s at step %d", path, self.step)

    # -- the loop --------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: finishing this step, saving a checkpoint and stopping", signum)
        self._stop_requested = True

    def _stop_agreed(self) -> bool:
        """True when any rank was asked to stop (all ranks then stop after the same step)."""
        return not self.dist.all_true(not self._stop_requested)

    def train(self) -> Path:
        """Run setup (if needed) and train to ``optim.max_steps``; returns the output directory."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if not hasattr(self, "model"):
            self.setup()
        cfg = self.config
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        last_saved = self.step
        try:
            with Progress(TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                          TimeRemainingColumn(), transient=False, disable=not self.dist.is_main) as progress:  # fmt: skip
                bar = progress.add_task("train", total=cfg.optim.max_steps, completed=self.step, info="")
                while self.step < cfg.optim.max_steps and not self._stop_agreed():
                    rows = self._guarded_step()
                    every = cfg.eval.every
                    if every and any(r["step"] % every == 0 or r["step"] == cfg.optim.max_steps for r in rows):
                        rows[-1].update(self.evaluate())  # the policy after this batch's optimizer steps
                    for row in rows:
                        if self.metrics is not None and (row["step"] % cfg.logging.every == 0
                                                         or row["step"] == cfg.optim.max_steps
                                                         or any(k.startswith("eval/") for k in row)):
                            self.metrics.log(row)
                        progress.update(bar, completed=self.step,
                                        info=f"reward {row.get('reward', float('nan')):.3f}")  # fmt: skip
                    if self.step % cfg.checkpoint.every == 0:
                        self.save_checkpoint()
                        last_saved = self.step
            if self.step != last_saved:
                self.save_checkpoint()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.cleanup()
        return self.output_dir

    def cleanup(self) -> None:
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()
        if getattr(self, "reward_pool", None) is not None:
            self.reward_pool.close()
        if getattr(self, "dist", None) is not None:
            self.dist.close()


def pred_count(parsed: Any) -> float | None:
    """How many objects a parsed answer predicts, for answers that are lists of objects (OVD boxes: an empty
    answer is 0); None for any other answer (a REC box is a list of numbers, not of objects)."""
    if isinstance(parsed, list) and all(isinstance(x, dict) for x in parsed):
        return float(len(parsed))
    return None


def merged_lora_state_dict(state_dict: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The state dict of a model with LoRA layers (peft, adapter "default") as the plain model's, with each
    adapter merged into its base weight (W + scaling · B @ A): what a checkpoint's model.safetensors holds, so
    `vgrpo eval` and any Hugging Face loader read a LoRA checkpoint like any other."""
    out = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            prefix = key[: -len(".base_layer.weight")]
            a, b = state_dict[f"{prefix}.lora_A.default.weight"], state_dict[f"{prefix}.lora_B.default.weight"]
            out[f"{prefix}.weight"] = (value.float() + scaling * (b.float() @ a.float())).to(value.dtype)
        else:
            out[key.replace(".base_layer.", ".")] = value
    return out


def _plain(per_task: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    return {task: {key: list(values) for key, values in stats.items()} for task, stats in per_task.items()}


def _merge_task_stats(parts: list[dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """Per-task statistic lists from several ranks or micro-batches, concatenated in order."""
    merged: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for part in parts:
        for task, stats in part.items():
            for key, values in stats.items():
                merged[task][key] += values
    return {task: dict(stats) for task, stats in merged.items()}


