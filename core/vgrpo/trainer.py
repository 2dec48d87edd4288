"""The GRPO training recipe: setup, train, save_checkpoint, cleanup — on one process or many (vgrpo.distributed).

One optimizer step reads top to bottom: mixture sampler → prompts (task.build_prompt, model adapter) → rollout
(G samples per prompt) → task.parse → rewards → advantages → log-probs → loss → optimizer → metrics/checkpoint,
with named data between the stages (:mod:`vgrpo.batch`).

With several processes every rank draws the same global batch of prompts and keeps its own slice (a GRPO group
stays on one rank); completions are sampled from per-row seeds, rewards are gathered before advantages, and the
loss is normalised over the global batch, so a step gives the same result on one process or on many.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vgrpo.advantages import group_advantages
from vgrpo.batch import Generation, MicroBatch
from vgrpo.checkpoint import (
    Checkpointer,
    Resumed,
    TrainingState,
    Weights,
    apply_config_changes,
    check_resume_config,
    read_manifest,
    resume_path,
)
from vgrpo.config import TrainConfig, dump_config
from vgrpo.distributed import Distributed
from vgrpo.env import plugin_summary_lines, version_summary
from vgrpo.errors import Interrupted, TrainingError, VgrpoError
from vgrpo.evaluate import EvalSplit, build_eval_splits, eval_settings, evaluate, flat_metrics
from vgrpo.metrics import MetricsLogger, StepStats, write_completions
from vgrpo.mixture import MixtureEntry, MixtureSampler, build_mixture
from vgrpo.models.adapters import ModelAdapter, adapter_for
from vgrpo.models.loading import load_run_models
from vgrpo.plugins import PluginRegistry, get_registry
from vgrpo.policy import Policy
from vgrpo.prompts import Prompt, draw_prompts, encode_prompts
from vgrpo.reward_pool import RewardPool
from vgrpo.run_dir import RunLock, start_fresh, truncate_jsonl
from vgrpo.rollout import eos_token_ids, row_seed, sample
from vgrpo.scoring import score_rollout

log = logging.getLogger(__name__)

MAX_NONFINITE_STEPS = 3


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
        self.counters: Counter[str] = Counter()
        """Run totals of events (skipped samples, reward failures, non-finite steps), per process."""
        # set by setup()
        self.dist: Distributed | None = None
        self.adapter: ModelAdapter | None = None
        self.entries: list[MixtureEntry] = []
        self.eval_splits: list[EvalSplit] = []
        self.sampler: MixtureSampler | None = None
        self.policy: Policy | None = None
        """The model being trained, its optimizer and schedule, and its reference."""
        self.processor: Any = None
        self.eos_ids: list[int] = []
        self.reward_pool: RewardPool | None = None
        self.metrics: MetricsLogger | None = None
        self.checkpointer: Checkpointer | None = None
        self._completions_path = self.output_dir / "completions.jsonl"
        self.lock = RunLock(self.output_dir)
        """Held from setup to cleanup: one run at a time writes to output_dir."""
        self._is_set_up = False
        self._stop_requested = False
        self._nonfinite = 0
        self._reported: set[str] = set()  # plugin failures already shown on the console
        self.resumed: Resumed | None = None
        """Where setup resumed the run from, if it did."""
        self.interrupted_by: int | None = None
        """The signal that stopped training early (after a checkpoint), if one did."""

    @property
    def model(self) -> Any:
        """The policy as trained (wrapped by DDP or DeepSpeed when several processes run); None before setup."""
        return self.policy.model if self.policy is not None else None

    @property
    def unwrapped(self) -> Any:
        """The plain Hugging Face model being trained; None before setup."""
        return self.policy.unwrapped if self.policy is not None else None

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Everything a run needs before its first step; what was set up is cleaned up when a step of it fails."""
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise

    def _setup(self) -> None:
        cfg, mcfg = self.config, self.config.model
        self.registry.require(cfg.required_plugins)
        self.dist = dist = Distributed()
        if dist.is_main:
            for line in [version_summary(), *plugin_summary_lines(self.registry)]:
                log.info("%s", line)
        self.adapter = adapter_for(self.registry.model_adapters, mcfg.adapter, mcfg.name_or_path)
        self.entries = build_mixture(cfg, self.registry, self.adapter)
        self.eval_splits = build_eval_splits(cfg, self.registry, self.adapter) if cfg.eval.every else []
        self.sampler = MixtureSampler([len(e.samples) for e in self.entries], [t.weight for t in cfg.tasks], cfg.seed)
        torch.manual_seed(cfg.seed)
        self._on_main(self.lock.acquire)  # before anything is written
        resume_from = resume_path(self.output_dir, cfg.checkpoint.resume)
        changes = []
        if resume_from is not None:  # before any model loads: a refused change fails fast
            changes = check_resume_config(resume_from, cfg.model_dump(mode="json"),
                                          allow=cfg.checkpoint.allow_config_change)  # fmt: skip
        else:
            self._on_main(lambda: start_fresh(self.output_dir, resume=cfg.checkpoint.resume,
                                              overwrite=cfg.checkpoint.overwrite))  # fmt: skip
        run_id = (read_manifest(resume_from).get("run_id") if resume_from else None) or uuid.uuid4().hex[:12]
        models = load_run_models(self.adapter, mcfg, seed=cfg.seed, beta=cfg.grpo.beta, dist=dist,
                                 resume_from=resume_from)  # fmt: skip
        self.processor = models.processor
        torch.manual_seed(cfg.seed + dist.rank)  # ranks draw different dropout masks
        optimizer, scheduler = self._setup_optimizer(models.policy)
        o = cfg.optim
        model, optimizer, _ = dist.prepare(
            models.policy, optimizer, scheduler, rows_per_micro_batch=o.prompts_per_step * cfg.grpo.num_generations,
            gradient_accumulation_steps=o.gradient_accumulation_steps, max_grad_norm=o.max_grad_norm,
            bf16=mcfg.dtype == "bfloat16",
        )  # fmt: skip
        reference = dist.prepare_reference(models.reference) if models.reference is not None else None
        self.policy = Policy(cfg, dist, self.adapter, model, optimizer, scheduler, reference=reference,
                             peft_model=models.peft_model)  # fmt: skip
        self.eos_ids = eos_token_ids(self.unwrapped, self.processor)
        workers = cfg.rewards.workers
        self.reward_pool = RewardPool(workers, cfg.rewards.timeout_s) if workers > 0 else None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.checkpointer = Checkpointer(self.output_dir, dist, cfg.checkpoint.save_total_limit, run_id)
        if dist.is_main:
            (self.output_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
            self.metrics = MetricsLogger(self.output_dir, tensorboard=cfg.logging.tensorboard,
                                         wandb=cfg.logging.wandb, config=cfg.model_dump(mode="json"))  # fmt: skip
            log.info("distributed: %s", dist.describe())
        if resume_from is not None:
            state = self.checkpointer.load(resume_from, model=model, optimizer=optimizer, scheduler=scheduler,
                                           sampler=self.sampler)  # fmt: skip
            self.step = state.step
            self.counters.update(state.counters)
            apply_config_changes(changes, optimizer, scheduler)
            self.resumed = Resumed(resume_from, state.step, changes)
            if self.metrics is not None:  # nothing after the resumed step is logged twice
                self.metrics.truncate_after(self.step)
                truncate_jsonl(self._completions_path, self.step)
        self._is_set_up = True

    def _on_main(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main process only; when it fails, every process stops with its error."""
        assert self.dist is not None
        error: VgrpoError | None = None
        if self.dist.is_main:
            try:
                fn()
            except VgrpoError as exc:
                error = exc
        if not self.dist.all_true(error is None):
            raise error or TrainingError("the main process stopped the run at start-up (see its message)")

    def summary(self) -> list[str]:
        """What the run header shows after setup: the model and its adapter, the box convention each task
        uses, and where a resume continues from."""
        assert self.adapter is not None
        mcfg = self.config.model
        lines = [f"model {mcfg.name_or_path}: model adapter {self.adapter.name} "
                 f"(default coords {self.adapter.default_coords})"]  # fmt: skip
        for entry, item in zip(self.entries, self.config.tasks):
            coords = getattr(entry.params, "coords", None)
            if coords is not None:
                how = "set in the config" if "coords" in (item.params or {}) else "the model adapter's convention"
                lines.append(f"task {entry.task.name}: coords={coords} ({how})")
        if self.resumed is not None:
            lines.append(str(self.resumed))
        return lines

    def _setup_optimizer(self, model: Any) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_scheduler

        o = self.config.optim
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.warmup_steps,
                                  num_training_steps=o.max_steps)  # fmt: skip
        return optimizer, scheduler

    # -- one step: prompts → rollout → rewards ---------------------------------------------------------------
    def _draw_prompts(self, n: int) -> list[Prompt]:
        assert self.dist is not None and self.sampler is not None
        return draw_prompts(self.sampler, self.entries, n, self.dist, self.counters)

    def _generate(self, prompts: list[Prompt], micro: int = 0) -> Generation:
        """G completions per prompt, sampled from per-row seeds, then scored."""
        assert self.dist is not None and self.adapter is not None
        g = self.config.grpo.num_generations
        encoded = encode_prompts(self.adapter, self.processor, prompts, self.dist.device, group_size=g,
                                 max_question_tokens=self.config.generation.max_prompt_length, counters=self.counters)  # fmt: skip
        n_rows = len(encoded.samples)
        first_row = self.dist.rank * n_rows
        seeds = [row_seed(self.config.seed, self.step, micro, first_row + i) for i in range(n_rows)]
        self.model.eval()
        with self.dist.generation(self.model):
            rollout = sample(self.unwrapped, self.processor, encoded.inputs, self.config.generation, self.eos_ids,
                             seeds=seeds)  # fmt: skip
        self.model.train()
        entries = [p.entry for p in prompts for _ in range(g)]
        scored = score_rollout(self.entries, entries, rollout.texts, encoded.samples, rollout.lengths.tolist(),
                               plugin_rewards=self.registry.rewards, pool=self.reward_pool, failures=self.counters)  # fmt: skip
        rewards = torch.tensor(scored.rewards, dtype=torch.float32)
        return Generation(rollout, entries, encoded.samples, rewards, self.dist.gather(rewards), scored.stats)

    # -- one step: advantages → log-probs → loss → optimizer -------------------------------------------------
    def _micro_batches(self, generations: list[Generation]) -> list[MicroBatch]:
        """Advantages over the whole generation batch (all micro-batches of all ranks, as TRL's: groups are
        contiguous in it, and ``scale_rewards: batch`` takes the std of all of it), then each micro-batch's mask
        and fixed log-probs."""
        assert self.dist is not None
        g = self.config.grpo
        everyone = torch.cat([gen.all_rewards for gen in generations])
        per_micro = group_advantages(everyone, g.num_generations, g.scale_rewards).split(len(generations[0].all_rewards))
        batches = []
        for gen, adv in zip(generations, per_micro):
            n_rows = len(gen.samples)
            advantages = adv[self.dist.rank * n_rows : (self.dist.rank + 1) * n_rows].to(self.dist.device)
            mask = gen.rollout.completion_mask
            if g.mask_truncated_completions:
                mask = mask * (~gen.rollout.truncated).unsqueeze(1).float()
            old = self.policy.logps(gen.rollout) if g.num_iterations > 1 else None
            batches.append(MicroBatch(gen.rollout, advantages, mask, old, self.policy.reference_logps(gen.rollout)))
            every = self.config.logging.completions_every
            if every and (self.step + 1) % every == 0:
                rows = [{"step": self.step + 1, "task": self.entries[gen.entries[i]].task.name, "id": gen.samples[i].id,
                         "completion": text, "reward": float(gen.rewards[i])}
                        for i, text in enumerate(gen.rollout.texts)]  # fmt: skip
                write_completions(self._completions_path, rows, self.dist)
        return batches

    def train_step(self) -> list[dict[str, Any]]:
        """Generate one batch, then num_iterations optimizer steps on it; returns their metric rows."""
        assert self.dist is not None
        g, o = self.config.grpo, self.config.optim
        start = time.perf_counter()
        generations = [self._generate(self._draw_prompts(o.prompts_per_step), m)
                       for m in range(o.gradient_accumulation_steps)]  # fmt: skip
        batches = self._micro_batches(generations)
        stats = StepStats()
        for gen in generations:
            stats.extend(gen.stats)
        # dapo normalises by the tokens of the whole step on all ranks; gradients are then averaged over ranks
        num_items = self.dist.sum(float(sum(b.mask.sum() for b in batches))) / self.dist.world
        rows = []
        for _ in range(g.num_iterations):
            rows.append(self._optimize(batches, num_items, stats, start))
            start = time.perf_counter()
            if self.step >= o.max_steps:  # a stop request waits for the batch's last step: resume stays exact
                break
        return rows

    def _optimize(self, batches: list[MicroBatch], num_items: float, stats: StepStats, start: float) -> dict[str, Any]:
        """One optimizer step over the micro-batches (gradient accumulation); its metrics row."""
        assert self.dist is not None and self.policy is not None
        result = self.policy.step(batches, num_items)
        self.step += 1
        if not result.finite:
            return self._nonfinite_step()
        self._nonfinite = 0
        reduced = stats.reduce(self.dist, self.counters)
        if self.dist.is_main:
            reduced.report(self._reported, self._plugin_of)
        return {"step": self.step, "loss": result.loss, "kl": result.kl, "clip_ratio": result.clip_ratio,
                "grad_norm": result.grad_norm, "lr": result.lr, **reduced.row(time.perf_counter() - start)}  # fmt: skip

    def _plugin_of(self, task: str) -> str:
        try:
            return "plugin {} {}".format(*self.registry.owner("task", task))
        except KeyError:
            return "plugin unknown"

    def _nonfinite_step(self) -> dict[str, Any]:
        assert self.dist is not None
        self._nonfinite += 1
        if self.dist.is_main:
            self.counters["nonfinite_steps"] += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step, self._nonfinite)
        if self._nonfinite >= MAX_NONFINITE_STEPS:
            self.save_checkpoint()
            raise TrainingError(
                f"{self._nonfinite} steps in a row had a non-finite loss or gradient (step {self.step}); a "
                "checkpoint was saved. Lower optim.lr, set optim.max_grad_norm, or use model.dtype=float32."
            )
        counters = StepStats().reduce(self.dist, self.counters).counters
        return {"step": self.step, "loss": float("nan"), "skipped": True,
                **{f"counters/{k}": v for k, v in sorted(counters.items())}}  # fmt: skip

    # -- evaluation, checkpoints ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """``eval/<task>/<metric>`` of the current policy on the eval splits, in memory (the training RNG is left
        as it was). The ranks share the generation and gather the predictions, so every rank gets the same metrics
        over the whole splits; under ZeRO-3 (each forward a collective) every rank generates every row."""
        assert self.dist is not None and self.adapter is not None
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

    def save_checkpoint(self) -> Path:
        """checkpoint-<step>/ (see :mod:`vgrpo.checkpoint`): weights, processor, optimizer, scheduler, sampler,
        RNG, counters and config. Collective: every rank calls it."""
        assert self.dist is not None and self.checkpointer is not None and self.sampler is not None
        lora, policy = self.config.model.lora, self.policy
        assert policy is not None
        state = TrainingState(
            step=self.step, optimizer=None if self.dist.deepspeed else policy.optimizer.state_dict(),
            scheduler=policy.scheduler.state_dict(), sampler=self.sampler.state_dict(), world_size=self.dist.world,
            config=self.config.model_dump(mode="json"), counters=self.counters,
        )  # fmt: skip
        weights = Weights(policy.model, policy.unwrapped, self.processor, policy.peft_model, lora.alpha / lora.r)
        return self.checkpointer.save(state, weights, dump_config(self.config))

    # -- the loop --------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        """The first SIGINT/SIGTERM finishes the step, checkpoints and stops; a second one stops at once (also a
        reward hanging in this process)."""
        if self._stop_requested:
            log.warning("signal %d again: stopping now, without a checkpoint of this step", signum)
            raise Interrupted(signum, self.step)
        log.warning("signal %d: finishing this step, saving a checkpoint and stopping (again: stop now)", signum)
        self._stop_requested = True
        self.interrupted_by = signum

    def _stop_agreed(self) -> bool:
        """True when any rank was asked to stop (all ranks then stop after the same step)."""
        assert self.dist is not None
        return not self.dist.all_true(not self._stop_requested)

    def train(self) -> Path:
        """Run setup (if needed) and train to ``optim.max_steps``; returns the output directory."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if not self._is_set_up:
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
        """Close the metrics sinks, the reward workers and the process group."""
        if self.metrics is not None:
            self.metrics.close()
        if self.reward_pool is not None:
            self.reward_pool.close()
        self.lock.release()
        if self.dist is not None:
            self.dist.close()
