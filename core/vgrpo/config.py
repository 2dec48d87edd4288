"""The training configuration: pydantic models, YAML files and dotted ``key.sub=value`` overrides.

Unknown keys are errors that list the valid names; every field has a default and a description, so the
configuration reference is generated from these models. Defaults follow TRL 1.x's GRPOConfig where the
two overlap, so results are comparable.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vgrpo.errors import ParamsError


class _Section(BaseModel):
    # no inf or nan anywhere: an lr, a time limit or a weight that is not finite is a typo, not a setting
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraConfig(_Section):
    """LoRA adapters via peft; only the adapters train when enabled."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of the full language model.")
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names (of the language model) that get adapters.",
    )


class ModelConfig(_Section):
    """Which vision-language model to train, and how."""

    name_or_path: str = Field(
        "tiny",
        description="A local path or hub id of an image-text-to-text model (or of a text-only causal LM), "
        "'tiny' for the embedded VLM, or 'tiny-text' for the embedded text-only model.",
    )
    adapter: str = Field(
        "auto", description="Model adapter name (see `vgrpo plugins`), or 'auto' to pick by model type."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Parameter dtype.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; flash_attention_2 needs the flash-attn package."
    )
    min_pixels: int | None = Field(
        None, gt=0, description="Smallest image area fed to the model (Qwen smart resize)."
    )
    max_pixels: int | None = Field(
        None, gt=0, description="Largest image area fed to the model (Qwen smart resize)."
    )
    freeze_vision: bool = Field(True, description="Keep the vision tower frozen.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    logprobs: Literal["fused", "naive"] = Field(
        "fused",
        description="Per-token log-probs from fused kernels (never materialise logits) or plain log_softmax.",
    )
    shared_prefix: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run each prompt and its images once per group in the log-prob passes (policy, old, "
        "reference), its G completions attending to it: 'auto' where the model adapter supports it, 'on' "
        "(an error where it does not), 'off' (each prompt repeated G times). Not with gradient_checkpointing.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("shared_prefix", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """YAML reads a bare on/off as a boolean."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_shared_prefix(self) -> ModelConfig:
        if self.shared_prefix == "on" and self.gradient_checkpointing:
            raise ValueError(
                "model.shared_prefix: on needs model.gradient_checkpointing: false (a checkpointed layer drops the "
                "prompt's key/value cache the completions attend to); set shared_prefix to auto or off"
            )
        return self


class TaskEntry(_Section):
    """One entry of the task mixture."""

    task: str = Field(..., description="Task name, e.g. rec or acme.chartqa.")
    data: list[str] = Field(..., min_length=1, description="JSONL file(s) of records for this task.")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight in the mixture.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Task params (see `vgrpo tasks show TASK`)."
    )
    rewards: dict[str, float | dict[str, Any]] | None = Field(
        None,
        description="Reward weights {name: weight}; replaces the task's defaults. Plugin rewards by name. "
        "A reward with params: {name: {weight: w, params: {...}}} (see `vgrpo tasks show`, `vgrpo plugins`).",
    )
    max_samples: int | None = Field(None, gt=0, description="Use at most this many records (the first ones).")
    image_root: str | None = Field(
        None, description="Directory image paths are relative to (default: the JSONL's)."
    )

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("rewards", mode="before")
    @classmethod
    def _reward_settings(cls, value: Any) -> Any:
        """Each reward: a finite weight, or {weight, params} (params are checked against the reward's model
        when the mixture is built: the reward's plugin is needed for that)."""
        import math
        from collections.abc import Mapping

        from vgrpo.rewards import reward_setting

        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for name, setting in value.items():
            weight, _ = reward_setting(setting, str(name))
            try:
                number = float(weight)
            except (TypeError, ValueError):
                number = math.nan
            entry = isinstance(setting, Mapping)
            if not math.isfinite(number):
                where = f"{name}.weight" if entry else str(name)
                raise ValueError(f"{where}: expected a finite number as the weight, got {weight!r}")
            out[name] = {**setting, "weight": number} if entry else number
        return out


