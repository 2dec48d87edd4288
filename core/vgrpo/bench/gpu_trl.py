"""The trl section of ``python -m vgrpo.bench gpu``: TRL's GRPOTrainer on the engine section's model and data,
side by side with vgrpo.

The same workload as the engine section's first variant (:data:`vgrpo.bench.gpu_engine.VARIANTS`: fused log-probs,
gradient checkpointing): the random-weight Qwen2.5-VL-3B built on the device in bf16 with sdpa
(:class:`~vgrpo.bench.gpu_engine.RandomInitAdapter`; ``--tiny``: the embedded tiny model in fp32), its processor
(448×448 scenes, 256 visual tokens), the same synthetic ``count`` records, prompts × G, fixed-length completions
(``min_new_tokens = max_completion_length``, as :func:`vgrpo.bench.step.trl_grpo_trainer` sets them), lr, ``dapo``
loss, beta 0.04, gradient checkpointing on, vision tower frozen, and the same number of optimizer steps. Rewards are
drawn from the same seeded normal distribution as the engine's (a random model scores 0 everywhere). TRL's
reference model is a copy of the policy made before training: TRL builds its reference by reloading the policy's
path, and a model built in code has none, so the section hands it the copy in place of
``trl.trainer.grpo_trainer.create_model_from_path`` while the trainer is constructed.

One difference remains: TRL runs ``num_iterations: 1`` (its ``num_iterations: 2`` would reuse each generation for
two optimizer steps, where the engine generates every step), so TRL skips the old-policy log-prob pass that the
engine's ``num_iterations: 2`` makes vgrpo compute; the ratios are therefore pessimistic for vgrpo by that one
no-grad forward pass per step.

Time per step: ``on_step_begin`` → ``on_step_end`` of a ``TrainerCallback`` (generation and scoring happen inside),
CUDA synchronised at both ends; median of the steps after the first, as in the engine. Peak memory: the process's
``torch.cuda.max_memory_allocated`` (weights, reference, optimizer state and the steps; ``n/a`` on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vgrpo.bench.gpu import Check, SectionContext, SectionResult, _importable, _version
from vgrpo.bench.gpu_engine import FULL, IMAGE_SIDE, TINY, VARIANTS, RandomInitAdapter, _finite_check

#: The engine variant TRL is compared with: the same gradient checkpointing (TRL's own default is on).
VGRPO_VARIANT = VARIANTS[0][0]
TRL_ROW = "TRL GRPOTrainer, grad checkpointing"
RATIO_ROW = "vgrpo / TRL"
BETA = 0.04
LR = 1e-6
SKIPPED = "TRL GRPOTrainer side by side: skipped (TRL is not installed)"


def trl_args(sizes: dict[str, Any]) -> argparse.Namespace:
    """``python -m vgrpo.bench step``'s arguments for the engine's settings: every optimizer step is timed."""
    from vgrpo.bench.step import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        [
            *("--prompts", str(sizes["prompts"]), "-G", str(sizes["G"])),
            *("--max-new-tokens", str(sizes["new_tokens"]), "--temperature", "1.0", "--lr", str(LR)),
            *("--loss-type", "dapo", "--beta", str(BETA), "--gradient-checkpointing"),
            *("--warmup", "0", "--steps", str(sizes["steps"]), "--seed", "0"),
        ]
    )


@contextlib.contextmanager
def reference_from(model: Any) -> Iterator[None]:
    """While GRPOTrainer is constructed, its reference is ``model`` instead of a reload of the policy's path."""
    import trl.trainer.grpo_trainer as grpo

    if not hasattr(grpo, "create_model_from_path"):
        raise RuntimeError(
            f"TRL {_version('trl')}: trl.trainer.grpo_trainer has no create_model_from_path, through which the "
            "bench hands GRPOTrainer its reference model (a model built in code has no path to reload)"
        )
    original = grpo.create_model_from_path
    grpo.create_model_from_path = lambda *a, **kw: model
    try:
        yield
    finally:
        grpo.create_model_from_path = original


