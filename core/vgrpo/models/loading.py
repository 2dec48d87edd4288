"""The models of a run, loaded and prepared: the policy (frozen vision tower, gradient checkpointing, LoRA), its
processor and the frozen reference model — with the model adapter's rules, written once here."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.checkpoint import load_lora

if TYPE_CHECKING:
    from vgrpo.config import ModelConfig
    from vgrpo.distributed import Distributed
    from vgrpo.models.adapters import ModelAdapter

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RunModels:
    """What a run trains and compares against."""

    policy: Any
    processor: Any
    reference: Any = None
    """The frozen starting model for the KL term; None with ``beta: 0`` or LoRA (adapters disabled instead)."""
    peft_model: Any = None
    """The peft wrapper of a LoRA run (its adapters live inside ``policy``)."""


def load_model(
    adapter: ModelAdapter, source: str, mcfg: ModelConfig, seed: int, dist: Distributed | None = None
) -> tuple[Any, Any]:
    """(model, processor) from ``source`` with the config's dtype, attention and image bounds (whole on every
    process when ``dist`` runs ZeRO-3)."""
    kwargs = {
        "dtype": DTYPES[mcfg.dtype],
        "attn_implementation": mcfg.attn_implementation,
        "min_pixels": mcfg.min_pixels,
        "max_pixels": mcfg.max_pixels,
        "seed": seed,
    }
    if dist is None:
        return adapter.load(source, **kwargs)
    with dist.full_parameters_at_load():
        return adapter.load(source, **kwargs)


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute ``model``'s activations in backward (``model.gradient_checkpointing``): transformers 5.23
    renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` (the old name warns, and
    goes in v6); the vLLM CPU build's transformers (< 5.20) has only the old one."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def load_run_models(
    adapter: ModelAdapter,
    mcfg: ModelConfig,
    *,
    seed: int,
    beta: float,
    dist: Distributed,
    resume_from: Path | None = None,
) -> RunModels:
    """The policy, processor and reference of a run.

    The reference is the model the run *started* from, also after a resume: a copy of the freshly loaded base,
    or the base loaded again when the policy comes from a checkpoint. A LoRA checkpoint's model.safetensors holds
    merged weights, so a LoRA run resumes from the base model plus the checkpoint's adapter."""
    from_checkpoint = resume_from is not None and not mcfg.lora.enabled
    source = str(resume_from) if from_checkpoint else mcfg.name_or_path
    policy, processor = load_model(adapter, source, mcfg, seed, dist)
    models = RunModels(policy, processor)
    if beta != 0.0 and not mcfg.lora.enabled:
        ref = (
            load_model(adapter, mcfg.name_or_path, mcfg, seed, dist)[0]
            if from_checkpoint
            else copy.deepcopy(policy)
        )
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        models.reference = ref
    for m in (policy, models.reference):  # see Qwen2VLAdapter.hidden_states: every rank runs the same modules
        if m is not None:
            adapter.prepare(m, every_rank_runs_vision=dist.world > 1)
    vision = adapter.vision_parameters(policy)
    if mcfg.freeze_vision:
        for _, param in vision:
            param.requires_grad_(False)
    if mcfg.gradient_checkpointing:
        enable_activation_checkpointing(policy)
    if mcfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = mcfg.lora
        frozen = sorted({name.rsplit(".", 1)[0] for name, _ in vision}) if mcfg.freeze_vision else []
        models.peft_model = get_peft_model(
            policy,
            LoraConfig(  # adapters are injected into `policy` in place
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                exclude_modules=frozen or None,
            ),
        )
        if resume_from is not None:
            load_lora(models.peft_model, resume_from)
    log.info(
        "model %s (adapter %s): %d trainable parameters",
        source,
        adapter.name,
        sum(p.numel() for p in policy.parameters() if p.requires_grad),
    )
    return models
