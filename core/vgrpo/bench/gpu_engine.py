"""The engine section of ``python -m vgrpo.bench gpu``: GRPO optimizer steps of a real-size model, phase by phase.

The model has Qwen2.5-VL-3B's architecture (:func:`qwen25_vl_3b_config`, its published sizes written here) with
random weights, built directly on the device in bf16 with sdpa attention — no download, no CPU initialisation.
The processor is the embedded tiny model's (byte-level tokenizer, Qwen's image processor) with images bounded at
448×448 (32×32 patches merged 2×2: 256 visual tokens per scene). ``--tiny``: the embedded tiny model in fp32.

Each variant (fused or naive log-probs, gradient checkpointing off or on) is a fresh :class:`~vgrpo.trainer.Trainer`
on synthetic ``count`` scenes, driven through its own stages so each phase is timed on its own (CUDA synchronised
between phases): ``generate`` (prompts, rollout, scoring), ``old/ref log-probs`` (``num_iterations: 2`` makes the
trainer compute old log-probs; ``beta`` > 0 the reference's), ``policy fwd+bwd`` and ``optimizer`` (clipping,
AdamW, schedule). Completions have a fixed length (EOS suppressed until ``max_completion_length``). A random model's
completions all score 0, which would make every advantage 0; the section draws the rewards from a seeded normal
distribution instead, so the loss and its gradient are those of a real step.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vgrpo.bench.gpu import Check, SectionContext
from vgrpo.models.adapters import Qwen25VLAdapter

log = logging.getLogger(__name__)

MODEL_3B = "bench:qwen2.5-vl-3b"
IMAGE_SIDE = 448
FULL = {"prompts": 4, "G": 8, "new_tokens": 256, "steps": 3, "dtype": "bfloat16", "model": MODEL_3B}
TINY = {"prompts": 2, "G": 2, "new_tokens": 8, "steps": 3, "dtype": "float32", "model": "tiny"}
#: (name, config overrides) in order of value: checkpointing on first (without it a 3B step's activations may not
#: fit), fused vs naive log-probs both with it, then fused without it.
CKPT = "grad checkpointing"
VARIANTS = [
    (f"fused, {CKPT}", {"model": {"logprobs": "fused", "gradient_checkpointing": True}}),
    (f"naive log-probs, {CKPT}", {"model": {"logprobs": "naive", "gradient_checkpointing": True}}),
    ("fused, no checkpointing", {"model": {"logprobs": "fused", "gradient_checkpointing": False}}),
]
PHASES = ("generate", "old/ref log-probs", "policy fwd+bwd", "optimizer")


def qwen25_vl_3b_config(tokenizer: Any) -> Any:
    """Qwen2.5-VL-3B-Instruct's architecture (its config.json's sizes) with the tiny tokenizer's special ids."""
    from transformers import Qwen2_5_VLConfig

    from vgrpo.models.tiny import SPECIAL_TOKENS

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    special = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151_936,
            "hidden_size": 2048,
            "intermediate_size": 11_008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128_000,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            **special,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "in_chans": 3,
            "tokens_per_second": 2,
            "hidden_act": "silu",
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        **special,
    )


