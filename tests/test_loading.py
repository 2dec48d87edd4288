"""Loading a run's models: gradient checkpointing through the name transformers supports, without its warning."""

from __future__ import annotations

import contextlib
import warnings
from types import SimpleNamespace

from vgrpo.config import ModelConfig
from vgrpo.models.adapters import adapter_for
from vgrpo.models.loading import enable_activation_checkpointing, load_run_models
from vgrpo.plugins import get_registry

ONE_PROCESS = SimpleNamespace(world=1, full_parameters_at_load=contextlib.nullcontext)


def test_gradient_checkpointing_is_on_in_every_decoder_layer_without_a_deprecation_warning():
    adapter = adapter_for(get_registry().model_adapters, "auto", "tiny")
    mcfg = ModelConfig(gradient_checkpointing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers' "deprecated and will be removed in v6"
        warnings.simplefilter("error", DeprecationWarning)
        models = load_run_models(adapter, mcfg, seed=0, beta=0.0, dist=ONE_PROCESS)
    layers = [m for m in models.policy.modules() if type(m).__name__.endswith("DecoderLayer")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    plain = load_run_models(adapter, ModelConfig(), seed=0, beta=0.0, dist=ONE_PROCESS).policy
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.modules())


def test_a_transformers_without_activation_checkpointing_enable_gets_the_old_name():
    calls = []
    old = SimpleNamespace(gradient_checkpointing_enable=lambda: calls.append("gradient_checkpointing_enable"))
    new = SimpleNamespace(
        activation_checkpointing_enable=lambda: calls.append("activation_checkpointing_enable"),
        gradient_checkpointing_enable=lambda: calls.append("gradient_checkpointing_enable"),
    )
    enable_activation_checkpointing(old)
    enable_activation_checkpointing(new)
    assert calls == ["gradient_checkpointing_enable", "activation_checkpointing_enable"]