def drawn_rewards(seed: int = 0) -> Any:
    """A TRL reward function drawing each batch's rewards from a seeded normal distribution (the engine's draw)."""
    gen = torch.Generator().manual_seed(seed)

    def drawn_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return torch.randn(len(completions), generator=gen).tolist()

    return drawn_reward


def run(ctx: SectionContext) -> None:
    """TRL's steps on the engine's workload, then the comparison with the engine's row; skipped without TRL."""
    sizes = TINY if ctx.tiny else FULL
    ctx.result.sizes = {
        **sizes,
        "image": f"{IMAGE_SIDE}x{IMAGE_SIDE}",
        "beta": BETA,
        "num_iterations": 1,
        "gradient_checkpointing": True,
        "trl": _version("trl"),
    }
    if not _importable("trl"):
        ctx.result.status = "skipped"
        ctx.result.notes.append(SKIPPED)
        ctx.save()
        return
    ctx.result.notes.append(
        f"compared with the engine's '{VGRPO_VARIANT}'; TRL runs num_iterations 1 (no old-policy log-prob pass, "
        "which the engine's num_iterations 2 makes vgrpo compute): the ratios are pessimistic for vgrpo by that pass"
    )
    ctx.save()
    vgrpo_row = engine_row(ctx.path.parent / "engine.json")
    if vgrpo_row is None:
        ctx.result.notes.append(
            f"no vgrpo figures to compare with: the engine section has no '{VGRPO_VARIANT}' row"
        )
    from vgrpo.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="vgrpo-bench-gpu-trl-") as tmp:
        data = synthesize(Path(tmp) / "data", n_per_task=32, n_val=0, tasks=["count"], image_size=IMAGE_SIDE)[
            "count"
        ]
        try:
            measure(ctx, sizes, data, Path(tmp) / "trl", vgrpo_row)
        except torch.OutOfMemoryError:
            raise  # reported with the sizes by the section's process
        except Exception as exc:
            raise RuntimeError(
                f"TRL {_version('trl')} GRPOTrainer failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from exc


def engine_row(path: Path) -> dict[str, Any] | None:
    """The engine section's measured row of :data:`VGRPO_VARIANT`, if it has one."""
    if not path.exists():
        return None
    rows = SectionResult.load(path).rows
    return next((r for r in rows if r.get("variant") == VGRPO_VARIANT and "total s" in r), None)


def measure(
    ctx: SectionContext, sizes: dict[str, Any], data: Path, output_dir: Path, vgrpo_row: dict[str, Any] | None
) -> None:
    """Build the model and GRPOTrainer, train ``steps`` optimizer steps, publish the rows after every step."""
    from transformers import TrainerCallback

    from vgrpo.bench.step import _trl_dataset, trl_grpo_trainer
    from vgrpo.data import load_jsonl
    from vgrpo.plugins import get_registry

    cuda = ctx.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    task = get_registry().task("count")
    params = task.params({})
    samples = load_jsonl(data, task, read_sizes=True)
    args = trl_args(sizes)
    start = time.perf_counter()
    model, processor = RandomInitAdapter(ctx.device).load(
        sizes["model"],
        dtype=getattr(torch, sizes["dtype"]),
        attn_implementation="sdpa",
        max_pixels=IMAGE_SIDE * IMAGE_SIDE,
        seed=0,
    )
    model = model.to(ctx.device)
    reference = copy.deepcopy(model).requires_grad_(False)
    completions = sizes["prompts"] * sizes["G"]
    row: dict[str, Any] = {"variant": TRL_ROW, "steps": 0}

    class Steps(TrainerCallback):
        """Times each optimizer step and collects its logged loss, grad norm and completion length."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.logs: list[dict[str, float]] = []
            self.begin = 0.0

        def on_step_begin(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.begin = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.times.append(time.perf_counter() - self.begin)
            if state.global_step < args.steps and ctx.left_s() < 2 * self.times[-1]:
                control.should_training_stop = True
                ctx.result.notes.append(
                    f"TRL stopped after {state.global_step} of {args.steps} steps (section time spent)"
                )

        def on_log(self, _args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.logs.append(dict(logs))
                update(row, self.times, self.logs, completions, cuda)
                publish(ctx, row, vgrpo_row)

    steps = Steps()
    with reference_from(reference):
        trainer = trl_grpo_trainer(
            args,
            model,
            processor,
            output_dir,
            [drawn_rewards()],
            _trl_dataset(task, params, samples),
            callbacks=[steps],
        )
    row["setup_s"] = time.perf_counter() - start
    trainer.train()
    if not steps.logs:
        raise RuntimeError(f"GRPOTrainer trained {len(steps.times)} steps and logged none")
    update(row, steps.times, steps.logs, completions, cuda)
    publish(ctx, row, vgrpo_row)


def update(
    row: dict[str, Any], times: list[float], logs: list[dict[str, float]], completions: int, cuda: bool
) -> None:
    """The TRL row from the steps so far: the engine's columns for the same figures."""
    n = min(len(times), len(logs))
    timed = list(range(1, n)) or [0]  # the first step warms the allocator and kernels, as in the engine
    tokens = [completions * float(log.get("completions/mean_length", math.nan)) for log in logs[:n]]
    row["steps"] = n
    row["total s"] = statistics.median(times[i] for i in timed)
    row["completion tokens/s"] = statistics.median(tokens[i] / times[i] for i in timed)
    row["completion tokens"] = tokens[n - 1]
    row["step times"] = [round(t, 3) for t in times[:n]]
    row["peak MiB"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else "n/a"
    row["loss"] = [float(log["loss"]) for log in logs[:n]]
    row["grad_norm"] = [float(log.get("grad_norm", math.nan)) for log in logs[:n]]
    row["finite"] = all(math.isfinite(x) for x in row["loss"] + row["grad_norm"])


def ratios(ours: dict[str, Any], trl: dict[str, Any]) -> dict[str, Any]:
    """vgrpo / TRL: seconds per step, completion tokens/s and peak memory (``n/a`` without CUDA figures)."""
    out: dict[str, Any] = {"variant": RATIO_ROW}
    for key in ("total s", "completion tokens/s"):
        out[key] = ours[key] / trl[key] if trl.get(key) else math.nan
    peaks = ours.get("peak MiB"), trl.get("peak MiB")
    numeric = all(isinstance(p, (int, float)) and p for p in peaks)
    out["peak MiB"] = peaks[0] / peaks[1] if numeric else "n/a"
    return out


def publish(ctx: SectionContext, trl: dict[str, Any], ours: dict[str, Any] | None) -> None:
    """Rows vgrpo, TRL and their ratios, the finiteness check and the comparison line; saved."""
    rows = [dict(trl)]
    checks = [_finite_check(TRL_ROW, trl, first=True)]
    if ours is not None:
        vgrpo = {
            k: ours.get(k)
            for k in ("steps", "setup_s", "total s", "completion tokens/s", "completion tokens", "peak MiB")
        }
        vgrpo = {"variant": f"vgrpo, {VGRPO_VARIANT}", **vgrpo}
        if vgrpo["peak MiB"] is None:
            vgrpo["peak MiB"] = "n/a"
        r = ratios(vgrpo, trl)
        rows = [vgrpo, dict(trl), r]
        checks.append(Check("vgrpo vs TRL", None, compare(vgrpo, trl, r)))
    ctx.result.rows, ctx.result.checks = rows, checks
    ctx.save()


def compare(ours: dict[str, Any], trl: dict[str, Any], r: dict[str, Any]) -> str:
    out = (
        f"s/step {ours['total s']:.3f} vs {trl['total s']:.3f} ({r['total s']:.2f}x); completion tokens/s "
        f"{ours['completion tokens/s']:,.1f} vs {trl['completion tokens/s']:,.1f} ({r['completion tokens/s']:.2f}x)"
    )
    if isinstance(r["peak MiB"], float):
        return out + f"; peak {ours['peak MiB']:,.0f} vs {trl['peak MiB']:,.0f} MiB ({r['peak MiB']:.2f}x)"
    return out + "; peak memory n/a (no CUDA)"