class GrpoConfig(_Section):
    """The GRPO objective (TRL 1.x semantics and defaults)."""

    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group size G).")
    beta: float = Field(
        0.0, ge=0, description="k3 KL coefficient to a frozen reference; 0 loads no reference model."
    )
    epsilon: float = Field(0.2, gt=0, description="Lower clipping range of the importance ratio.")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clipping range (default: epsilon).")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("dapo", description="Loss normalisation.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward std of the group, of the batch, or not at all."
    )
    num_iterations: int = Field(1, ge=1, description="Optimisation passes per generated batch (μ).")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="Importance ratio per token, or one per sequence (GSPO)."
    )
    mask_truncated_completions: bool = Field(
        False, description="Exclude completions that hit the length limit."
    )
    rollout_correction: Literal["none", "token", "sequence"] = Field(
        "none",
        description="Truncated importance sampling for the sampler-trainer mismatch (generation.backend: "
        "vllm): each token's surrogate is weighted by min(p_trainer / p_sampler, cap) per token, or by the "
        "sequence's product of those ratios; the KL term is not weighted (TRL, verl). 'none': no correction.",
    )
    rollout_correction_cap: float = Field(
        3.0, gt=0, description="Upper bound of the rollout-correction weight (TRL's default cap)."
    )


class VllmConfig(_Section):
    """The vLLM engine of ``generation.backend: vllm``, one per training process on its device."""

    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of the device memory the engine takes (weights and KV cache); the rest is training's.",
    )
    max_model_len: int | None = Field(
        None,
        gt=0,
        description="Longest prompt + completion the engine serves (default: the model's); a prompt that "
        "leaves no room for max_completion_length is skipped and counted (counters/prompts_too_long).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="The engine's dtype; auto: model.dtype."
    )
    enforce_eager: bool = Field(
        False, description="No CUDA graphs (starts faster, generates slower); always eager on CPU."
    )
    enable_sleep_mode: bool = Field(
        False,
        description="CUDA only: the engine frees its memory during the training forward/backward and wakes to "
        "generate (then its weights are synced again).",
    )


