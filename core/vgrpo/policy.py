"""The model being trained, as a GRPO step uses it: per-token log-probs under the policy and the reference, the
loss of a micro-batch inside the wrapped model's forward, and one optimizer step over the micro-batches.

Everything here works on one process or many: the forward runs inside the wrapper (DDP's gradient sync,
ZeRO-3's parameter gathering), a non-finite loss is agreed on by every rank, and the logged statistics are
weighted so they mean the same on any number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.loss import LossOutput, policy_loss
from vgrpo.rollout import Rollout, completion_logprobs

if TYPE_CHECKING:
    from vgrpo.batch import MicroBatch
    from vgrpo.config import TrainConfig
    from vgrpo.distributed import Distributed
    from vgrpo.models.adapters import ModelAdapter


def build_optimizer(
    model: Any, config: TrainConfig, *, lr: float, scheduler: str, warmup_steps: int, steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters (weight decay and betas from ``optim``) and its schedule."""
    from transformers import get_scheduler

    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay)
    schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup_steps, num_training_steps=steps)
    return optimizer, schedule


@dataclass
class StepResult:
    """What one optimizer step did, reduced over processes."""

    finite: bool
    """False when a loss or the gradient was not finite: the step was skipped (its gradients dropped)."""
    loss: float = float("nan")
    kl: float = float("nan")
    clip_ratio: float = float("nan")
    grad_norm: float = float("nan")
    lr: float = float("nan")
    """The learning rate the step used."""


class Policy:
    """The policy (wrapped for the process group), its optimizer and schedule, and its reference."""

    def __init__(
        self,
        config: TrainConfig,
        dist: Distributed,
        adapter: ModelAdapter,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        *,
        reference: Any = None,
        peft_model: Any = None,
    ) -> None:
        self.config = config
        self.dist = dist
        self.adapter = adapter
        self.model = model
        """As trained: wrapped by DDP or a DeepSpeed engine when several processes run."""
        self.unwrapped = dist.unwrap(model)
        """The plain Hugging Face model inside."""
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.reference = reference
        """The frozen starting model for the KL term; None with ``beta: 0`` or with LoRA (adapters disabled)."""
        self.peft_model = peft_model

    # -- log-probs ---------------------------------------------------------------------------------------------
    def logps(self, rollout: Rollout, model: Any = None) -> torch.Tensor:
        """``[N, T]`` log-probs of the completions under ``model`` (default: the policy now), without gradient."""
        with torch.no_grad():
            return completion_logprobs(
                self.dist.unwrap(model if model is not None else self.model),
                self.adapter,
                rollout,
                temperature=self.config.generation.temperature,
                impl=self.config.model.logprobs,
            )

    def reference_logps(self, rollout: Rollout) -> torch.Tensor | None:
        """Log-probs under the model the run started from (None with ``beta: 0``): the reference model, or with
        LoRA the policy with its adapters disabled."""
        if self.config.grpo.beta == 0.0:
            return None
        if self.peft_model is not None:
            with self.peft_model.disable_adapter():  # the base model, as the run started
                return self.logps(rollout)
        return self.logps(rollout, self.reference)

    # -- loss and optimizer step ---------------------------------------------------------------------------------
    def loss(self, batch: MicroBatch, num_items: float) -> LossOutput:
        """The micro-batch's GRPO loss, computed inside the wrapped model's forward (DDP gradient sync, ZeRO-3)."""
        gen = self.config.generation

        def forward() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            out = policy_loss(
                self.unwrapped,
                self.adapter,
                batch,
                self.config.grpo,
                temperature=gen.temperature,
                max_completion_length=gen.max_completion_length,
                num_items=num_items,
                fused=self.config.model.logprobs == "fused",
            )
            return out.loss, out.kl, out.clip_ratio

        loss, kl, clip_ratio = self.dist.forward(self.model, forward)
        return LossOutput(loss=loss, kl=kl.detach(), clip_ratio=clip_ratio.detach())

    def step(self, batches: list[MicroBatch], num_items: float) -> StepResult:
        """One optimizer step over the micro-batches (gradient accumulation). A non-finite loss or gradient
        skips it on every rank and drops the gradients."""
        dist, g = self.dist, self.config.grpo
        ga = len(batches)
        losses, kls, clips = [], [], []
        lr = self.scheduler.get_last_lr()[0]
        for i, batch in enumerate(batches):
            with dist.accumulating(self.model, last=i == ga - 1):
                out = self.loss(batch, num_items)
                loss = out.loss if g.loss_type == "dapo" else out.loss / ga
                finite = dist.deepspeed or dist.all_true(
                    bool(torch.isfinite(loss))
                )  # DeepSpeed checks itself
                if finite:
                    dist.backward(self.model, loss, last=i == ga - 1)
            if not finite:  # every rank skips the step
                dist.drop_gradients(self.model, self.optimizer)
                return StepResult(finite=False, lr=lr)
            losses.append(float(loss.detach()))
            tokens = float(batch.mask.sum())  # weighted statistics mean the same on any number of processes
            kls.append((float(out.kl) * tokens, tokens))
            per = tokens if g.importance_sampling_level == "token" else float(batch.mask.size(0))
            clips.append((float(out.clip_ratio) * per, per))
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = dist.step(
            self.model, self.optimizer, self.scheduler, params, self.config.optim.max_grad_norm
        )
        # agreed by every rank: under DeepSpeed a loss is checked only here, and a rank that left alone would
        # skip the collectives the others make next
        if not dist.all_true(math.isfinite(grad_norm) and all(math.isfinite(x) for x in losses)):
            return StepResult(finite=False, grad_norm=grad_norm, lr=lr)
        return StepResult(
            finite=True,
            loss=dist.mean(sum(losses)),
            grad_norm=grad_norm,
            lr=lr,
            kl=dist.sum(sum(x for x, _ in kls)) / max(dist.sum(sum(w for _, w in kls)), 1.0),
            clip_ratio=dist.sum(sum(x for x, _ in clips)) / max(dist.sum(sum(w for _, w in clips)), 1.0),
        )
