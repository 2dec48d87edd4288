"""A run takes accelerate's settings from its own launch, not from an earlier Accelerator in the process."""

from __future__ import annotations

import torch

from vgrpo.distributed import Distributed


def test_a_run_after_a_bf16_accelerator_in_the_same_process_computes_in_float32():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a state left by this session's earlier tests would refuse bf16 here
    earlier = Accelerator(cpu=True, mixed_precision="bf16")  # e.g. a transformers Trainer with bf16=True
    assert earlier.mixed_precision == "bf16"
    dist = Distributed()
    assert dist.accelerator.mixed_precision == "no"
    layer = torch.nn.Linear(8, 8)
    model, _, _ = dist.prepare(
        layer,
        torch.optim.SGD(layer.parameters(), lr=0.1),
        None,
        rows_per_micro_batch=1,
        gradient_accumulation_steps=1,
        max_grad_norm=None,
        bf16=False,
    )
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(model(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
