"""Bad input to the log-prob kernels raises a ValueError naming the problem, before any compute."""

from __future__ import annotations

import pytest
import torch

from vgrpo.kernels import fused_grpo_loss, token_logprobs


def args(n=4, h=8, v=10, dtype=torch.float32):
    return torch.randn(n, h, dtype=dtype), torch.randn(v, h, dtype=dtype), torch.randint(0, v, (n,))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda h, w, t: (h, w, torch.tensor([0, 1, 10, 2])),
            r"targets\[2\] = 10 is outside the vocabulary \[0, 10\)",
        ),
        (lambda h, w, t: (h, w, torch.tensor([0, -5, 1, 2])), r"targets\[1\] = -5 .* or ignore_index=-100"),
        (lambda h, w, t: (h, w, t[:3]), r"targets must have hidden's leading shape \(4,\)"),
        (lambda h, w, t: (h, w[:, :7], t), r"hidden size mismatch: hidden has H=8"),
        (lambda h, w, t: (h[0], w, t), r"hidden must be \[\.\.\., H\]"),
        (lambda h, w, t: (h, w[None], t), r"weight must be \[V, H\]"),
        (
            lambda h, w, t: (h, w.double(), t),
            r"weight dtype torch.float64 differs from hidden dtype torch.float32",
        ),
        (lambda h, w, t: (h.double(), w.double(), t), r"hidden must be float32, bfloat16 or float16"),
        (lambda h, w, t: (h, w, t.float()), r"targets must be an integer tensor"),
        (lambda h, w, t: (h, w, t.to("meta")), r"must be on one device"),
        (lambda h, w, t: (h, w[:0], t), r"empty vocabulary"),
    ],
)
def test_token_logprobs_rejects(mutate, match):
    with pytest.raises(ValueError, match=match):
        token_logprobs(*mutate(*args()))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        token_logprobs(*args(), temperature=temperature)


def test_bad_bias():
    h, w, t = args()
    with pytest.raises(ValueError, match=r"bias must be a \[V\] = \[10\] tensor"):
        token_logprobs(h, w, t, bias=torch.zeros(9))
    with pytest.raises(ValueError, match="bias dtype torch.float16 differs"):
        token_logprobs(h, w, t, bias=torch.zeros(10, dtype=torch.float16))


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="backend must be 'auto', 'torch' or 'triton'"):
        token_logprobs(*args(), backend="cuda")  # type: ignore[arg-type]


def test_validation_happens_before_compute(monkeypatch):
    import vgrpo.kernels.chunked as chunked

    def boom(*a, **k):
        raise AssertionError("computed before validating")

    monkeypatch.setattr(chunked.TokenLogprobs, "apply", boom)
    monkeypatch.setattr(chunked.FusedLoss, "apply", boom)
    h, w, _ = args()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        token_logprobs(h, w, torch.tensor([0, 1, 2, 99]))
    hb, ids = h.reshape(2, 2, 8), torch.tensor([[0, 1], [2, 99]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fused_grpo_loss(hb, w, ids, torch.zeros(2), torch.ones(2, 2))


def grpo_args():
    h, w, _ = args(6)
    return h.reshape(2, 3, 8), w, torch.randint(0, 10, (2, 3)), torch.zeros(2), torch.ones(2, 3)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(mask=torch.ones(2, 4)), r"mask must be \[B, T\] = \[2, 3\]"),
        (dict(advantages=torch.zeros(2, 3)), r"advantages must be \[B\] = \[2\]"),
        (dict(old_logps=torch.zeros(3, 2)), r"old_logps must be \[B, T\]"),
        (dict(loss_type="ppo"), "loss_type must be one of grpo, bnpo, dr_grpo, dapo"),
        (dict(importance_sampling_level="batch"), "importance_sampling_level must be 'token' or 'sequence'"),
        (dict(beta=0.1), "beta != 0 needs ref_logps"),
        (dict(loss_type="dr_grpo"), "needs max_completion_length"),
        (dict(hidden=torch.zeros(6, 8)), r"hidden must be \[B, T, H\]"),
        (dict(mask=torch.ones(2, 3, device="meta")), "mask is on meta"),
    ],
)
def test_fused_grpo_loss_rejects(change, match):
    h, w, ids, adv, mask = grpo_args()
    kw = dict(
        hidden=h,
        weight=w,
        targets=ids if "hidden" not in change else ids.reshape(-1),
        advantages=adv,
        mask=mask,
    )
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        fused_grpo_loss(**kw)


def test_masked_positions_may_hold_any_id():
    h, w, ids, adv, mask = grpo_args()
    ids[1, 2] = 12345  # padding: not a token id, but masked out
    mask[1, 2] = 0
    out = fused_grpo_loss(h, w, ids, adv, mask)
    assert torch.isfinite(out.loss) and out.logps[1, 2] == 0
