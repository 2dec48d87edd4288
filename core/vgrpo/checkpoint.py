"""Checkpoints: the layout of a ``checkpoint-<step>/`` folder, writing it whole or not at all, finding, pruning
and loading it. The trainer assembles what goes in (:class:`TrainingState`); this module owns where it goes.

    checkpoint-<step>/
        model.safetensors, config.json       the policy (LoRA: adapters merged), readable by any HF loader
        processor and tokenizer files
        lora/                                the peft adapter of a LoRA run (``adapter/`` in older checkpoints)
        deepspeed/                           DeepSpeed's partitioned optimizer and scheduler state
        trainer_state.pt                     step, optimizer, scheduler, sampler, RNG, world size, config
        rank-<r>.pt                          each process's RNG states and event counters
        config.yaml                          the resolved config

A checkpoint is written to ``.tmp-checkpoint-<step>/`` and renamed when complete, so a run killed while
saving leaves no half-written ``checkpoint-<step>``. Saving and loading are collective: every rank calls them.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.errors import CheckpointError

if TYPE_CHECKING:
    from vgrpo.distributed import Distributed

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RANK_RE = re.compile(r"^rank-(\d+)\.pt$")
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
DEEPSPEED_DIR = "deepspeed"
LORA_DIR = "lora"
#: Where checkpoints before vgrpo 0.2 kept the LoRA adapter; still read.
OLD_LORA_DIR = "adapter"
LORA_WEIGHTS = "adapter_model.safetensors"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-<step>`` in ``output_dir``, oldest first."""
    if not output_dir.exists():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None."""
    found = checkpoints(Path(output_dir))
    return found[-1][1] if found else None


def lora_dir(checkpoint: Path) -> Path:
    """The checkpoint's LoRA adapter folder (``lora/``, or ``adapter/`` in a checkpoint of the older layout)."""
    new, old = checkpoint / LORA_DIR, checkpoint / OLD_LORA_DIR
    return old if not new.exists() and old.exists() else new


def resume_path(output_dir: Path, resume: str) -> Path | None:
    """The checkpoint ``checkpoint.resume`` names: ``never`` → None, ``auto`` → the latest in ``output_dir`` (if
    any), else the folder given, which must be a checkpoint."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise CheckpointError(f"resume={resume}: not a checkpoint folder (no {STATE_FILE})")
    return path


@dataclass
class Weights:
    """What a checkpoint's weights are saved from."""

    model: Any
    """The model as the trainer holds it (a DeepSpeed engine under DeepSpeed)."""
    unwrapped: Any
    """The plain Hugging Face model inside it."""
    processor: Any
    peft_model: Any = None
    """The peft model of a LoRA run (its adapters go to ``lora/``, merged weights to model.safetensors)."""
    lora_scaling: float = 1.0
    """``alpha / r`` of a LoRA run: how the adapters merge into the base weights."""


@dataclass
class TrainingState:
    """Everything a resume restores besides the weights."""

    step: int
    optimizer: dict[str, Any] | None
    """The optimizer's state dict; None under DeepSpeed (its state is in ``deepspeed/``)."""
    scheduler: dict[str, Any]
    sampler: dict[str, Any]
    world_size: int
    config: dict[str, Any]
    rng: torch.Tensor = field(default_factory=torch.get_rng_state)
    counters: Counter[str] = field(default_factory=Counter)
    """Event counts of this process (saved per rank; a resume sums those of every saved rank)."""


