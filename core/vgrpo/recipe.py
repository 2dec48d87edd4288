"""What the training recipes share: GRPO (:class:`vgrpo.trainer.Trainer`) and SFT
(:class:`vgrpo.sft.SFTTrainer`).

A recipe is set up once (``setup``), trains step after step (``train``: its ``train_step`` returns the metric
rows of its optimizer steps), saves checkpoints (``save_checkpoint``) and releases what it holds
(``cleanup``). This base class owns what is the same for both, written once: the run folder (its lock, a new
run or a resume, :mod:`vgrpo.run_dir`), the task mixture and its sampler, the models (loading, freezing, LoRA:
:mod:`vgrpo.models.loading`) wrapped for the process group, the AdamW optimizer and its schedule, metrics,
checkpoints with an exact resume (:mod:`vgrpo.checkpoint`), evaluation, signals, and the loop with its
progress bar and the run's plot at the end.
"""

from __future__ import annotations

import logging
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from vgrpo.checkpoint import (
    EXACTNESS_KEYS,
    SCHEDULE_KEYS,
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
from vgrpo.metrics import MetricsLogger, StepStats
from vgrpo.mixture import MixtureEntry, MixtureSampler, build_mixture
from vgrpo.models.adapters import ModelAdapter, adapter_for
from vgrpo.models.loading import load_run_models
from vgrpo.plugins import PluginRegistry, get_registry
from vgrpo.policy import Policy, build_optimizer
from vgrpo.rollout import eos_token_ids
from vgrpo.run_dir import RunLock, set_aside_for_resume, start_fresh, truncate_jsonl

log = logging.getLogger(__name__)

MAX_NONFINITE_STEPS = 3


class Recipe:
    """The shared part of a training recipe; a subclass defines a step (:meth:`train_step`) and its knobs."""

    label: ClassVar[str] = "train"
    """What the progress bar calls the run."""
    exactness_keys: ClassVar[tuple[str, ...]] = EXACTNESS_KEYS
    """Config keys whose change breaks an exact resume (refused unless checkpoint.allow_config_change)."""
    schedule_keys: ClassVar[tuple[str, ...]] = SCHEDULE_KEYS
    """Config keys of the learning rate and its schedule, the rate first (applied on a resume)."""

    def __init__(
        self,
        config: TrainConfig,
        registry: PluginRegistry | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or get_registry()
        self.output_dir = Path(output_dir if output_dir is not None else config.output_dir)
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
        self.metrics: MetricsLogger | None = None
        self.checkpointer: Checkpointer | None = None
        self.lock = RunLock(self.output_dir)
        """Held from setup to cleanup: one run at a time writes to output_dir."""
        self._is_set_up = False
        self._stop_requested = False
        self._nonfinite = 0
        self.resumed: Resumed | None = None
        """Where setup resumed the run from, if it did."""
        self.interrupted_by: int | None = None
        """The signal that stopped training early (after a checkpoint), if one did."""
        self.plot_path: Path | None = None
        """The run's plot, once ``train`` has written it."""

    # -- what a recipe defines -------------------------------------------------------------------------------
    @property
    def max_steps(self) -> int:
        """The optimizer steps of the whole run."""
        return self.config.optim.max_steps

    def schedule(self) -> dict[str, Any]:
        """``lr``, ``scheduler`` and ``warmup_steps`` of :func:`build_optimizer`."""
        o = self.config.optim
        return {"lr": o.lr, "scheduler": o.lr_scheduler, "warmup_steps": o.warmup_steps}

    def micro_batch(self) -> tuple[int, int]:
        """(rows per micro-batch, micro-batches per optimizer step) per process: DeepSpeed's batch sizes."""
        o = self.config.optim
        return o.prompts_per_step * self.config.grpo.num_generations, o.gradient_accumulation_steps

    def reference_beta(self) -> float:
        """The KL coefficient: non-zero loads a frozen reference model."""
        return 0.0

    def build_entries(self) -> list[MixtureEntry]:
        """The task mixture the sampler draws from."""
        return build_mixture(self.config, self.registry, self.adapter)

    def train_step(self) -> list[dict[str, Any]]:
        """One batch: its optimizer steps and their metric rows (each with ``step``)."""
        raise NotImplementedError

    def progress_info(self, row: dict[str, Any]) -> str:
        """What the progress bar shows after a row."""
        return f"loss {row.get('loss', float('nan')):.3f}"

    def memory_message(self, exc: BaseException) -> str:
        """What to lower when a step runs out of memory."""
        return f"out of memory at a training step ({type(exc).__name__}); lower the batch size or the lengths"

    @property
    def model(self) -> Any:
        """The policy as trained (wrapped by DDP or DeepSpeed with several processes); None before setup."""
        return self.policy.model if self.policy is not None else None

    @property
    def unwrapped(self) -> Any:
        """The plain Hugging Face model being trained; None before setup."""
        return self.policy.unwrapped if self.policy is not None else None

    # -- setup -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Everything a run needs before its first step; what was set up is cleaned up when a part fails."""
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
        self.entries = self.build_entries()
        self.eval_splits = build_eval_splits(cfg, self.registry, self.adapter) if cfg.eval.every else []
        sizes, weights = [len(e.samples) for e in self.entries], [t.weight for t in cfg.tasks]
        self.sampler = MixtureSampler(sizes, weights, cfg.seed)
        torch.manual_seed(cfg.seed)
        resume_from, changes, run_id = self._setup_run_dir()
        models = load_run_models(
            self.adapter, mcfg, seed=cfg.seed, beta=self.reference_beta(), dist=dist, resume_from=resume_from
        )
        self.processor = models.processor
        torch.manual_seed(cfg.seed + dist.rank)  # ranks draw different dropout masks
        optimizer, scheduler = build_optimizer(models.policy, cfg, steps=self.max_steps, **self.schedule())
        rows, accumulation = self.micro_batch()
        batch = {"rows_per_micro_batch": rows, "gradient_accumulation_steps": accumulation}
        clip, bf16 = cfg.optim.max_grad_norm, mcfg.dtype == "bfloat16"
        model, optimizer, _ = dist.prepare(
            models.policy, optimizer, scheduler, **batch, max_grad_norm=clip, bf16=bf16
        )
        reference = dist.prepare_reference(models.reference) if models.reference is not None else None
        peft = models.peft_model
        self.policy = Policy(
            cfg, dist, self.adapter, model, optimizer, scheduler, reference=reference, peft_model=peft
        )
        self.eos_ids = eos_token_ids(self.unwrapped, self.processor)
        self._setup_extra()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.checkpointer = Checkpointer(self.output_dir, dist, cfg.checkpoint.save_total_limit, run_id)
        if dist.is_main:
            (self.output_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
            sinks = {"tensorboard": cfg.logging.tensorboard, "wandb": cfg.logging.wandb}
            self.metrics = MetricsLogger(self.output_dir, **sinks, config=cfg.model_dump(mode="json"))
            log.info("distributed: %s", dist.describe())
        if resume_from is not None:
            self._restore(resume_from, changes)
        self._is_set_up = True

    def _setup_extra(self) -> None:
        """What a recipe sets up beyond the shared part, before the outputs are opened."""

    def _setup_run_dir(self) -> tuple[Path | None, list[Any], str]:
        """Take the run lock, then (checkpoint to resume, its config changes, run id): a refused config change
        fails before any model loads; a new run moves an earlier run's files aside (:mod:`vgrpo.run_dir`)."""
        cfg = self.config
        self._on_main(self.lock.acquire)  # before anything is written
        resume_from = resume_path(self.output_dir, cfg.checkpoint.resume)
        changes = []
        if resume_from is not None:
            now, allow = cfg.model_dump(mode="json"), cfg.checkpoint.allow_config_change
            changes = check_resume_config(resume_from, now, allow=allow, exactness=self.exactness_keys)
            self._on_main(lambda: set_aside_for_resume(self.output_dir, resume_from))
        else:
            resume, overwrite = cfg.checkpoint.resume, cfg.checkpoint.overwrite
            self._on_main(lambda: start_fresh(self.output_dir, resume=resume, overwrite=overwrite))
        run_id = (read_manifest(resume_from).get("run_id") if resume_from else None) or uuid.uuid4().hex[:12]
        return resume_from, changes, run_id

    def _restore(self, resume_from: Path, changes: list[Any]) -> None:
        """Optimizer, scheduler, sampler, RNG and counters from a checkpoint; metrics cut back to its step."""
        assert self.checkpointer is not None and self.policy is not None
        policy = self.policy
        parts = {"model": policy.model, "optimizer": policy.optimizer, "scheduler": policy.scheduler}
        state = self.checkpointer.load(resume_from, **parts, sampler=self.sampler)
        self.step = state.step
        self.counters.update(state.counters)
        apply_config_changes(changes, policy.optimizer, policy.scheduler, self.schedule_keys)
        self.resumed = Resumed(resume_from, state.step, changes)
        if self.metrics is not None:  # nothing after the resumed step is logged twice
            self.metrics.truncate_after(self.step)
            truncate_jsonl(self.output_dir / "completions.jsonl", self.step)

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

    # -- steps that fail -------------------------------------------------------------------------------------
    def _guarded_step(self) -> list[dict[str, Any]]:
        """train_step, with an out-of-memory error turned into one that names the knobs to turn."""
        try:
            return self.train_step()
        except torch.OutOfMemoryError as exc:
            raise TrainingError(self.memory_message(exc)) from exc
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                raise TrainingError(self.memory_message(exc)) from exc
            raise

    def _nonfinite_step(self, knobs: str = "optim.lr") -> dict[str, Any]:
        """The row of a skipped step; three in a row save a checkpoint and stop the run."""
        assert self.dist is not None
        self._nonfinite += 1
        if self.dist.is_main:
            self.counters["nonfinite_steps"] += 1
        log.warning(
            "step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step, self._nonfinite
        )
        if self._nonfinite >= MAX_NONFINITE_STEPS:
            self.save_checkpoint()
            raise TrainingError(
                f"{self._nonfinite} steps in a row had a non-finite loss or gradient (step {self.step}); a "
                f"checkpoint was saved. Lower {knobs}, set optim.max_grad_norm, or use model.dtype=float32."
            )
        counters = StepStats().reduce(self.dist, self.counters).counters
        return {
            "step": self.step,
            "loss": float("nan"),
            "skipped": True,
            **{f"counters/{k}": v for k, v in sorted(counters.items())},
        }

    # -- evaluation, checkpoints ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """``eval/<task>/<metric>`` of the current policy on the eval splits, in memory (the training RNG is
        left as it was). The ranks share the generation and gather the predictions, so every rank gets the
        same metrics over the whole splits; under ZeRO-3 (each forward a collective) every rank generates
        every row."""
        assert self.dist is not None and self.adapter is not None
        shared = self.dist.world > 1 and self.dist.zero_stage != 3
        shard = (
            {"shard": (self.dist.rank, self.dist.world), "gather": self.dist.gather_objects} if shared else {}
        )
        with self.dist.generation(self.model):
            metrics = evaluate(
                self.unwrapped,
                self.processor,
                self.adapter,
                self.eval_splits,
                **shard,
                **eval_settings(self.config),
            )
        return flat_metrics(metrics)

    def save_checkpoint(self) -> Path:
        """checkpoint-<step>/ (see :mod:`vgrpo.checkpoint`): weights, processor, optimizer, scheduler,
        sampler, RNG, counters and config. Collective: every rank calls it."""
        assert self.dist is not None and self.checkpointer is not None and self.sampler is not None
        lora, policy = self.config.model.lora, self.policy
        assert policy is not None
        state = TrainingState(
            step=self.step,
            optimizer=None if self.dist.deepspeed else policy.optimizer.state_dict(),
            scheduler=policy.scheduler.state_dict(),
            sampler=self.sampler.state_dict(),
            world_size=self.dist.world,
            config=self.config.model_dump(mode="json"),
            counters=self.counters,
        )
        weights = Weights(
            policy.model, policy.unwrapped, self.processor, policy.peft_model, lora.alpha / lora.r
        )
        return self.checkpointer.save(state, weights, dump_config(self.config))

    # -- the loop --------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        """The first SIGINT/SIGTERM finishes the step, checkpoints and stops; a second one stops at once (also
        a reward hanging in this process)."""
        if self._stop_requested:
            log.warning("signal %d again: stopping now, without a checkpoint of this step", signum)
            raise Interrupted(signum, self.step)
        log.warning(
            "signal %d: finishing this step, saving a checkpoint and stopping (again: stop now)", signum
        )
        self._stop_requested = True
        self.interrupted_by = signum

    def _stop_agreed(self) -> bool:
        """True when any rank was asked to stop (all ranks then stop after the same step)."""
        assert self.dist is not None
        return not self.dist.all_true(not self._stop_requested)

    def train(self) -> Path:
        """Run setup (if needed) and train to :attr:`max_steps`; returns the output directory. The main
        process writes the run's plot (``plot.png``, :mod:`vgrpo.plot`) at the end."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if not self._is_set_up:
            self.setup()
        assert self.dist is not None
        cfg, last = self.config, self.max_steps
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        last_saved = self.step
        try:
            with Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
                disable=not self.dist.is_main,
            ) as progress:
                bar = progress.add_task("train", total=last, completed=self.step, info="")
                while self.step < last and not self._stop_agreed():
                    rows = self._guarded_step()
                    every = cfg.eval.every
                    if every and any(r["step"] % every == 0 or r["step"] == last for r in rows):
                        rows[-1].update(self.evaluate())  # the policy after this batch's optimizer steps
                    for row in rows:
                        if self.metrics is not None and self._logged(row):
                            self.metrics.log(row)
                        progress.update(bar, completed=self.step, info=self.progress_info(row))
                    if self.step % cfg.checkpoint.every == 0:
                        self.save_checkpoint()
                        last_saved = self.step
            if self.step != last_saved:
                self.save_checkpoint()
            if self.dist.is_main:
                self.plot_path = self._plot()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.cleanup()
        return self.output_dir

    def _logged(self, row: dict[str, Any]) -> bool:
        """Whether a row goes to metrics.jsonl: every ``logging.every`` steps, the last, evaluations."""
        step = row["step"]
        return (
            step % self.config.logging.every == 0
            or step == self.max_steps
            or any(k.startswith("eval/") for k in row)
        )

    def _plot(self) -> Path | None:
        """The run's plot (``plot.png``); a warning instead when it cannot be drawn (never fails the run)."""
        from vgrpo.plot import plot_run

        try:
            return plot_run(self.output_dir)
        except Exception as exc:  # noqa: BLE001 - a plot is a convenience: training already succeeded
            log.warning("could not write %s/plot.png: %s: %s", self.output_dir, type(exc).__name__, exc)
            return None

    def _close_extra(self) -> None:
        """What a recipe closes beyond the shared part."""

    def cleanup(self) -> None:
        """Close the metrics sinks, the recipe's own resources and the process group; release the run lock."""
        try:
            if self.metrics is not None:
                self.metrics.close()
            self._close_extra()
        finally:
            self.lock.release()
            if self.dist is not None:
                self.dist.close()
