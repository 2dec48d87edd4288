"""One GRPO optimizer step, vgrpo (shared prefix, and with each prompt repeated G times) against TRL's
GRPOTrainer: wall time per step, time in the training passes, and peak memory.

``vgrpo`` runs with ``model.shared_prefix: on`` (each prompt and its image once per group in generation and in
every log-prob pass), ``vgrpo-repeated`` with ``off`` (each prompt repeated G times, as TRL does); ``--image-tokens
N`` sets the images' size so that each becomes N visual tokens (``min_pixels = max_pixels = N·28²`` in all three;
the synthetic scenes are square). The training passes (``train_s``) are the old-policy and reference log-prob
passes and the loss forward and backward with the optimizer step: what the shared prefix saves (P + G·C token
positions per group instead of (P + C)·G); generation (``generate_s``) shares only the prefill.

Both run the same workload one after the other, each in its own process so each peak is its own: the tiny
Qwen2.5-VL (``build_tiny(seed)``, saved once with :func:`~vgrpo.models.tiny.save_tiny` and loaded from that folder
by both), the same synthetic records of one task (``count`` by default: image + question; ``math`` is the
text-only variant), the same reward (the task's rewards through :func:`vgrpo.score`, wrapped for TRL as
``(prompts, completions, **kwargs) -> list[float]``), and the same GRPO settings: G completions for each of P
prompts per optimizer step, ``max_completion_length``, temperature, lr (constant), ``loss_type``, ``beta``,
fp32, no vLLM, no gradient checkpointing (TRL's default is on; ``--gradient-checkpointing`` turns it on in
both), gradient accumulation 1, vision tower frozen (vgrpo's default, applied to TRL's model by hand), rewards
computed in the training process (vgrpo ``rewards.workers=0``), the four visual placeholder tokens suppressed
in generation (vgrpo's rule; TRL suppresses only the image token by default).

Fixed-length generation: a random model ends a completion early at random, so both set ``min_new_tokens =
max_completion_length`` (EOS is suppressed until then) and every step generates and trains on exactly
P·G·L completion tokens in both (``--free-length`` turns it off). TRL's processor: ``AutoProcessor`` on the
saved tiny folder (a stock image-only processor class, no torchvision needed), with ``padding_side="left"``,
as TRL sets when it loads a processor itself (right padding misaligns the processor's ``mm_token_type_ids``
with TRL's left-padded prompts and fails in ``get_rope_index``).

Time per step: vgrpo, the wall time of :meth:`Trainer.train_step` (sampling prompts and opening images, rollout,
rewards, advantages, loss, backward, optimizer); TRL, ``on_step_begin`` → ``on_step_end`` of a
``TrainerCallback`` (generation and scoring happen inside, in ``_prepare_inputs``; fetching the batch from the
dataset and logging happen outside and are in ``interval_s``, end to end). Median of ``--steps`` steps after
``--warmup``. Peak memory: the resident-set high-water mark (``VmHWM``) of the process over the timed steps,
reset when they start (:class:`vgrpo.bench.logprobs.PeakMemory`); ``peak_rss_mib`` is the absolute high-water
mark (model, optimizer state, libraries and the step), ``step_peak_mib`` the part above the RSS at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

IMPLS = ("vgrpo", "vgrpo-repeated", "trl")
#: Token positions per group are P + G·C shared and (P + C)·G repeated; the targets of the shared prefix against
#: the repeated path on CPU at N = 256, C = 32, G = 8: training passes 3x faster, the whole step 2x, memory no higher.
SHARED_TRAIN_TARGET, SHARED_STEP_TARGET, SHARED_MEMORY_TARGET = 3.0, 2.0, 1.0
TASKS = ("count", "math")
MIB = 2**20
RECORDS = 64  # synthetic records of the task (both sample from the same file)
#: vgrpo's targets against TRL: time per optimizer step and peak memory.
TIME_TARGET, MEMORY_TARGET = 0.8, 1.0


# ---------------------------------------------------------------------------------------------------------------
# Shared inputs


def prepare(workdir: str | Path, seed: int, task: str) -> tuple[Path, Path]:
    """(model folder, train.jsonl) in ``workdir``: the tiny model saved once and the task's synthetic records."""
    from vgrpo.models.tiny import save_tiny
    from vgrpo.synth import synthesize

    workdir = Path(workdir)
    model_dir = workdir / "model"
    if not (model_dir / "config.json").exists():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        save_tiny(model_dir, seed=seed)
    paths = synthesize(workdir / "data", n_per_task=RECORDS, n_val=0, tasks=[task], seed=seed, reuse=True)
    return model_dir, paths[task]


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "task": args.task,
        "num_generations": args.num_generations,
        "prompts_per_step": args.prompts,
        "completions_per_step": args.num_generations * args.prompts,
        "max_completion_length": args.max_new_tokens,
        "fixed_length": not args.free_length,
        "temperature": args.temperature,
        "lr": args.lr,
        "loss_type": args.loss_type,
        "beta": args.beta,
        "gradient_checkpointing": args.gradient_checkpointing,
        "image_tokens": args.image_tokens,
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
    }


