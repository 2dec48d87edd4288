"""The process group as the trainer sees it: one process, DDP, or DeepSpeed ZeRO-1/2/3, through accelerate.

``accelerate launch`` starts the processes and chooses the backend (examples/accelerate/*.yaml); the trainer only
calls :class:`Distributed`. What GRPO needs beyond a plain training loop lives here:

* every rank draws the same global batch and keeps its own contiguous slice, so a GRPO group never spans ranks
  and the run does not depend on how many processes share the batch;
* rewards are gathered so advantages (and ``scale_rewards: batch``) see the whole batch;
* forward passes run *inside* the wrapped module's call (:meth:`Distributed.forward`, :func:`run_as_forward`), so
  DDP's gradient hooks and ZeRO-3's parameter gathering work even though the loss reads hidden states and the
  lm_head weight directly;
* under ZeRO-3, generation runs with the parameters gathered and DeepSpeed's module hooks off.

On CPU (tests, this machine) DeepSpeed runs over gloo: accelerate only knows GPU backends for DeepSpeed, so the
process group is created here with ``backend="gloo"`` when no accelerator is present.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)


def run_as_forward(module: torch.nn.Module, fn: Callable[..., Any], *args: Any, caller: Any = None) -> Any:
    """Call ``fn(*args)`` as if it were ``module``'s forward, so the module's hooks run around it.

    DeepSpeed ZeRO-3 gathers a module's parameters in its forward pre-hook (and again before its backward);
    DDP prepares its gradient reduction in its own forward. Code that reads ``module.weight`` directly (the fused
    log-prob kernels read the lm_head weight) must run this way to see whole parameters and synced gradients.
    ``caller``: the wrapper to call instead of ``module`` itself (DDP or a DeepSpeed engine around it).
    """
    had_own = "forward" in module.__dict__
    original = module.__dict__.get("forward")
    module.forward = fn  # type: ignore[method-assign]
    try:
        return (caller or module)(*args)
    finally:
        if had_own:
            module.forward = original  # type: ignore[method-assign]
        else:
            del module.forward


def _deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _forget_earlier_accelerator() -> None:
    """Drop the settings an earlier ``Accelerator`` of this process left in accelerate's shared state.

    ``AcceleratorState`` is one object per process: an ``Accelerator()`` created after another one (a second run
    in a notebook, a ``transformers.Trainer`` with ``bf16=True`` before it) silently inherits its mixed precision
    and DeepSpeed plugin, so a float32 run would train under bf16 autocast. Each run takes its settings from its
    own launch (the environment ``accelerate launch`` sets); the process group (``PartialState``) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state:
        log.debug("resetting accelerate's state left by an earlier Accelerator in this process")
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


