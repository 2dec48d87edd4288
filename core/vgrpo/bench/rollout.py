"""Rollout on each generation backend, side by side: ``python -m vgrpo.bench rollout --backend hf|vllm|all``.

The same model (``tiny-text`` by default, or ``--model`` a local folder or hub id of a text model), the same
prompts (synthetic ``math`` records, text-only) and the same settings (G completions for each of P prompts,
``max_completion_length``, temperature) on each backend, in this process, one backend after the other:

- ``rollout_s``: the median wall time of sampling the P·G completions of one batch (hf: ``generate`` with
  per-row seeds, as training samples; vllm: one request per prompt with n = G), after ``--warmup`` untimed
  batches; ``rollout_tokens_per_s``: completion tokens (up to and including EOS) of those batches per second.
- ``step_s``: the median wall time of a whole GRPO step (:meth:`vgrpo.trainer.Trainer.train_step`: prompts,
  rollout, rewards, log-probs, loss, backward, optimizer; with vllm also the mismatch log-probs and the weight
  sync of the step), after ``--warmup`` untimed steps.
- ``sync_s`` (vllm): the median time of one weight sync (the policy's state dict reloaded into the engine in
  place, prefix cache reset), which every step pays; ``setup_s``: the trainer's set-up (with vllm: engine start
  and the first sync), paid once per run.

vllm needs vLLM installed (on CPU: ``make test-vllm`` builds ``.venv-vllm``; run this with its python).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

BACKENDS = ("hf", "vllm")


def _config(args: argparse.Namespace, backend: str, data: Path, out: Path) -> Any:
    from vgrpo.config import load_config

    overrides = [
        f"output_dir={out}",
        f"model.name_or_path={args.model}",
        f"generation.backend={backend}",
        f"generation.max_completion_length={args.max_new_tokens}",
        f"generation.temperature={args.temperature}",
        f"grpo.num_generations={args.num_generations}",
        f"optim.prompts_per_step={args.prompts}",
        "optim.lr=1e-5",
        "optim.lr_scheduler=constant",
        f"optim.max_steps={args.warmup + args.steps + 1}",
        "rewards.workers=0",
        "logging.tensorboard=false",
        "logging.completions_every=0",
        "checkpoint.every=100000",
        f"seed={args.seed}",
        f"tasks=[{{task: math, data: {data}}}]",
    ]
    if backend == "vllm" and args.max_model_len:
        overrides.append(f"generation.vllm.max_model_len={args.max_model_len}")
    return load_config(None, overrides)


def _rollout_once(trainer: Any, micro: int) -> tuple[float, int]:
    """(seconds, completion tokens) of sampling one batch the way the trainer's backend does."""
    from vgrpo.prompts import encode_prompts
    from vgrpo.rollout import row_seed, sample

    g = trainer.config.grpo.num_generations
    prompts = trainer._draw_prompts(trainer.config.optim.prompts_per_step)
    encoded = encode_prompts(trainer.adapter, trainer.processor, prompts, trainer.dist.device, group_size=g)
    start = time.perf_counter()
    if trainer.engine is not None:
        rollout = trainer._sample_on_engine(prompts, encoded, micro)
    else:
        seeds = [row_seed(trainer.config.seed, "bench", micro, i) for i in range(len(encoded.samples))]
        rollout = sample(
            trainer.unwrapped,
            trainer.processor,
            encoded.inputs,
            trainer.config.generation,
            trainer.eos_ids,
            seeds=seeds,
        )
    return time.perf_counter() - start, int(rollout.completion_mask.sum())


def measure(args: argparse.Namespace, backend: str, workdir: Path) -> dict[str, Any]:
    """One backend's figures (see the module docstring)."""
    from vgrpo.synth import synthesize
    from vgrpo.trainer import Trainer

    data = synthesize(workdir / "data", n_per_task=64, n_val=0, tasks=["math"], seed=args.seed, reuse=True)
    trainer = Trainer(_config(args, backend, data["math"], workdir / f"run-{backend}"))
    start = time.perf_counter()
    trainer.setup()
    setup_s = time.perf_counter() - start
    try:
        times, tokens = [], []
        for i in range(args.warmup + args.steps):
            seconds, n = _rollout_once(trainer, 1000 + i)
            if i >= args.warmup:
                times.append(seconds)
                tokens.append(n)
        steps = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            trainer.train_step()
            if i >= args.warmup:
                steps.append(time.perf_counter() - start)
        syncs = []
        if trainer.engine is not None:
            from vgrpo.rollout_vllm import policy_weights

            for _ in range(args.steps):
                start = time.perf_counter()
                trainer.engine.load_weights(policy_weights(trainer.policy).items())
                syncs.append(time.perf_counter() - start)
    finally:
        trainer.cleanup()
    row = {
        "backend": backend,
        "rollout_s": statistics.median(times),
        "rollout_tokens_per_s": sum(tokens) / sum(times),
        "step_s": statistics.median(steps),
        "setup_s": setup_s,
        "sync_s": statistics.median(syncs) if syncs else None,
    }
    return row


def _versions() -> dict[str, str]:
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import vllm

        out["vllm"] = vllm.__version__
    except ImportError:
        pass
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    if "vllm" in backends:
        from vgrpo.rollout_vllm import require_vllm

        require_vllm()
    with tempfile.TemporaryDirectory(prefix="vgrpo-bench-rollout-") as tmp:
        rows = [measure(args, b, Path(tmp)) for b in backends]
    meta = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "model": args.model,
        "prompts": args.prompts,
        "num_generations": args.num_generations,
        "max_new_tokens": args.max_new_tokens,
        "steps": args.steps,
        "warmup": args.warmup,
        **_versions(),
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return 0
    table = Table(
        title=f"rollout: {args.prompts} prompts × G={args.num_generations}, {args.max_new_tokens} tokens"
    )
    for col in ("backend", "rollout s", "rollout tok/s", "step s", "weight sync s", "setup s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["backend"],
            f"{r['rollout_s']:.3f}",
            f"{r['rollout_tokens_per_s']:.0f}",
            f"{r['step_s']:.3f}",
            "—" if r["sync_s"] is None else f"{r['sync_s']:.3f}",
            f"{r['setup_s']:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(" ".join(f"{k}={v}" for k, v in meta.items()))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="all", choices=(*BACKENDS, "all"), help="default all")
    parser.add_argument("--model", default="tiny-text", help="a text model (default tiny-text, embedded)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per batch (default 4)")
    parser.add_argument("--num-generations", type=int, default=8, help="G (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="max_completion_length (default 64)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-model-len", type=int, default=1024, help="vllm: max_model_len (default 1024)")
    parser.add_argument("--steps", type=int, default=5, help="timed batches and steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches and steps first (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)
