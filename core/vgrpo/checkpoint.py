"""Checkpoints: the layout of a ``checkpoint-<step>/`` folder, writing it whole or not at all, finding, pruning
and loading it. The trainer assembles what goes in (:class:`TrainingState`); this module owns where it goes.

    checkpoint-<step>/
        model.safetensors, config.json       the policy (LoRA: adapters merged), readable by any HF loader
        processor and tokenizer files
        lora/                                the peft adapter of a LoRA run (``adapter/`` in older checkpoints)
        deepspeed/                           DeepSpeed's partitioned optimizer and scheduler state
        trainer_state.json, .safetensors     step, optimizer, scheduler, sampler, RNG, world size, config
        rank-<r>.json, .safetensors          each process's RNG states and event counters
        config.yaml                          the resolved config
        manifest.json                        run id, step, every file's size and sha256 — written last

vgrpo pickles nothing: structure is JSON, tensors are safetensors (checkpoints of the older layout, with
``.pt`` files, are read with ``torch.load(weights_only=True)``, which refuses code). A checkpoint is written to
``.tmp-checkpoint-<step>/`` and renamed when complete, so a run killed while saving leaves no half-written
``checkpoint-<step>``; ``resume=auto`` takes the newest checkpoint whose manifest checks out. Saving and loading
are collective: every rank calls them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.errors import CheckpointError

if TYPE_CHECKING:
    from vgrpo.distributed import Distributed

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
OLD_STATE_FILE = "trainer_state.pt"
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
    found = [
        (int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))
    ]
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
        return latest_intact_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).exists() and not (path / OLD_STATE_FILE).exists():
        raise CheckpointError(f"resume={resume}: not a checkpoint folder (no {STATE_FILE})")
    if (problem := checkpoint_problem(path)) is not None:
        raise CheckpointError(f"resume={resume}: the checkpoint is damaged: {problem}")
    return path


#: The config keys (dotted prefixes) whose change breaks an exact resume of any recipe: the seed, the model as
#: loaded and trained, and the task mixture. Each recipe adds its own (:data:`EXACTNESS_KEYS`, GRPO's;
#: ``vgrpo.sft.SFT_EXACTNESS_KEYS``).
MODEL_EXACTNESS_KEYS = (
    "seed",
    "model.name_or_path",
    "model.adapter",
    "model.lora",
    "model.dtype",
    "model.freeze_vision",
    "model.min_pixels",
    "model.max_pixels",
    "tasks",
)
#: Config keys (dotted prefixes) whose change breaks an exact resume of the GRPO recipe: refused unless
#: ``checkpoint.allow_config_change=true``. Every other change is applied and announced (``optim.lr``: the
#: schedule continues from the new rate; ``optim.max_steps``, ``logging``, ``eval``, ``checkpoint``, ...).
EXACTNESS_KEYS = (
    *MODEL_EXACTNESS_KEYS,
    "model.shared_prefix",  # the shared-prefix path sums in another order: equal to ~1e-5, not bit for bit
    "grpo.num_generations",
    "grpo.num_iterations",
    "grpo.scale_rewards",
    "optim.prompts_per_step",
    "optim.betas",  # restored with the optimizer state, so a new value would be ignored: refused instead
    "optim.weight_decay",
    "optim.gradient_accumulation_steps",
    "generation",
)
#: Keys that differ between a run and its resume by nature, or that only say where files are.
UNCOMPARED_KEYS = ("output_dir", "checkpoint.resume", "checkpoint.allow_config_change")
_MOVABLE = re.compile(r"^tasks\[\d+\]\.(data|image_root)(\[|$)")  # data may move; the sampler checks its size


@dataclass(frozen=True)
class ConfigChange:
    """A config key whose value differs between a checkpoint and the run resuming it."""

    key: str
    saved: Any
    now: Any
    breaks_exactness: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.saved!r} → {self.now!r}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {f"{prefix}.len": len(value)}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _breaks_exactness(key: str, exactness: tuple[str, ...] = EXACTNESS_KEYS) -> bool:
    if _MOVABLE.match(key):
        return False
    return any(key == k or key.startswith((f"{k}.", f"{k}[")) for k in exactness)


def config_changes(
    saved: dict[str, Any], now: dict[str, Any], exactness: tuple[str, ...] = EXACTNESS_KEYS
) -> list[ConfigChange]:
    """Every dotted key whose value differs between a checkpoint's resolved config and the current one
    (``exactness``: the keys whose change breaks an exact resume, the GRPO recipe's by default)."""
    a, b = _flatten(saved), _flatten(now)
    changes = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(f"{k}.") for k in UNCOMPARED_KEYS) or a.get(key) == b.get(key):
            continue
        changes.append(
            ConfigChange(key.removesuffix(".len"), a.get(key), b.get(key), _breaks_exactness(key, exactness))
        )
    return changes