class Checkpointer:
    """Writes, prunes and loads the checkpoints of one run's ``output_dir``."""

    def __init__(self, output_dir: Path, dist: Distributed, save_total_limit: int | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.dist = dist
        self.save_total_limit = save_total_limit

    def save(self, state: TrainingState, weights: Weights, config_yaml: str) -> Path:
        """``checkpoint-<step>/`` for ``state.step``, written to a temporary folder and renamed when complete."""
        dist, main = self.dist, self.dist.is_main
        final = self.output_dir / checkpoint_name(state.step)
        tmp = self.output_dir / f".tmp-{checkpoint_name(state.step)}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        state_dict = None
        if dist.deepspeed:
            state_dict = dist.accelerator.get_state_dict(weights.model)  # gathers ZeRO-3 partitions
            weights.model.save_checkpoint(str(tmp / DEEPSPEED_DIR), tag="state")  # optimizer + scheduler shards
        if main:
            if weights.peft_model is not None:
                state_dict = state_dict if state_dict is not None else weights.unwrapped.state_dict()
                weights.peft_model.save_pretrained(tmp / LORA_DIR, state_dict={
                    f"base_model.model.{k}": v for k, v in state_dict.items()})  # fmt: skip
                state_dict = merged_lora_state_dict(state_dict, weights.lora_scaling)
            weights.unwrapped.save_pretrained(tmp, state_dict=state_dict)
            weights.processor.save_pretrained(tmp)
            torch.save({
                "step": state.step, "optimizer": state.optimizer, "scheduler": state.scheduler, "rng": state.rng,
                "sampler": state.sampler, "world_size": state.world_size, "config": state.config,
            }, tmp / STATE_FILE)  # fmt: skip
            (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        torch.save({"rng": state.rng, "counters": dict(state.counters),
                    "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
                   tmp / f"rank-{dist.rank}.pt")  # fmt: skip
        dist.barrier()
        if main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self.prune()
        dist.barrier()
        return final

    def prune(self) -> None:
        """Keep the ``save_total_limit`` checkpoints with the highest steps."""
        if self.save_total_limit is None:
            return
        for _, path in checkpoints(self.output_dir)[: -self.save_total_limit]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, *, model: Any, optimizer: Any, scheduler: Any, sampler: Any) -> TrainingState:
        """Restore optimizer, scheduler, sampler and this rank's RNG from ``path``; the returned state carries
        the step and (on the main process) the event counters of every saved rank. The weights are loaded with
        the model (:func:`load_lora` for a LoRA run's adapter)."""
        saved = torch.load(path / STATE_FILE, weights_only=False, map_location="cpu")
        saved_world = int(saved.get("world_size", 1))
        if self.dist.deepspeed:
            if not (path / DEEPSPEED_DIR).exists():
                raise CheckpointError(f"{path}: no {DEEPSPEED_DIR}/ folder: this checkpoint was not written under "
                                      "DeepSpeed; resume it without DeepSpeed, or start a new run (resume=never)")  # fmt: skip
            if saved_world != self.dist.world:
                raise CheckpointError(f"{path}: DeepSpeed partitioned its optimizer state over {saved_world} "
                                      f"processes; resume with --num_processes {saved_world} (now {self.dist.world})")  # fmt: skip
            model.load_checkpoint(str(path / DEEPSPEED_DIR), tag="state")
        elif saved.get("optimizer") is None:
            raise CheckpointError(f"{path}: written under DeepSpeed (optimizer state in {DEEPSPEED_DIR}/); resume "
                                  "it with the same accelerate DeepSpeed config")  # fmt: skip
        else:
            optimizer.load_state_dict(saved["optimizer"])  # moved to the parameters' device
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        ranks = {int(m.group(1)): f for f in path.glob("rank-*.pt") if (m := RANK_RE.match(f.name))}
        own = ranks.get(self.dist.rank)
        mine = torch.load(own, weights_only=False) if own is not None else {"rng": saved["rng"]}
        torch.set_rng_state(mine["rng"])
        if mine.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
        counters: Counter[str] = Counter()
        if self.dist.is_main:  # event counts of every saved rank, whatever the number of processes now
            for f in ranks.values():
                counters.update(torch.load(f, weights_only=False).get("counters", {}))
        log.info("resumed from %s at step %d", path, int(saved["step"]))
        return TrainingState(step=int(saved["step"]), optimizer=None, scheduler=saved["scheduler"],
                             sampler=saved["sampler"], world_size=saved_world, config=saved.get("config", {}),
                             rng=mine["rng"], counters=counters)  # fmt: skip


def load_lora(peft_model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's LoRA adapter weights into ``peft_model`` (``lora/``, or ``adapter/`` of older ones)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = lora_dir(checkpoint) / LORA_WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{checkpoint}: no {LORA_DIR}/{LORA_WEIGHTS}: this checkpoint was not written with "
                              "model.lora.enabled=true; resume it without LoRA")  # fmt: skip
    result = set_peft_model_state_dict(peft_model, load_file(path))
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(f"{path}: adapter weights that the model has no place for: {result.unexpected_keys[:5]}")


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
