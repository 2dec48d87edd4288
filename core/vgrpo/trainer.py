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
import time
from dataclasses import replace
from typing import Any

import torch

from vgrpo.advantages import group_advantages
from vgrpo.batch import Generation, MicroBatch
from vgrpo.config import TrainConfig
from vgrpo.errors import DataError
from vgrpo.metrics import StepStats, write_completions
from vgrpo.mismatch import MismatchStats, correction_weights, mismatch_stats
from vgrpo.models.shared_prefix import use_shared_prefix
from vgrpo.plugins import PluginRegistry
from vgrpo.prompts import Prompt, draw_prompts, encode_prompts
from vgrpo.recipe import MAX_NONFINITE_STEPS, Recipe
from vgrpo.reward_pool import RewardPool
from vgrpo.rollout import Rollout, row_seed, sample, visual_token_ids
from vgrpo.scoring import score_rollout

__all__ = ["MAX_NONFINITE_STEPS", "Trainer", "out_of_memory_message"]

log = logging.getLogger(__name__)

#: Why a prompt that leaves the vLLM engine no room for the completion is skipped (:meth:`Trainer._fits_engine`).
TOO_LONG_FOR_ENGINE = "too long for the vLLM engine (generation.vllm.max_model_len)"


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


class Trainer(Recipe):
    """GRPO on a task mixture. ``Trainer(config).train()`` runs the whole thing (set-up, the loop, checkpoints,
    evaluation and cleanup are :class:`~vgrpo.recipe.Recipe`'s, shared with SFT)."""

    label = "GRPO"

    def __init__(self, config: TrainConfig, registry: PluginRegistry | None = None) -> None:
        super().__init__(config, registry)
        self.reward_pool: RewardPool | None = None
        self._completions_path = self.output_dir / "completions.jsonl"
        self._reported: set[str] = set()  # plugin failures already shown on the console
        self.engine: Any = None
        """The vLLM engine of ``generation.backend: vllm`` (:class:`vgrpo.rollout_vllm.VllmEngine`), else None."""
        self._engine_step: int | None = None  # the step whose weights the engine holds
        self._mismatch = MismatchStats()
        self.shared_prefix = False
        """Whether each prompt runs once per group in the log-prob passes (``model.shared_prefix``, resolved)."""

    # -- the recipe's knobs --------------------------------------------------------------------------------
    def reference_beta(self) -> float:
        return self.config.grpo.beta

    def setup(self) -> None:
        if self.config.generation.backend == "vllm":  # before anything loads: the install line, at once
            from vgrpo.rollout_vllm import require_vllm

            require_vllm()
        super().setup()

    def _setup_extra(self) -> None:
        assert self.adapter is not None
        mcfg = self.config.model
        if mcfg.shared_prefix == "auto" and mcfg.gradient_checkpointing:
            log.info(
                "model.shared_prefix auto: off with gradient checkpointing (it drops the prompt's cache)"
            )
        else:
            self.shared_prefix = use_shared_prefix(mcfg.shared_prefix, self.adapter, self.unwrapped)
        workers = self.config.rewards.workers
        self.reward_pool = RewardPool(workers, self.config.rewards.timeout_s) if workers > 0 else None
        if self.config.generation.backend == "vllm":
            from vgrpo.rollout_vllm import VllmEngine

            assert self.dist is not None
            self.engine = VllmEngine(self.config, self.unwrapped, self.processor, device=self.dist.device)
            self.sync_engine()  # at start: a name or shape the engine does not know fails here

    def _close_extra(self) -> None:
        try:
            if self.reward_pool is not None:
                self.reward_pool.close()
        finally:
            if self.engine is not None:
                self.engine.close()
                self.engine = None

    def sync_engine(self) -> None:
        """Give the vLLM engine the policy's current weights (full, LoRA merged), unless it holds them."""
        from vgrpo.rollout_vllm import policy_weights

        assert self.policy is not None
        if self.engine is not None and self._engine_step != self.step:
            self.engine.load_weights(policy_weights(self.policy).items())
            self._engine_step = self.step

    def progress_info(self, row: dict[str, Any]) -> str:
        return f"reward {row.get('reward', float('nan')):.3f}"

    def memory_message(self, exc: BaseException) -> str:
        return out_of_memory_message(self.config, exc)

    def summary(self) -> list[str]:
        """What the run header shows after setup: the model and its adapter, the box convention each task
        uses, and where a resume continues from."""
        assert self.adapter is not None
        mcfg = self.config.model
        lines = [
            f"model {mcfg.name_or_path}: model adapter {self.adapter.name} "
            f"(default coords {self.adapter.default_coords}); shared prefix "
            f"{'on' if self.shared_prefix else 'off'} (model.shared_prefix: {mcfg.shared_prefix})"
        ]
        for entry, item in zip(self.entries, self.config.tasks):
            coords = getattr(entry.params, "coords", None)
            if coords is not None:
                how = (
                    "set in the config"
                    if "coords" in (item.params or {})
                    else "the model adapter's convention"
                )
                lines.append(f"task {entry.task.name}: coords={coords} ({how})")
        if self.resumed is not None:
            lines.append(str(self.resumed))
        return lines

    # -- one step: prompts → rollout → rewards ---------------------------------------------------------------
    def _draw_prompts(self, n: int) -> list[Prompt]:
        assert self.dist is not None and self.sampler is not None
        check = self._fits_engine if self.engine is not None else None
        return draw_prompts(
            self.sampler,
            self.entries,
            n,
            self.dist,
            self.counters,
            check=check,
            check_reason=TOO_LONG_FOR_ENGINE,
        )

    def _fits_engine(self, prompt: Prompt) -> None:
        """A DataError (the sample is skipped and counted) when the prompt leaves the vLLM engine no room for
        ``max_completion_length``."""
        assert self.adapter is not None
        encoded = encode_prompts(
            self.adapter,
            self.processor,
            [prompt],
            max_question_tokens=self.config.generation.max_prompt_length,
        )
        where = f"task {prompt.task.name}, record {prompt.sample.id!r}"
        try:
            self.engine.check_prompt(int(encoded.inputs["attention_mask"].sum()), where)
        except DataError:
            self.counters["prompts_too_long"] += 1
            raise

    def _generate(self, prompts: list[Prompt], micro: int = 0) -> Generation:
        """G completions per prompt, sampled from per-row seeds, then scored."""
        assert self.dist is not None and self.adapter is not None
        g = self.config.grpo.num_generations
        encoded = encode_prompts(
            self.adapter,
            self.processor,
            prompts,
            self.dist.device,
            group_size=g,
            max_question_tokens=self.config.generation.max_prompt_length,
            counters=self.counters,
            share_prefix=self.shared_prefix,
        )
        if self.engine is not None:
            rollout = self._sample_on_engine(prompts, encoded, micro)
        else:
            n_rows = len(encoded.samples)
            first_row = self.dist.rank * n_rows
            seeds = [row_seed(self.config.seed, self.step, micro, first_row + i) for i in range(n_rows)]
            self.model.eval()
            with self.dist.generation(self.model):
                rollout = sample(
                    self.unwrapped,
                    self.processor,
                    encoded.inputs,
                    self.config.generation,
                    self.eos_ids,
                    seeds=seeds,
                    groups=encoded.groups,
                    adapter=self.adapter,
                )
            self.model.train()
        entries = [p.entry for p in prompts for _ in range(g)]
        scored = score_rollout(
            self.entries,
            entries,
            rollout.texts,
            encoded.samples,
            rollout.lengths.tolist(),
            plugin_rewards=self.registry.rewards,
            pool=self.reward_pool,
            failures=self.counters,
        )
        rewards = torch.tensor(scored.rewards, dtype=torch.float32)
        return Generation(rollout, entries, encoded.samples, rewards, self.dist.gather(rewards), scored.stats)

    def _sample_on_engine(self, prompts: list[Prompt], encoded: Any, micro: int) -> Rollout:
        """The vLLM backend: one request per prompt with n = G, seeded by the prompt's place in the global batch;
        the engine gets the policy's weights first if it does not hold them (after an optimizer step, a resume)."""
        from vgrpo.rollout_vllm import build_requests

        assert self.dist is not None
        g = self.config.grpo.num_generations
        first = self.dist.rank * len(prompts)
        seeds = [
            row_seed(self.config.seed, self.step, micro, "prompt", first + i) for i in range(len(prompts))
        ]
        requests = build_requests(self.processor, prompts, encoded, [g] * len(prompts), seeds)
        self.sync_engine()
        try:
            rollout = self.engine.generate(
                requests, encoded.inputs, self.eos_ids, banned_ids=visual_token_ids(self.unwrapped)
            )
            return replace(rollout, groups=encoded.groups)  # the log-prob passes share prompts as with hf
        finally:
            self.engine.sleep()  # with enable_sleep_mode: its memory is training's until the next rollout

    # -- one step: advantages → log-probs → loss → optimizer -------------------------------------------------
    def _micro_batches(self, generations: list[Generation]) -> list[MicroBatch]:
        """Advantages over the whole generation batch (all micro-batches of all ranks, as TRL's: groups are
        contiguous in it, and ``scale_rewards: batch`` takes the std of all of it), then each micro-batch's mask
        and fixed log-probs."""
        assert self.dist is not None
        g = self.config.grpo
        everyone = torch.cat([gen.all_rewards for gen in generations])
        advantages = group_advantages(everyone, g.num_generations, g.scale_rewards)
        per_micro = advantages.split(len(generations[0].all_rewards))
        batches = []
        for gen, adv in zip(generations, per_micro):
            n_rows = len(gen.samples)
            advantages = adv[self.dist.rank * n_rows : (self.dist.rank + 1) * n_rows].to(self.dist.device)
            mask = gen.rollout.completion_mask
            if g.mask_truncated_completions:
                mask = mask * (~gen.rollout.truncated).unsqueeze(1).float()
            old = self.policy.logps(gen.rollout) if g.num_iterations > 1 else None
            weights = None
            sampled = gen.rollout.sampler_logps
            if (
                sampled is not None
            ):  # another engine sampled: its mismatch with the trainer, and the correction
                trainer = old if old is not None else self.policy.logps(gen.rollout)
                self._mismatch.add(mismatch_stats(trainer, sampled, gen.rollout.completion_mask))
                weights = correction_weights(
                    trainer, sampled, mask, g.rollout_correction, g.rollout_correction_cap
                )
            batches.append(
                MicroBatch(
                    gen.rollout,
                    advantages,
                    mask,
                    old,
                    self.policy.reference_logps(gen.rollout),
                    token_weights=weights,
                )
            )
            every = self.config.logging.completions_every
            if every and (self.step + 1) % every == 0:
                rows = [
                    {
                        "step": self.step + 1,
                        "task": self.entries[gen.entries[i]].task.name,
                        "id": gen.samples[i].id,
                        "completion": text,
                        "reward": float(gen.rewards[i]),
                    }
                    for i, text in enumerate(gen.rollout.texts)
                ]
                write_completions(self._completions_path, rows, self.dist)
        return batches

    def train_step(self) -> list[dict[str, Any]]:
        """Generate one batch, then num_iterations optimizer steps on it; returns their metric rows."""
        assert self.dist is not None
        g, o = self.config.grpo, self.config.optim
        start = time.perf_counter()
        generations = [
            self._generate(self._draw_prompts(o.prompts_per_step), m)
            for m in range(o.gradient_accumulation_steps)
        ]
        batches = self._micro_batches(generations)
        stats = StepStats()
        for gen in generations:
            stats.extend(gen.stats)
        # dapo normalises by the tokens of the whole step on all ranks; gradients are then averaged over ranks
        num_items = self.dist.sum(float(sum(b.mask.sum() for b in batches))) / self.dist.world
        mismatch = self._mismatch.row(self.dist) if self.engine is not None else {}
        self._mismatch = MismatchStats()
        rows = []
        for _ in range(g.num_iterations):
            rows.append({**self._optimize(batches, num_items, stats, start), **mismatch})
            start = time.perf_counter()
            if self.step >= o.max_steps:  # a stop request waits for the batch's last step: resume stays exact
                break
        return rows

    def _optimize(
        self, batches: list[MicroBatch], num_items: float, stats: StepStats, start: float
    ) -> dict[str, Any]:
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
        return {
            "step": self.step,
            "loss": result.loss,
            "kl": result.kl,
            "clip_ratio": result.clip_ratio,
            "grad_norm": result.grad_norm,
            "lr": result.lr,
            **reduced.row(time.perf_counter() - start),
        }

    def _plugin_of(self, task: str) -> str:
        try:
            return "plugin {} {}".format(*self.registry.owner("task", task))
        except KeyError:
            return "plugin unknown"