class Distributed:
    """accelerate's Accelerator plus the collective operations GRPO needs. One process works the same way."""

    def __init__(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        handlers, cpu = [], False
        if _launched() and not torch.cuda.is_available():
            if _deepspeed_requested():
                handlers.append(
                    InitProcessGroupKwargs(backend="gloo")
                )  # accelerate knows no CPU DeepSpeed backend
            else:
                cpu = True  # DDP over gloo (`accelerate launch --multi_gpu` / torchrun on a machine without GPUs)
        _forget_earlier_accelerator()
        self.accelerator = Accelerator(cpu=cpu, kwargs_handlers=handlers)
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        plugin = self.accelerator.state.deepspeed_plugin
        self.deepspeed = plugin is not None
        self.zero_stage = int(plugin.zero_stage) if plugin is not None else 0

    def describe(self) -> str:
        kind = (
            f"DeepSpeed ZeRO-{self.zero_stage}"
            if self.deepspeed
            else str(self.accelerator.distributed_type.value)
        )
        return f"{kind}, {self.world} process(es), device {self.device}"

    # -- preparing the model ---------------------------------------------------------------------------------
    def prepare(
        self,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        *,
        rows_per_micro_batch: int,
        gradient_accumulation_steps: int,
        max_grad_norm: float | None,
        bf16: bool,
    ) -> tuple[Any, Any, Any]:
        """Wrap model, optimizer and scheduler (DDP or a DeepSpeed engine); returns the wrapped model and the
        optimizer and scheduler to keep using (under DeepSpeed the engine steps them)."""
        if self.deepspeed:
            ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = rows_per_micro_batch
            ds["gradient_accumulation_steps"] = gradient_accumulation_steps
            ds["train_batch_size"] = rows_per_micro_batch * gradient_accumulation_steps * self.world
            ds["gradient_clipping"] = float(max_grad_norm or 0.0)
            ds.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True
            if bf16:
                ds["bf16"] = {**(ds.get("bf16") or {}), "enabled": True, "check_grad_overflow": True}
            ds.setdefault("steps_per_print", 10**9)
            engine, optimizer, scheduler = self.accelerator.prepare(model, optimizer, scheduler)
            return engine, optimizer, scheduler
        model, optimizer = self.accelerator.prepare(model, optimizer)
        return model, optimizer, scheduler

    def prepare_reference(self, model: Any) -> Any:
        """The frozen reference model: partitioned by DeepSpeed under ZeRO-3, else a copy on this device."""
        if self.deepspeed and self.zero_stage == 3:
            import deepspeed

            ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
            config = {
                "train_micro_batch_size_per_gpu": ds["train_micro_batch_size_per_gpu"],
                "zero_optimization": {"stage": 3},
                "bf16": {"enabled": bool((ds.get("bf16") or {}).get("enabled", False))},
                "fp16": {"enabled": bool((ds.get("fp16") or {}).get("enabled", False))},
            }
            engine, *_ = deepspeed.initialize(model=model, config=config)
            engine.eval()  # DeepSpeedEngine.eval() returns None
            return engine
        return model.to(self.device).eval()

    @contextlib.contextmanager
    def full_parameters_at_load(self) -> Iterator[None]:
        """Load the model whole on every rank, even under ZeRO-3 (no ``zero.Init`` partitioning at construction):
        the trainer copies it for the reference model and edits it (freezing, LoRA) before DeepSpeed partitions
        it. Costs host memory for one full copy per process while loading."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None or self.zero_stage != 3:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # transformers partitions at construction whenever it sees a ZeRO-3 config
        try:
            yield
        finally:
            plugin.set_deepspeed_weakref()

    def unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model)

    # -- running the model -----------------------------------------------------------------------------------
    def forward(self, wrapped: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` through the wrapped model's call (DDP / DeepSpeed hooks), see :func:`run_as_forward`."""
        inner = self.unwrap(wrapped)
        return fn(*args) if inner is wrapped else run_as_forward(inner, fn, *args, caller=wrapped)

    @contextlib.contextmanager
    def generation(self, model: Any) -> Iterator[None]:
        """Context for ``generate``. Under ZeRO-3 the parameters are gathered for the duration and DeepSpeed's
        module hooks are taken off (DeepSpeed's own ``unwrap_model_for_generation``), so decoding needs no
        collectives, ranks decode independently, and the modules a rank's prompts happen to use (the vision tower
        or not) do not enter ZeRO-3's module trace."""
        if self.deepspeed and self.zero_stage == 3:
            from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

            with unwrap_model_for_generation(model):
                yield
        else:
            yield

    def accumulating(self, wrapped: Any, *, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for the forward *and* backward of one micro-batch: DDP skips its gradient all-reduce until
        the last micro-batch of the step (DeepSpeed is told at :meth:`backward`)."""
        if last or self.world == 1 or self.deepspeed:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(wrapped)

    def backward(self, wrapped: Any, loss: torch.Tensor, *, last: bool) -> None:
        """Backward of one micro-batch (inside :meth:`accumulating`); gradients are synchronised on the last."""
        if self.deepspeed:
            wrapped.set_gradient_accumulation_boundary(last)
            wrapped.backward(loss, scale_wrt_gas=False)  # the trainer scales for accumulation itself
            return
        loss.backward()

    def step(
        self,
        wrapped: Any,
        optimizer: Any,
        scheduler: Any,
        params: list[torch.Tensor],
        max_grad_norm: float | None,
    ) -> float:
        """Clip, step optimizer and schedule, zero gradients. Returns the gradient norm before clipping; a
        non-finite norm means the step was skipped (and the gradients dropped)."""
        if self.deepspeed:
            wrapped.step()  # clips, steps optimizer and scheduler, zeroes; skips on non-finite gradients
            norm = wrapped.get_global_grad_norm()
            applied = wrapped.was_step_applied()
            norm = float(norm) if norm is not None else float("nan")
            return norm if applied else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")))
        if torch.isfinite(torch.tensor(norm)):
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def drop_gradients(self, wrapped: Any, optimizer: Any) -> None:
        """Forget accumulated gradients (a skipped step before any backward reached the optimizer)."""
        if self.deepspeed:
            wrapped.zero_grad()
        else:
            optimizer.zero_grad(set_to_none=True)

    # -- collectives -----------------------------------------------------------------------------------------
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor from every rank (rank order) along dim 0; all ranks get the result."""
        if self.world == 1:
            return tensor
        return self.accelerator.gather(tensor.to(self.device).contiguous()).cpu()

    def gather_objects(self, obj: Any) -> list[Any]:
        """One picklable object per rank, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank (a non-finite loss anywhere skips the step everywhere)."""
        return self.sum(0.0 if flag else 1.0) == 0.0

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