class RandomInitAdapter(Qwen25VLAdapter):
    """Qwen2.5-VL with random weights built on the device: ``bench:qwen2.5-vl-3b`` (other sources as usual)."""

    name = "bench-random-init"

    def __init__(self, device: str) -> None:
        self.device = device

    def load(
        self,
        name_or_path: str,
        *,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        seed: int = 0,
    ) -> tuple[Any, Any]:
        if name_or_path != MODEL_3B:
            return super().load(
                name_or_path,
                dtype=dtype,
                attn_implementation=attn_implementation,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                seed=seed,
            )
        from transformers import Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from vgrpo.models.tiny import CHAT_TEMPLATE, _processor_class, build_tokenizer

        tokenizer = build_tokenizer()
        images = Qwen2VLImageProcessorPil(
            size={"shortest_edge": 56 * 56, "longest_edge": IMAGE_SIDE * IMAGE_SIDE}
        )
        processor = _processor_class()(
            image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
        )
        config = qwen25_vl_3b_config(tokenizer)
        config._attn_implementation = attn_implementation
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.device(self.device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(
                config, dtype=dtype, attn_implementation=attn_implementation
            )
        log.info("built %s on %s in %.1f s", MODEL_3B, self.device, time.perf_counter() - start)
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        return model, processor


class _Registry:
    """The installed plugins plus the bench's adapter (what :class:`~vgrpo.trainer.Trainer` reads of a registry)."""

    def __init__(self, base: Any, adapter: Any) -> None:
        self._base, self._adapter = base, adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    @property
    def model_adapters(self) -> dict[str, Any]:
        return {**self._base.model_adapters, self._adapter.name: self._adapter}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def optional_variants() -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Variants for config keys other branches add (shared prefix, the vLLM backend), when this build has them."""
    import importlib.util

    from vgrpo.config import GenerationConfig, ModelConfig

    variants, notes = [], []
    if "shared_prefix" in ModelConfig.model_fields:  # auto: shared without checkpointing, repeated with it
        off = {"logprobs": "fused", "gradient_checkpointing": False, "shared_prefix": "off"}
        variants.append(("fused, no checkpointing, prompts repeated", {"model": off}))
        notes.append(
            "shared-prefix vs repeated: 'fused, no checkpointing' shares each prompt among its G completions "
            "(model.shared_prefix auto), 'prompts repeated' does not; with checkpointing the prompts repeat"
        )
    else:
        notes.append("shared-prefix vs repeated: not available in this build (no model.shared_prefix)")
    if "backend" not in GenerationConfig.model_fields:
        notes.append("hf vs vLLM generation: not available in this build (no generation.backend)")
    elif importlib.util.find_spec("vllm") is None:
        notes.append("hf vs vLLM generation: skipped (vLLM is not installed)")
    else:
        variants.append(
            (f"fused, {CKPT}, vLLM generation", {**VARIANTS[0][1], "generation": {"backend": "vllm"}})
        )
    notes.append("TRL GRPOTrainer side by side: in the trl section (its own process, after this one)")
    return variants, notes


def _config(
    ctx: SectionContext, sizes: dict[str, Any], data: Path, out: Path, overrides: dict[str, Any]
) -> Any:
    from vgrpo.config import TrainConfig

    doc = {
        "output_dir": str(out),
        "seed": 0,
        "model": {
            "name_or_path": sizes["model"],
            "adapter": RandomInitAdapter.name,
            "dtype": sizes["dtype"],
            "attn_implementation": "sdpa",
            "freeze_vision": True,
            "max_pixels": IMAGE_SIDE * IMAGE_SIDE,
        },
        "tasks": [{"task": "count", "data": [str(data)]}],
        "grpo": {"num_generations": sizes["G"], "beta": 0.04, "loss_type": "dapo", "num_iterations": 2},
        "generation": {"max_completion_length": sizes["new_tokens"], "temperature": 1.0},
        "optim": {
            "lr": 1e-6,
            "lr_scheduler": "constant",
            "prompts_per_step": sizes["prompts"],
            "gradient_accumulation_steps": 1,
            "max_steps": 10 * sizes["steps"],
        },
        "rewards": {"workers": 0},
        "logging": {"tensorboard": False, "completions_every": 0},
        "checkpoint": {"resume": "never", "every": 10**6},
    }
    return TrainConfig.model_validate(_merge(doc, overrides))


def measure_variant(ctx: SectionContext, name: str, config: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """Set up a trainer and time ``steps`` optimizer steps phase by phase."""
    from vgrpo.plugins import get_registry
    from vgrpo.trainer import Trainer

    device = ctx.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config, _Registry(get_registry(), RandomInitAdapter(device)))
    start = time.perf_counter()
    trainer.setup()
    setup_s = time.perf_counter() - start
    trainer.model.generation_config.min_new_tokens = sizes["new_tokens"]  # fixed length
    dist, policy = trainer.dist, trainer.policy
    optimizer_s: list[float] = []
    inner_step = dist.step

    def timed_step(*a: Any, **kw: Any) -> float:
        sync()
        t = time.perf_counter()
        norm = inner_step(*a, **kw)
        sync()
        optimizer_s.append(time.perf_counter() - t)
        return norm

    dist.step = timed_step  # type: ignore[method-assign]
    rows = sizes["prompts"] * sizes["G"]
    gen = torch.Generator().manual_seed(0)
    steps: list[dict[str, float]] = []
    results = []
    try:
        for i in range(sizes["steps"]):
            if i and ctx.left_s() < 2 * steps[-1]["total"]:
                break
            sync()
            t0 = time.perf_counter()
            generation = trainer._generate(trainer._draw_prompts(sizes["prompts"]))
            # a random model scores 0 everywhere: rewards drawn instead (see the module docstring)
            rewards = torch.randn(rows, generator=gen)
            generation = dataclasses.replace(generation, rewards=rewards, all_rewards=rewards)
            sync()
            t1 = time.perf_counter()
            (batch,) = trainer._micro_batches([generation])
            sync()
            t2 = time.perf_counter()
            optimizer_steps = len(optimizer_s)  # a non-finite loss skips the optimizer
            result = policy.step([batch], float(batch.mask.sum()))
            sync()
            t3 = time.perf_counter()
            trainer.step += 1
            opt = optimizer_s[-1] if len(optimizer_s) > optimizer_steps else 0.0
            steps.append(
                {
                    "generate": t1 - t0,
                    "old/ref log-probs": t2 - t1,
                    "policy fwd+bwd": t3 - t2 - opt,
                    "optimizer": opt,
                    "total": t3 - t0,
                    "tokens": float(batch.mask.sum()),
                }
            )
            results.append(result)
    finally:
        trainer.cleanup()
    timed = steps[1:] or steps  # the first step compiles kernels and warms the allocator
    row: dict[str, Any] = {"variant": name, "steps": len(steps), "setup_s": setup_s}
    for key in (*PHASES, "total"):
        row[f"{key} s"] = statistics.median(s[key] for s in timed)
    row["completion tokens/s"] = statistics.median(s["tokens"] / s["total"] for s in timed)
    row["completion tokens"] = steps[-1]["tokens"]
    row["step times"] = [round(s["total"], 3) for s in steps]
    row["peak MiB"] = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    row["loss"] = [r.loss for r in results]
    row["grad_norm"] = [r.grad_norm for r in results]
    row["finite"] = all(r.finite for r in results)
    return row


def run(ctx: SectionContext) -> None:
    """Synthetic scenes, then every variant while the section's time lasts; rows and checks into ``ctx``."""
    from vgrpo.synth import synthesize

    sizes = TINY if ctx.tiny else FULL
    ctx.result.sizes = {**sizes, "image": f"{IMAGE_SIDE}x{IMAGE_SIDE}", "beta": 0.04, "num_iterations": 2}
    extra, notes = optional_variants()
    ctx.result.notes += notes
    ctx.save()
    with tempfile.TemporaryDirectory(prefix="vgrpo-bench-gpu-") as tmp:
        data = synthesize(Path(tmp) / "data", n_per_task=32, n_val=0, tasks=["count"], image_size=IMAGE_SIDE)[
            "count"
        ]
        last = 0.0
        for name, overrides in VARIANTS + extra:
            if ctx.left_s() < max(10.0, 1.2 * last):
                ctx.result.notes.append(f"{name}: not run (section time spent)")
                continue
            log.info("engine: %s", name)
            t = time.perf_counter()
            config = _config(ctx, sizes, data, Path(tmp) / name.replace(" ", "_"), overrides)
            try:
                row = measure_variant(ctx, name, config, sizes)
            except torch.OutOfMemoryError as exc:
                row = {"variant": name, "status": f"out of memory: {str(exc).splitlines()[0]}"}
                del exc
            except Exception as exc:  # reported; the next variant still runs
                log.exception("engine: %s failed", name)
                row = {
                    "variant": name,
                    "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                }
                del exc
            gc.collect()
            if ctx.device == "cuda":
                torch.cuda.empty_cache()
            last = time.perf_counter() - t
            ctx.result.rows.append(row)
            ctx.result.checks.append(_finite_check(name, row, first=name == VARIANTS[0][0]))
            ctx.save()
    by = {r["variant"]: r for r in ctx.result.rows if "total s" in r}
    for a, b, what in (
        (VARIANTS[0][0], VARIANTS[1][0], "fused vs naive log-probs"),
        (VARIANTS[0][0], VARIANTS[2][0], "grad checkpointing on vs off"),
    ):
        if a in by and b in by:
            ctx.result.checks.append(Check(what, None, _compare(by[a], by[b])))
    ctx.save()


def _finite_check(name: str, row: dict[str, Any], first: bool) -> Check:
    """Loss and gradient norm finite, the norm > 0; an out-of-memory variant fails only if it is the first."""
    if "finite" not in row:
        oom = row.get("status", "").startswith("out of memory")
        return Check(f"{name}: ran", None if oom and not first else False, row.get("status", "did not run"))
    norms = row["grad_norm"]
    ok = row["finite"] and all(math.isfinite(g) and g > 0 for g in norms)
    return Check(f"{name}: loss and grad norm finite", bool(ok), f"loss {row['loss']}, grad norm {norms}")


def _compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    out = (
        f"s/step {a['total s']:.3f} vs {b['total s']:.3f}; policy fwd+bwd {a['policy fwd+bwd s']:.3f} vs "
        f"{b['policy fwd+bwd s']:.3f} s"
    )
    if a["peak MiB"] is not None:
        out += f"; peak {a['peak MiB']:,.0f} vs {b['peak MiB']:,.0f} MiB"
    return out