def check_resume_config(
    checkpoint: Path, now: dict[str, Any], *, allow: bool, exactness: tuple[str, ...] = EXACTNESS_KEYS
) -> list[ConfigChange]:
    """The config changes since ``checkpoint`` was written (read from its config.yaml); a
    :class:`CheckpointError` listing them when one breaks exactness and ``allow`` is false."""
    import yaml

    path = checkpoint / CONFIG_FILE
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint's config ({exc})") from None
    changes = config_changes(saved, now, exactness)
    refused = [c for c in changes if c.breaks_exactness]
    if refused and not allow:
        raise CheckpointError(
            f"resuming {checkpoint} with a changed config would not continue the same run: "
            + "; ".join(str(c) for c in refused)
            + ". Restore those values, start a new run (resume=never or another output_dir), or set "
            "checkpoint.allow_config_change=true to resume anyway"
        )
    return changes


#: The config keys of the GRPO recipe's learning rate and schedule (``vgrpo sft`` has its own, under ``sft.``).
SCHEDULE_KEYS = ("optim.lr", "optim.max_steps", "optim.warmup_steps", "optim.lr_scheduler")


def apply_config_changes(
    changes: list[ConfigChange],
    optimizer: Any,
    scheduler: Any,
    schedule_keys: tuple[str, ...] = SCHEDULE_KEYS,
) -> None:
    """Announce each config change of a resume and apply those the restored state would hide: a new
    learning rate (``schedule_keys[0]``, ``optim.lr``) rescales the schedule's base (lr = base · schedule(step)),
    and a change of any of ``schedule_keys`` (lr, ``max_steps``, ``warmup_steps``, ``lr_scheduler``) sets the
    current rate from the new schedule at the resumed step."""
    for c in changes:
        log.warning(
            "resume: config changed: %s%s",
            c,
            " (breaks exactness; allowed by checkpoint.allow_config_change)" if c.breaks_exactness else "",
        )
        if c.key == schedule_keys[0] and c.saved:
            scheduler.base_lrs = [b * float(c.now) / float(c.saved) for b in scheduler.base_lrs]
    if set(schedule_keys) & {c.key for c in changes} and hasattr(scheduler, "lr_lambdas"):
        lrs = [b * f(scheduler.last_epoch) for b, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs


@dataclass(frozen=True)
class Resumed:
    """Where a run resumed from: the checkpoint, its step, and what changed in the config since."""

    checkpoint: Path
    step: int
    changes: list[ConfigChange]

    def __str__(self) -> str:
        changed = f"; config changed: {', '.join(c.key for c in self.changes)}" if self.changes else ""
        return f"resuming from {self.checkpoint} at step {self.step}{changed}"


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
    """Writes, prunes, verifies and loads the checkpoints of one run's ``output_dir``.

    ``run_id`` names the run: each checkpoint's manifest records it, and pruning only ever deletes checkpoints of
    this run (never an older run's that shares the folder)."""

    def __init__(
        self, output_dir: Path, dist: Distributed, save_total_limit: int | None = None, run_id: str = ""
    ) -> None:
        self.output_dir = Path(output_dir)
        self.dist = dist
        self.save_total_limit = save_total_limit
        self.run_id = run_id

    def save(self, state: TrainingState, weights: Weights, config_yaml: str) -> Path:
        """``checkpoint-<step>/`` for ``state.step``, written to a temporary folder, its manifest last, and
        renamed when complete. A failure on any process (a full disk names the folder and the space left) ends
        in the same :class:`CheckpointError` on every process, and the partial folder is removed."""
        main = self.dist.is_main
        final = self.output_dir / checkpoint_name(state.step)
        tmp = self.output_dir / f".tmp-{checkpoint_name(state.step)}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        self._agree(final, tmp, lambda: tmp.mkdir(parents=True) if main else None)
        self._agree(final, tmp, lambda: self._write(tmp, state, weights, config_yaml))
        self._agree(final, tmp, lambda: self._publish(tmp, final, state.step) if main else None)
        return final

    def _agree(self, final: Path, tmp: Path, phase: Callable[[], None]) -> None:
        """Run one phase of a save on every process; when it fails anywhere, every process raises."""
        error: str | None = None
        try:
            phase()
        except OSError as exc:
            free = shutil.disk_usage(self.output_dir).free if self.output_dir.exists() else 0
            error = (
                f"cannot write {final} ({exc.strerror or exc}); {free / 2**30:.2f} GiB free on "
                f"{self.output_dir}: free some space or set output_dir elsewhere"
            )
        except CheckpointError as exc:
            error = str(exc)
        if not self.dist.all_true(error is None):
            if self.dist.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(error or f"cannot write {final}: another process failed (see its message)")

    def _publish(self, tmp: Path, final: Path, step: int) -> None:
        """Manifest last, then the rename; an older folder of this step is moved aside, unless it is a damaged
        checkpoint of this run (which the resume skipped) — another run's files are never deleted."""
        write_manifest(tmp, run_id=self.run_id, step=step)
        if final.exists():
            ours = final.is_dir() and read_manifest(final).get("run_id") == self.run_id
            if ours or (
                final.is_dir() and checkpoint_problem(final) is not None and not read_manifest(final)
            ):
                shutil.rmtree(final)
            else:
                from vgrpo.run_dir import move_aside

                move_aside(self.output_dir, [final])
        tmp.rename(final)
        self.prune()

    def _write(self, tmp: Path, state: TrainingState, weights: Weights, config_yaml: str) -> None:
        dist = self.dist
        state_dict = None
        if dist.deepspeed:
            state_dict = dist.accelerator.get_state_dict(weights.model)  # gathers ZeRO-3 partitions
            weights.model.save_checkpoint(
                str(tmp / DEEPSPEED_DIR), tag="state"
            )  # optimizer + scheduler shards
        if dist.is_main:
            if weights.peft_model is not None:
                state_dict = state_dict if state_dict is not None else weights.unwrapped.state_dict()
                weights.peft_model.save_pretrained(
                    tmp / LORA_DIR, state_dict={f"base_model.model.{k}": v for k, v in state_dict.items()}
                )
                state_dict = merged_lora_state_dict(state_dict, weights.lora_scaling)
            weights.unwrapped.save_pretrained(tmp, state_dict=state_dict)
            weights.processor.save_pretrained(tmp)
            _save_tree(
                tmp,
                STATE_STEM,
                {
                    "format": FORMAT,
                    "step": state.step,
                    "optimizer": state.optimizer,
                    "scheduler": state.scheduler,
                    "rng": state.rng,
                    "sampler": state.sampler,
                    "world_size": state.world_size,
                    "config": state.config,
                },
            )
            (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        _save_tree(
            tmp,
            f"rank-{dist.rank}",
            {
                "rng": state.rng,
                "counters": dict(state.counters),
                "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            },
        )

    def prune(self) -> None:
        """Keep the ``save_total_limit`` checkpoints of this run with the highest steps; other runs' stay."""
        if self.save_total_limit is None:
            return
        own = [
            path
            for _, path in checkpoints(self.output_dir)
            if read_manifest(path).get("run_id") == self.run_id
        ]
        for path in own[: -self.save_total_limit]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path, *, model: Any, optimizer: Any, scheduler: Any, sampler: Any) -> TrainingState:
        """Restore optimizer, scheduler, sampler and this rank's RNG from ``path``; the returned state carries
        the step and (on the main process) the event counters of every saved rank. The weights are loaded with
        the model (:func:`load_lora` for a LoRA run's adapter). vgrpo unpickles nothing (DeepSpeed's own optimizer
        shards in ``deepspeed/`` are DeepSpeed's pickles: resume those only from a trusted source)."""
        saved = _load_tree(path, STATE_STEM)
        saved_world = int(saved.get("world_size", 1))
        if self.dist.deepspeed:
            if not (path / DEEPSPEED_DIR).exists():
                raise CheckpointError(
                    f"{path}: no {DEEPSPEED_DIR}/ folder: this checkpoint was not written under "
                    "DeepSpeed; resume it without DeepSpeed, or start a new run (resume=never)"
                )
            if saved_world != self.dist.world:
                raise CheckpointError(
                    f"{path}: DeepSpeed partitioned its optimizer state over {saved_world} "
                    f"processes; resume with --num_processes {saved_world} (now {self.dist.world})"
                )
            model.load_checkpoint(str(path / DEEPSPEED_DIR), tag="state")
        elif saved.get("optimizer") is None:
            raise CheckpointError(
                f"{path}: written under DeepSpeed (optimizer state in {DEEPSPEED_DIR}/); resume "
                "it with the same accelerate DeepSpeed config"
            )
        else:
            try:
                optimizer.load_state_dict(saved["optimizer"])  # moved to the parameters' device
            except ValueError as exc:  # other parameter groups: the trainable parameters changed
                raise CheckpointError(
                    f"{path}: the optimizer state does not fit this model's trainable "
                    f"parameters ({exc}); restore the model settings or start a new run "
                    "(resume=never)"
                ) from None
        scheduler.load_state_dict(saved["scheduler"])
        try:
            sampler.load_state_dict(saved["sampler"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}; restore them or start a new run (resume=never)") from None
        ranks = _rank_files(path)
        mine = _load_tree(path, ranks[self.dist.rank]) if self.dist.rank in ranks else {"rng": saved["rng"]}
        torch.set_rng_state(mine["rng"])
        if mine.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
        counters: Counter[str] = Counter()
        if self.dist.is_main:  # event counts of every saved rank, whatever the number of processes now
            for stem in ranks.values():
                counters.update(_load_tree(path, stem).get("counters", {}))
        log.info("resumed from %s at step %d", path, int(saved["step"]))
        return TrainingState(
            step=int(saved["step"]),
            optimizer=None,
            scheduler=saved["scheduler"],
            sampler=saved["sampler"],
            world_size=saved_world,
            config=saved.get("config", {}),
            rng=mine["rng"],
            counters=counters,
        )


# -- files without pickles: JSON for structure, safetensors for tensors -----------------------------------------
FORMAT = 2
STATE_STEM = "trainer_state"
MANIFEST = "manifest.json"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON data; each tensor moves to ``tensors`` and leaves ``{"__tensor__": key}`` behind."""
    if torch.is_tensor(obj):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state: cannot store a {type(obj).__name__} without pickling it")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _save_tree(folder: Path, stem: str, obj: Any) -> None:
    """``<stem>.json`` (structure) and ``<stem>.safetensors`` (its tensors)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    data = _encode(obj, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(data), encoding="utf-8")


def _load_tree(folder: Path, stem: str) -> Any:
    """What :func:`_save_tree` wrote; a checkpoint of the older layout (``<stem>.pt``) is read with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain data."""
    from safetensors.torch import load_file

    if (folder / f"{stem}.json").exists():
        try:
            data = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
            return _decode(data, load_file(str(folder / f"{stem}.safetensors")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder / stem}.json: unreadable checkpoint state ({exc})") from None
    legacy = folder / f"{stem}.pt"
    try:
        return torch.load(legacy, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {stem}.json: not a complete checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - an unpickling refusal, a truncated file: the same answer
        raise CheckpointError(
            f"{legacy}: refused to load ({type(exc).__name__}: {str(exc)[:200]}); a checkpoint "
            "must hold only tensors and plain data. Resume from another checkpoint or start a new "
            "run (resume=never)"
        ) from None


def _rank_files(path: Path) -> dict[int, str]:
    """Rank → file stem of the per-rank state files (``rank-<r>.json``, or ``rank-<r>.pt`` of older checkpoints)."""
    found = {}
    for f in path.glob("rank-*"):
        if m := re.match(r"^rank-(\d+)\.(json|pt)$", f.name):
            found[int(m.group(1))] = f"rank-{m.group(1)}"
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, *, run_id: str, step: int) -> None:
    """``manifest.json``: the run, the step and every file's size and hash — written last, so a checkpoint with
    an intact manifest is complete."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(
        json.dumps({"format": FORMAT, "run_id": run_id, "step": step, "files": files}, indent=1),
        encoding="utf-8",
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """A checkpoint's manifest ({} when it has none or it does not parse)."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not an intact checkpoint, or None. With a manifest every file's size and hash must
    match; an older checkpoint without one needs its state and weights files."""
    if not folder.is_dir():
        return "not a folder"
    manifest = read_manifest(folder)
    if not manifest:
        if (folder / MANIFEST).exists():
            return f"{MANIFEST} does not parse"
        if not (folder / f"{STATE_STEM}.pt").exists() or not any(folder.glob("model*.safetensors")):
            return f"no {MANIFEST}, and no {STATE_STEM}.pt and model weights of an older checkpoint"
        return None
    for name, meta in manifest.get("files", {}).items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != meta.get("size"):
            return f"{name} has {p.stat().st_size} bytes, the manifest says {meta.get('size')}"
        if _sha256(p) != meta.get("sha256"):
            return f"{name} does not match its hash in the manifest"
    return None


def latest_intact_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that :func:`checkpoint_problem` finds intact; each newer broken one is skipped
    with a warning saying why."""
    for _, path in reversed(checkpoints(Path(output_dir))):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping %s: %s; trying the previous checkpoint", path, problem)
    return None


def load_lora(peft_model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's LoRA adapter weights into ``peft_model`` (``lora/``, or ``adapter/`` of older ones)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = lora_dir(checkpoint) / LORA_WEIGHTS
    if not path.exists():
        raise CheckpointError(
            f"{checkpoint}: no {LORA_DIR}/{LORA_WEIGHTS}: this checkpoint was not written with "
            "model.lora.enabled=true; resume it without LoRA"
        )
    result = set_peft_model_state_dict(peft_model, load_file(path))
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(
            f"{path}: adapter weights that the model has no place for: {result.unexpected_keys[:5]}"
        )


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
            a, b = (
                state_dict[f"{prefix}.lora_A.default.weight"],
                state_dict[f"{prefix}.lora_B.default.weight"],
            )
            out[f"{prefix}.weight"] = (value.float() + scaling * (b.float() @ a.float())).to(value.dtype)
        else:
            out[key.replace(".base_layer.", ".")] = value
    return out
