"""The GRPO objective on the flattened valid tokens of a batch, one chunk of tokens at a time.

The formula mirrors TRL 1.x ``GRPOTrainer._compute_loss`` (and :func:`vgrpo.loss.grpo_loss`) term for term:
``ratio = exp(logp - old)`` (token level) or ``exp(masked mean over the sequence)`` (sequence level),
``-min(ratio * A, clamp(ratio, 1 - eps, 1 + eps_high) * A) + beta * k3``, masked and normalised per loss type.
Each token's normaliser is folded into a per-token weight up front, so the loss of a chunk of tokens is a plain
weighted sum and its gradient with respect to the chunk's log-probs comes from autograd on O(chunk) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IS_LEVELS = ("token", "sequence")


@dataclass
class Objective:
    """Per-token inputs of the GRPO loss for the ``n`` tokens with a non-zero mask, in row-major order."""

    weight: torch.Tensor  # [n] fp32: mask value / the loss type's normaliser
    mask: torch.Tensor  # [n] fp32 mask values (used by the sequence-level mean)
    advantages: torch.Tensor  # [n] fp32: each token's sequence advantage (times its token weight, if any)
    seq_advantages: torch.Tensor  # [B] fp32
    old: torch.Tensor | None  # [n] fp32, None = on-policy (old = logp.detach())
    ref: torch.Tensor | None  # [n] fp32, needed when beta != 0
    seq: torch.Tensor  # [n] long: the sequence (row of the batch) each token belongs to
    inv_len: torch.Tensor  # [B] fp32: 1 / max(1, masked tokens of the sequence)
    epsilon: float
    epsilon_high: float
    beta: float
    level: str

    @classmethod
    def build(
        cls,
        mask: torch.Tensor,
        advantages: torch.Tensor,
        old_logps: torch.Tensor | None,
        ref_logps: torch.Tensor | None,
        *,
        loss_type: str,
        epsilon: float,
        epsilon_high: float | None,
        beta: float,
        level: str,
        max_completion_length: int | None,
        num_items: float | torch.Tensor | None,
        token_weights: torch.Tensor | None = None,
    ) -> tuple[Objective, torch.Tensor]:
        """The objective for a ``[B, T]`` batch, and the flat indices of its valid (mask != 0) tokens."""
        b, t = mask.shape
        m = mask.to(torch.float32)
        lengths = m.sum(-1).clamp(min=1.0)
        if loss_type == "grpo":
            weight = m / (lengths[:, None] * b)
        elif loss_type == "bnpo":
            weight = m / m.sum().clamp(min=1.0)
        elif loss_type == "dr_grpo":
            weight = m / float(b * max_completion_length)  # type: ignore[operator]
        else:  # dapo
            denom = m.sum() if num_items is None else torch.as_tensor(num_items, dtype=torch.float32)
            weight = m / denom.to(m.device).clamp(min=1.0)
        idx = (m != 0).reshape(-1).nonzero().squeeze(1)
        adv = advantages.detach().to(torch.float32)

        def flat(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.detach().to(torch.float32).reshape(-1).index_select(0, idx)

        seq = torch.arange(b, device=mask.device).repeat_interleave(t).index_select(0, idx)
        objective = cls(
            weight=flat(weight),
            mask=flat(m),
            # a token weight (> 0, the rollout correction) scales the token's surrogate: its advantage
            advantages=adv.index_select(0, seq) * (1.0 if token_weights is None else flat(token_weights)),
            seq_advantages=adv,
            old=flat(old_logps),
            ref=flat(ref_logps),
            seq=seq,
            inv_len=1.0 / lengths,
            epsilon=epsilon,
            epsilon_high=epsilon if epsilon_high is None else epsilon_high,
            beta=beta,
            level=level,
        )
        return objective, idx

    def log_ratio(self, logp: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Log importance weights of tokens ``start:end`` (whole sequences only, at sequence level)."""
        old = logp.detach() if self.old is None else self.old[start:end]
        log_ratio = logp - old
        if self.level == "token" or logp.numel() == 0:
            return log_ratio
        seq = self.seq[start:end]
        first = int(seq[0])
        local = seq - first
        sums = torch.zeros(int(local[-1]) + 1, dtype=log_ratio.dtype, device=logp.device)
        sums = sums.index_add(0, local, log_ratio * self.mask[start:end])
        per_seq = sums * self.inv_len[first : first + sums.numel()]
        return per_seq.index_select(0, local)

    def token_loss(self, logp: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """TRL's per-token loss (before masking) of tokens ``start:end`` given their log-probs."""
        ratio = torch.exp(self.log_ratio(logp, start, end))
        clipped = torch.clamp(ratio, 1 - self.epsilon, 1 + self.epsilon_high)
        adv = self.advantages[start:end]
        per_token = -torch.min(ratio * adv, clipped * adv)
        if self.beta != 0.0:
            delta = self.ref[start:end] - logp  # type: ignore[index]
            per_token = per_token + self.beta * (torch.exp(delta) - delta - 1)
        return per_token

    def chunk_loss(self, logp: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """This chunk's share of the batch loss (the weighted sum of its per-token losses)."""
        return (self.token_loss(logp, start, end) * self.weight[start:end]).sum()

    def loss_and_grad(
        self, logp: torch.Tensor, start: int, end: int, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The chunk's loss and, when asked, its gradient with respect to the chunk's log-probs."""
        if not need_grad:
            return self.chunk_loss(logp, start, end), None
        with torch.enable_grad():
            x = logp.detach().requires_grad_(True)
            loss = self.chunk_loss(x, start, end)
            (grad,) = torch.autograd.grad(loss, x)
        return loss.detach(), grad

    def chunk_bounds(self, rows: int) -> list[tuple[int, int]] | None:
        """Token ranges of at most ``rows`` tokens; at sequence level whole sequences (None: one is too long)."""
        n = self.seq.numel()
        if self.level == "token":
            return [(s, min(s + rows, n)) for s in range(0, n, rows)]
        counts = torch.bincount(self.seq, minlength=self.inv_len.numel()).tolist()
        if max(counts, default=0) > rows:
            return None
        bounds, start, size = [], 0, 0
        for c in counts:
            if size + c > rows and size:
                bounds.append((start, start + size))
                start, size = start + size, 0
            size += c
        if size:
            bounds.append((start, start + size))
        return bounds

    @torch.no_grad()
    def stats(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean k3 KL over valid tokens and the clipped share, as :func:`vgrpo.loss.grpo_loss` reports them."""
        n_tokens = self.mask.sum().clamp(min=1.0)
        kl = torch.zeros((), device=logp.device)
        if self.beta != 0.0:
            delta = self.ref - logp  # type: ignore[operator]
            kl = ((torch.exp(delta) - delta - 1) * self.mask).sum() / n_tokens
        adv = self.advantages
        if self.level == "token":
            ratio = torch.exp(self.log_ratio(logp, 0, logp.numel()))
            region = ((ratio < 1 - self.epsilon) & (adv < 0)) | ((ratio > 1 + self.epsilon_high) & (adv > 0))
            return kl, (region.float() * self.mask).sum() / n_tokens
        b = self.inv_len.numel()
        old = logp if self.old is None else self.old
        sums = torch.zeros(b, device=logp.device).index_add(0, self.seq, (logp - old) * self.mask)
        ratio = torch.exp(sums * self.inv_len)
        seq_adv = self.seq_advantages
        region = ((ratio < 1 - self.epsilon) & (seq_adv < 0)) | (
            (ratio > 1 + self.epsilon_high) & (seq_adv > 0)
        )
        return kl, region.float().mean()