def _pixels(args: argparse.Namespace) -> dict[str, int]:
    """Processor image bounds for ``--image-tokens`` (one visual token per 28 × 28 pixels); none without it."""
    if not args.image_tokens:
        return {}
    return {"min_pixels": args.image_tokens * 28 * 28, "max_pixels": args.image_tokens * 28 * 28}


def _summary(
    impl: str,
    times: list[float],
    intervals: list[float],
    lengths: list[float],
    mem: Any,
    peak: int,
    **extra: Any,
) -> dict[str, Any]:
    import torch

    return {
        **extra,
        "impl": impl,
        "step_s": round(statistics.median(times), 4),
        "mean_s": round(statistics.fmean(times), 4),
        "interval_s": round(statistics.median(intervals or times), 4),
        "times": [round(t, 4) for t in times],
        "peak_rss_mib": round((mem.base + peak) / MIB, 1),
        "step_peak_mib": round(peak / MIB, 1),
        "baseline_rss_mib": round(mem.base / MIB, 1),
        "completion_length": round(statistics.fmean(lengths), 2) if lengths else None,
        "memory_method": mem.method,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------
# vgrpo


def measure_vgrpo(
    args: argparse.Namespace, model_dir: Path, data: Path, output_dir: Path, *, shared: bool = True
) -> dict[str, Any]:
    """Time ``Trainer.train_step`` after warm-up, in this process, and within it the generation and the training
    passes (``shared``: ``model.shared_prefix`` on, else off)."""
    from vgrpo.bench.logprobs import PeakMemory
    from vgrpo.config import TrainConfig
    from vgrpo.trainer import Trainer

    config = TrainConfig.model_validate(
        {
            "output_dir": str(output_dir),
            "seed": args.seed,
            "model": {
                "name_or_path": str(model_dir),
                "dtype": "float32",
                "attn_implementation": "sdpa",
                "freeze_vision": True,
                "gradient_checkpointing": args.gradient_checkpointing,
                "shared_prefix": "on" if shared else "off",
                **_pixels(args),
            },
            "tasks": [{"task": args.task, "data": [str(data)]}],
            "grpo": {"num_generations": args.num_generations, "beta": args.beta, "loss_type": args.loss_type},
            "generation": {"max_completion_length": args.max_new_tokens, "temperature": args.temperature},
            "optim": {
                "lr": args.lr,
                "lr_scheduler": "constant",
                "prompts_per_step": args.prompts,
                "gradient_accumulation_steps": 1,
                "max_steps": args.warmup + args.steps,
            },
            "rewards": {"workers": 0},
            "logging": {"tensorboard": False, "completions_every": 0},
            "checkpoint": {"resume": "never", "every": 10**6},
        }
    )
    trainer = Trainer(config)
    trainer.setup()
    if not args.free_length:
        trainer.model.generation_config.min_new_tokens = args.max_new_tokens  # EOS suppressed until then
    phases = _PhaseTimer()
    trainer._generate = phases.wrap("generate", trainer._generate)  # type: ignore[method-assign]
    policy = trainer.policy
    for name in ("logps", "reference_logps", "step"):
        setattr(policy, name, phases.wrap("train", getattr(policy, name)))
    try:
        for _ in range(args.warmup):
            trainer.train_step()
        mem = PeakMemory("cpu")
        mem.start()
        times, lengths, generate_s, train_s, prompt_len = [], [], [], [], []
        for _ in range(args.steps):
            phases.reset()
            start = time.perf_counter()
            rows = trainer.train_step()
            times.append(time.perf_counter() - start)
            generate_s.append(phases.total["generate"])
            train_s.append(phases.total["train"])
            prompt_len.append(phases.prompt_tokens)
            lengths += [r["completion_length"] for r in rows if "completion_length" in r]
        peak = mem.peak()
        mem.stop()
    finally:
        trainer.cleanup()
    extra = {
        "generate_s": round(statistics.median(generate_s), 4),
        "train_s": round(statistics.median(train_s), 4),
        "prompt_tokens": round(statistics.fmean(prompt_len), 1),
        "generate_times": [round(t, 4) for t in generate_s],
        "train_times": [round(t, 4) for t in train_s],
    }
    return _summary("vgrpo" if shared else "vgrpo-repeated", times, times, lengths, mem, peak, **extra)


class _PhaseTimer:
    """Wall time spent in wrapped calls, per phase, since the last :meth:`reset`; and the padded prompt length
    of the last generation."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.prompt_tokens = 0
        self.reset()

    def reset(self) -> None:
        self.total = {"generate": 0.0, "train": 0.0}

    def wrap(self, phase: str, fn: Any) -> Any:
        def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                out = fn(*a, **kw)
            finally:
                self.total[phase] += time.perf_counter() - start
            if phase == "generate":
                self.prompt_tokens = int(out.rollout.inputs["input_ids"].size(1))
            return out

        return timed


# ---------------------------------------------------------------------------------------------------------------
# TRL


def _trl_dataset(task: Any, params: Any, samples: list[Any]) -> Any:
    """The records as TRL wants them: chat prompts with image placeholders, an ``images`` column, a row index."""
    from datasets import Dataset
    from PIL import Image

    from vgrpo.integrations.trl import _placeholder_prompt

    rows: dict[str, list[Any]] = {"prompt": [], "sample_index": []}
    has_images = any(s.images for s in samples)
    if has_images:
        rows["images"] = []
    for i, s in enumerate(samples):  # the very messages vgrpo renders; images become placeholders
        rows["prompt"].append(_placeholder_prompt(task.build_prompt(s, params)))
        rows["sample_index"].append(i)
        if has_images:
            rows["images"].append([Image.open(p).convert("RGB") for p in s.images])
    return Dataset.from_dict(rows)


def _trl_reward(task: Any, params: Any, samples: list[Any]) -> Any:
    from vgrpo.scoring import score

    def reward(
        prompts: list[Any], completions: list[Any], sample_index: list[int], **kwargs: Any
    ) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [r.reward for r in score(task, texts, [samples[i] for i in sample_index], params)]

    reward.__name__ = f"{task.name}_reward"
    return reward


def trl_trainer(
    args: argparse.Namespace,
    model_dir: Path,
    output_dir: Path,
    reward_funcs: list[Any],
    train_dataset: Any,
    *,
    reward_weights: list[float] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """TRL's GRPOTrainer on the saved tiny model, set up as the benchmark runs it (settings from ``args``, the
    benchmark's arguments; ``warmup + steps`` optimizer steps); the TRL interop test builds on it too."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    processor = AutoProcessor.from_pretrained(model_dir, **_pixels(args))  # what a TRL user writes
    return trl_grpo_trainer(
        args,
        model,
        processor,
        output_dir,
        reward_funcs,
        train_dataset,
        reward_weights=reward_weights,
        callbacks=callbacks,
    )


def trl_grpo_trainer(
    args: argparse.Namespace,
    model: Any,
    processor: Any,
    output_dir: Path,
    reward_funcs: list[Any],
    train_dataset: Any,
    *,
    reward_weights: list[float] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """TRL's GRPOTrainer on ``model`` (any device and dtype: bf16 mixed precision for a bf16 model, the CPU for a
    model there) with vgrpo's frozen vision tower and suppressed visual placeholders, settings from ``args`` (the
    benchmark's arguments; ``warmup + steps`` optimizer steps); ``python -m vgrpo.bench gpu`` builds on it too."""
    import torch
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from vgrpo.models.adapters import ModelAdapter
    from vgrpo.rollout import visual_token_ids

    for _, param in ModelAdapter().vision_parameters(model):  # vgrpo's freeze_vision rule
        param.requires_grad_(False)
    processor.tokenizer.padding_side = (
        "left"  # as TRL sets when it loads the processor itself (prompts left-padded)
    )
    generation_kwargs: dict[str, Any] = {"suppress_tokens": visual_token_ids(model)}
    if not args.free_length:
        generation_kwargs["min_new_tokens"] = args.max_new_tokens
    config = GRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.num_generations * args.prompts,
        num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        loss_type=args.loss_type,
        beta=args.beta,
        bf16=model.dtype == torch.bfloat16,
        fp16=False,
        gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=model.device.type == "cpu",
        use_vllm=False,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        generation_kwargs=generation_kwargs,
        reward_weights=reward_weights,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=train_dataset,
        processing_class=processor,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # logging_steps=1 only to read the logs; do not print them
    return trainer


def measure_trl(args: argparse.Namespace, model_dir: Path, data: Path, output_dir: Path) -> dict[str, Any]:
    """Time TRL's GRPOTrainer optimizer steps after warm-up (callback-timed), in this process."""
    from transformers import TrainerCallback

    from vgrpo.bench.logprobs import PeakMemory
    from vgrpo.data import load_jsonl
    from vgrpo.plugins import get_registry

    task = get_registry().task(args.task)
    params = task.params({})
    samples = load_jsonl(data, task, read_sizes=True)
    warmup, total = args.warmup, args.warmup + args.steps
    mem = PeakMemory("cpu")

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.intervals: list[float] = []
            self.last_end: float | None = None
            self.peak = 0

        def on_step_begin(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == warmup:
                mem.start()
            self.begin = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            end = time.perf_counter()
            if state.global_step > warmup:
                self.times.append(end - self.begin)
                if self.last_end is not None:
                    self.intervals.append(end - self.last_end)
            if state.global_step == total:
                self.peak = mem.peak()
            self.last_end = end

    timer = StepTimer()
    trainer = trl_trainer(
        args,
        model_dir,
        output_dir,
        [_trl_reward(task, params, samples)],
        _trl_dataset(task, params, samples),
        callbacks=[timer],
    )
    trainer.train()
    mem.stop()
    lengths = [
        h["completions/mean_length"]
        for h in trainer.state.log_history
        if h.get("step", 0) > args.warmup and "completions/mean_length" in h
    ]
    return _summary("trl", timer.times, timer.intervals, lengths, mem, timer.peak)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "trl"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def _shared_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--task",
        args.task,
        "--num-generations",
        str(args.num_generations),
        "--prompts",
        str(args.prompts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--temperature",
        str(args.temperature),
        "--lr",
        str(args.lr),
        "--loss-type",
        args.loss_type,
        "--beta",
        str(args.beta),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
    ]
    if args.free_length:
        out.append("--free-length")
    if args.gradient_checkpointing:
        out.append("--gradient-checkpointing")
    if args.image_tokens:
        out += ["--image-tokens", str(args.image_tokens)]
    return out


def _run_child(impl: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "vgrpo.bench",
        "step",
        "--impl",
        impl,
        "--workdir",
        str(workdir),
        *_shared_args(args),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"impl": impl, "error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout)["results"][0]


def _measure_here(impl: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``impl`` in this process; library chatter on stdout goes to stderr so stdout stays JSON."""
    model_dir, data = prepare(workdir, args.seed, args.task)
    with (
        tempfile.TemporaryDirectory(prefix=f"vgrpo-bench-step-{impl}-") as out,
        contextlib.redirect_stdout(sys.stderr),
    ):
        if impl == "trl":
            return measure_trl(args, model_dir, data, Path(out))
        return measure_vgrpo(args, model_dir, data, Path(out), shared=impl == "vgrpo")


def aggregate(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per implementation: the median over repeats of each run's median step time and peak memory."""
    rows = []
    for impl in IMPLS:
        ok = [r for run in runs for r in run if r["impl"] == impl and "error" not in r]
        failed = [r for run in runs for r in run if r["impl"] == impl and "error" in r]
        if not ok:
            if failed:
                rows.append(failed[0])
            continue
        row = (
            dict(ok[0])
            if len(ok) == 1
            else {"impl": impl, "memory_method": ok[0]["memory_method"], "threads": ok[0]["threads"]}
        )
        for key in (
            "step_s",
            "mean_s",
            "interval_s",
            "peak_rss_mib",
            "step_peak_mib",
            "baseline_rss_mib",
            "completion_length",
            "generate_s",
            "train_s",
            "prompt_tokens",
        ):
            values = [r[key] for r in ok if r.get(key) is not None]
            row[key] = round(statistics.median(values), 4) if values else None
        row["runs"] = len(ok)
        row["step_s_per_run"] = [r["step_s"] for r in ok]
        row["peak_rss_mib_per_run"] = [r["peak_rss_mib"] for r in ok]
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """vgrpo / TRL for time per step and memory."""
    by = {r["impl"]: r for r in rows if "error" not in r}
    ours, trl = by.get("vgrpo"), by.get("trl")
    if not ours or not trl:
        return {}
    out = {}
    for key in ("step_s", "interval_s", "peak_rss_mib", "step_peak_mib"):
        if ours.get(key) is not None and trl.get(key):
            out[key] = round(ours[key] / trl[key], 3)
    return out


def shared_speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Repeated / shared prefix: how many times faster the shared prefix is (step, training passes,
    generation) and its peak memory as a share of the repeated path's."""
    by = {r["impl"]: r for r in rows if "error" not in r}
    shared, repeated = by.get("vgrpo"), by.get("vgrpo-repeated")
    if not shared or not repeated:
        return {}
    out = {}
    for key in ("step_s", "train_s", "generate_s"):
        if shared.get(key) and repeated.get(key) is not None:
            out[key] = round(repeated[key] / shared[key], 3)
    out["peak_rss_mib"] = round(shared["peak_rss_mib"] / repeated["peak_rss_mib"], 3)
    return out


def expected_saving(prompt_tokens: float, completion_tokens: float, g: int) -> float:
    """Token positions per group, repeated over shared: (P + C)·G / (P + G·C)."""
    return round((prompt_tokens + completion_tokens) * g / (prompt_tokens + g * completion_tokens), 3)


def targets_met(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """vgrpo ≤ 0.8× TRL's time per optimizer step and ≤ TRL's peak memory; the shared prefix against the
    repeated path: training passes ≥ 3× faster, the step ≥ 2×, peak memory no higher."""
    r, s = ratios(rows), shared_speedups(rows)
    out = {}
    if r:
        out[f"time <= {TIME_TARGET}x TRL"] = r["step_s"] <= TIME_TARGET
        out[f"peak memory <= {MEMORY_TARGET:g}x TRL"] = r["peak_rss_mib"] <= MEMORY_TARGET
    if s:
        out[f"training passes >= {SHARED_TRAIN_TARGET:g}x faster than repeated"] = (
            s.get("train_s", 0.0) >= SHARED_TRAIN_TARGET
        )
        out[f"step >= {SHARED_STEP_TARGET:g}x faster than repeated"] = s["step_s"] >= SHARED_STEP_TARGET
        out[f"peak memory <= {SHARED_MEMORY_TARGET:g}x repeated"] = s["peak_rss_mib"] <= SHARED_MEMORY_TARGET
    return out


def _print_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = meta["settings"]
    title = (
        f"GRPO optimizer step on CPU: task {s['task']}, {s['prompts_per_step']} prompts x G={s['num_generations']}, "
        f"{s['max_completion_length']} new tokens{' (fixed)' if s['fixed_length'] else ''}, {s['loss_type']}, "
        f"beta {s['beta']:g}, {s['image_tokens'] or 'default'} image tokens; {meta['machine']}, {meta['date']}"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "impl",
        "step s (median)",
        "x TRL",
        "mean s",
        "end-to-end s",
        "peak RSS MiB",
        "x TRL",
        "step peak MiB",
        "x TRL",
        "completion len",
        "generate s",
        "train s",
        "prompt len",
        "runs",
    ):
        table.add_column(col, justify="left" if col == "impl" else "right")
    trl = next((r for r in rows if r["impl"] == "trl" and "error" not in r), None)

    def x(r: dict[str, Any], key: str) -> str:
        return f"{r[key] / trl[key]:.2f}" if trl and trl.get(key) else ""

    for r in rows:
        if "error" in r:
            table.add_row(r["impl"], f"[red]{r['error']}[/red]", *[""] * 12)
            continue
        table.add_row(
            r["impl"],
            f"{r['step_s']:.3f}",
            x(r, "step_s"),
            f"{r['mean_s']:.3f}",
            f"{r['interval_s']:.3f}",
            f"{r['peak_rss_mib']:,.0f}",
            x(r, "peak_rss_mib"),
            f"{r['step_peak_mib']:,.1f}",
            x(r, "step_peak_mib"),
            f"{r['completion_length']:.1f}" if r.get("completion_length") is not None else "",
            *(f"{r[k]:.3f}" if r.get(k) is not None else "" for k in ("generate_s", "train_s")),
            f"{r['prompt_tokens']:.0f}" if r.get("prompt_tokens") is not None else "",
            str(r.get("runs", 1)),
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    speed = shared_speedups(rows)
    if speed:
        shared = next(r for r in rows if r["impl"] == "vgrpo")
        expected = expected_saving(shared["prompt_tokens"], s["max_completion_length"], s["num_generations"])
        console.print(
            f"shared prefix vs repeated: step {speed['step_s']:.2f}x, training passes {speed.get('train_s', 0):.2f}x, "
            f"generation {speed.get('generate_s', 0):.2f}x faster, peak memory {speed['peak_rss_mib']:.2f}x; "
            f"token positions (P+C)·G / (P+G·C) = {expected:.2f}x at P = {shared['prompt_tokens']:.0f}"
        )
    for name, ok in targets_met(rows).items():
        console.print(f"vgrpo {name}: " + ("yes" if ok else "[red]NO[/red]"))
    method = next((r["memory_method"] for r in rows if "memory_method" in r), "")
    console.print(
        f"time: median of {s['steps']} optimizer steps after {s['warmup']} warm-up (median over runs when repeated); "
        "end-to-end: from one step's end to the next (TRL's batch fetch and logging included)"
    )
    console.print(f"peak memory over the timed steps: {method}; peak RSS = that high-water mark, absolute")


def run(args: argparse.Namespace) -> int:
    meta = {
        "benchmark": "step",
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "device": "cpu",
        "date": date.today().isoformat(),
        "versions": _versions(),
        "settings": _settings(args),
    }
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vgrpo-bench-step-")))
        if args.sweep:
            from vgrpo.bench.sweep import run_sweep

            return run_sweep(args, workdir)
        if args.impl == "all":
            with contextlib.redirect_stdout(sys.stderr):
                prepare(workdir, args.seed, args.task)  # once, so both load the very same weights and records
            impls = [i for i in IMPLS if not (args.skip_trl and i == "trl")]
            runs = [[_run_child(impl, workdir, args) for impl in impls] for _ in range(args.repeats)]
        else:
            runs = [[_measure_here(args.impl, workdir, args)] for _ in range(args.repeats)]
    rows = aggregate(runs)
    if args.json:
        doc = {
            **meta,
            "results": rows,
            "ratios": ratios(rows),
            "shared_prefix_speedups": shared_speedups(rows),
            "targets": targets_met(rows),
            "runs": runs if args.repeats > 1 else None,
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_table(rows, meta)
    return 0 if all("error" not in r for run in runs for r in run) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--impl", default="all", choices=(*IMPLS, "all"), help="implementation (default: all)"
    )
    parser.add_argument(
        "--task", default="count", choices=TASKS, help="synthetic task (default count; math is text only)"
    )
    parser.add_argument(
        "--num-generations", "-G", type=int, default=4, help="completions per prompt G (default 4)"
    )
    parser.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="max_completion_length (default 32)")
    parser.add_argument(
        "--free-length",
        action="store_true",
        help="let completions end at EOS (default: min_new_tokens = max_new_tokens in both)",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-5, help="learning rate, constant (default 1e-5)")
    parser.add_argument("--loss-type", default="dapo", choices=("grpo", "bnpo", "dr_grpo", "dapo"))
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient; > 0 loads a reference model")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="in both (default off in both)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (default 2)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each implementation this many times, "
        "alternating; the table shows medians over runs (default 1)",
    )
    parser.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="visual tokens per image (min_pixels = max_pixels = N·28², in all; default: the tiny model's 16)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="shared prefix vs repeated over G in --sweep-groups and N in --sweep-image-tokens, one table",
    )
    parser.add_argument("--sweep-groups", default="4,8,16", help="G values of --sweep (default 4,8,16)")
    parser.add_argument(
        "--sweep-image-tokens", default="64,256,1024", help="N values of --sweep (default 64,256,1024)"
    )
    parser.add_argument(
        "--skip-trl", action="store_true", help="with --impl all: vgrpo shared and repeated only"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="folder for the saved model and data (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)