class GenerationConfig(_Section):
    """Sampling of the G completions per prompt."""

    backend: Literal["hf", "vllm"] = Field(
        "hf",
        description="Who generates: 'hf' (transformers generate) or 'vllm' (an engine colocated in each "
        "training process, weights synced after every optimizer step; needs `pip install vgrpo[vllm]`).",
    )

    max_completion_length: int = Field(256, gt=0, description="Maximum new tokens per completion.")
    max_prompt_length: int | None = Field(
        4096,
        gt=0,
        description="Cut a longer question from the left to this many text tokens (counted under "
        "counters/truncated_prompts), so one record cannot make a step unbounded; null: no limit.",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k filtering; 0 disables it.")
    vllm: VllmConfig = Field(default_factory=VllmConfig)


class OptimConfig(_Section):
    """Optimiser, schedule and batch sizes."""

    lr: float = Field(1e-6, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "linear", description="Schedule after warm-up."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm; null disables clipping."
    )
    prompts_per_step: int = Field(
        2, gt=0, description="Prompts per optimizer step per process (x G completions)."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches accumulated per optimizer step."
    )
    max_steps: int = Field(100, gt=0, description="Optimizer steps to train.")

    @field_validator("betas")
    @classmethod
    def _betas_below_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value


class RewardRuntimeConfig(_Section):
    """Where rewards are computed during training."""

    workers: int = Field(
        1,
        ge=0,
        description="Reward worker processes (tasks of a step are scored in parallel); 0 scores in the "
        "training process, with no time limit.",
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time limit of one task's reward call in a worker; past it the call's "
        "completions score each reward's minimum and are counted as timeouts.",
    )


class EvalConfig(_Section):
    """`vgrpo eval CONFIG` and evaluation during `vgrpo train`: which data, how to generate, how often."""

    data: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Evaluation JSONL file(s) per task name (relative to the YAML file); tasks not listed "
        "use their training data (the `tasks:` entries). Every name must be a task of `tasks:`.",
    )
    max_samples: int | None = Field(None, gt=0, description="Evaluate at most this many records per task.")
    batch_size: int = Field(
        8, gt=0, description="Completions per generation batch (a record sampled N times fills N of them)."
    )
    max_new_tokens: int | None = Field(None, gt=0, description="Default: generation.max_completion_length.")
    num_samples: int = Field(
        1,
        ge=1,
        description="Completions per record. 1: greedy decoding, deterministic (the default). N > 1: N "
        "completions sampled at `temperature`; the task metrics are averaged over the N and pass@k is "
        "reported.",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature when num_samples > 1.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass when num_samples > 1.")
    pass_k: list[int] = Field(
        default_factory=list,
        description="The k of pass@k, reported when num_samples > 1 (each k <= num_samples; empty: 1 and "
        "num_samples): the unbiased estimator 1 - C(n-c, k)/C(n, k) with n = num_samples and c the correct "
        "ones (the task's `correct`), averaged over records.",
    )
    every: int = Field(
        0,
        ge=0,
        description="During `vgrpo train`: evaluate every N optimizer steps (and after the last) on these "
        "splits, logging `eval/<task>/<metric>` to metrics.jsonl and TensorBoard; 0 disables. Training waits "
        "meanwhile, so keep max_samples small.",
    )

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {task: [files] if isinstance(files, str) else files for task, files in value.items()}
        return value

    @field_validator("pass_k", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():  # `--k 1,4` and `eval.pass_k=1,4`
            parts = [part.strip() for part in value.split(",")]
            if not all(parts):
                raise ValueError(f"empty item in {value!r}: expected numbers separated by commas, e.g. 1,4")
            return parts
        if isinstance(value, str):
            return []
        return [value] if isinstance(value, int) else value

    @field_validator("pass_k")
    @classmethod
    def _check_k(cls, value: list[int], info: ValidationInfo) -> list[int]:
        # a field check (not a model one), so an error names pass_k, not the whole section
        num_samples = info.data.get("num_samples")
        if num_samples is None:  # num_samples itself is invalid and reported
            return value
        bad = [k for k in value if not 1 <= k <= num_samples]
        if bad:
            raise ValueError(
                f"every k must be between 1 and num_samples ({num_samples}), got {bad}"
                + (" (pass@k needs num_samples > 1: sampled evaluation)" if num_samples == 1 else "")
            )
        return value


class SftConfig(_Section):
    """`vgrpo sft CONFIG`: supervised fine-tuning on the same task mixture before GRPO (the cold start); the
    target of a record is its `completion` field, else its task's reference completion."""

    steps: int = Field(100, gt=0, description="Optimizer steps of supervised fine-tuning.")
    lr: float = Field(
        1e-5, gt=0, description="Peak learning rate (AdamW; weight decay, betas, clipping from optim)."
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="Schedule over the steps, after the warm-up."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    batch: int = Field(8, gt=0, description="Records per optimizer step per process.")
    max_length: int | None = Field(
        None,
        gt=0,
        description="Cut longer targets to this many tokens (counted under counters/sft_truncated); "
        "default generation.max_completion_length, what GRPO may generate.",
    )
    output_dir: str | None = Field(
        None,
        description="Where SFT's metrics and checkpoints go (default <output_dir>/sft); `vgrpo train "
        "model.name_or_path=<it>/checkpoint-<steps>` continues from there with GRPO.",
    )


class LoggingConfig(_Section):
    """Where metrics go."""

    every: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files to output_dir/tb.")
    wandb: bool = Field(False, description="Log to Weights & Biases (needs wandb installed and configured).")
    completions_every: int = Field(
        10, ge=0, description="Write sampled completions every N steps; 0 disables."
    )


class CheckpointConfig(_Section):
    """Checkpoints and resuming."""

    every: int = Field(50, ge=1, description="Save a checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(
        3, ge=1, description="Keep at most this many checkpoints; null keeps all."
    )
    resume: str = Field(
        "auto", description="'auto' (latest checkpoint in output_dir), 'never', or a checkpoint path."
    )
    overwrite: bool = Field(
        False,
        description="With resume=never, start over in an output_dir that holds an earlier run: its files are "
        "moved to output_dir/previous-runs/<time>/ (never deleted); without it such a run is refused.",
    )
    allow_config_change: bool = Field(
        False,
        description="Resume even when the config changed in a way that breaks exactness (model, tasks, "
        "seed, num_generations, prompts_per_step, ...); other changes are applied and announced either way.",
    )


class TrainConfig(_Section):
    """A whole training run."""

    output_dir: str = Field(
        "runs/vgrpo", description="Where metrics, checkpoints and the resolved config go."
    )
    seed: int = Field(0, ge=0, description="Seed for sampling, generation and initialisation.")
    required_plugins: list[str] = Field(
        default_factory=list,
        description='Distributions the run needs, e.g. ["vgrpo-ovd>=0.2"]; checked first.',
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: list[TaskEntry] = Field(default_factory=list, description="The task mixture.")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    rewards: RewardRuntimeConfig = Field(default_factory=RewardRuntimeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [t.task for t in self.tasks]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"tasks: each task may appear once, {dupes} appear more often (merge their data lists)"
            )
        extra = sorted(set(self.eval.data) - set(names))
        if extra:
            raise ValueError(f"eval.data: {extra} not in tasks {names} (evaluation uses a task's params)")
        return self


# -- loading ------------------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    """A command-line value as YAML (numbers, booleans, lists, null), else the plain string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def apply_override(data: dict[str, Any], dotted: str) -> None:
    """Apply one ``key.sub=value`` override to nested config data (list items by index: ``tasks.0.weight``)."""
    if "=" not in dotted:
        raise ParamsError(f"override {dotted!r}: expected key.sub=value")
    key, value = dotted.split("=", 1)
    parts = _expand_shorthand(key.strip()).split(".")
    node: Any = data
    model: type[BaseModel] | None = TrainConfig
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ParamsError(
                    f"override {key!r}: {'.'.join(parts[:i])} has {len(node)} items, got index {part!r}"
                )
            idx = int(part)
            if last:
                node[idx] = _parse_value(value)
                return
            node = node[idx]
            model = TaskEntry if parts[0] == "tasks" else None
            continue
        if model is not None and part not in model.model_fields:
            raise ParamsError(_unknown(".".join(parts[: i + 1]), part, _valid_keys(model)))
        if last:
            node[part] = _parse_value(value)
            return
        field = model.model_fields[part] if model is not None else None
        child = field.annotation if field is not None else None
        model = child if isinstance(child, type) and issubclass(child, BaseModel) else None
        if part == "tasks":
            node = node.setdefault(part, [])
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")


def _sections() -> dict[str, type[BaseModel]]:
    out = {}
    for name, field in TrainConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = field.annotation
    return out


def _expand_shorthand(key: str) -> str:
    """A bare key that is no top-level field but names a field of exactly one section stands for that section's
    field: ``max_steps`` is ``optim.max_steps``, ``resume`` is ``checkpoint.resume``. A bare key found in several
    sections is refused with the full names."""
    if "." in key or key in TrainConfig.model_fields:
        return key
    found = [f"{name}.{key}" for name, model in _sections().items() if key in model.model_fields]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ParamsError(f"override {key!r} is ambiguous: write one of {found}")
    return key


def _unknown(where: str, key: str, valid: list[str]) -> str:
    hint = difflib.get_close_matches(key, valid, n=1)
    return (
        f"unknown config key {where!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; valid keys: {valid}"
    )


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            valid = _valid_keys(parent) if parent else []
            lines.append(_unknown(loc, str(err["loc"][-1]), valid))
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = TrainConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        child = field.annotation if field else None
        if isinstance(child, type) and issubclass(child, BaseModel):
            model = child
        elif str(part) == "tasks":
            model = TaskEntry
        else:
            return None
    return model


def _resolved(base: Path, files: Any) -> Any:
    """``data`` file(s) resolved against ``base`` (anything else is left for validation to report)."""
    if isinstance(files, str):
        files = [files]
    return [str(base / f) if isinstance(f, str) else f for f in files] if isinstance(files, list) else files


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from defaults), apply dotted overrides, validate.

    Relative ``data``, ``image_root`` and ``eval.data`` paths are resolved against the YAML file's directory.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ParamsError(f"{path}: cannot read config: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ParamsError(
                f"{path}: not UTF-8 text (byte {exc.start}): save the config as UTF-8"
            ) from None
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path}: invalid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ParamsError(f"{path}: expected a mapping of config sections, got {type(loaded).__name__}")
        data = loaded
        base = Path(path).resolve().parent
        for entry in data.get("tasks") or []:
            if isinstance(entry, dict):
                if "data" in entry:
                    entry["data"] = _resolved(base, entry["data"])
                if isinstance(entry.get("image_root"), str):
                    entry["image_root"] = str(base / entry["image_root"])
        evaluation = data.get("eval")
        if isinstance(evaluation, dict) and isinstance(evaluation.get("data"), dict):
            evaluation["data"] = {task: _resolved(base, files) for task, files in evaluation["data"].items()}
    for item in overrides:
        apply_override(data, item)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, source)) from None


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML (what is saved in output_dir and in every checkpoint)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
