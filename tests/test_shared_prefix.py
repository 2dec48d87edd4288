"""Shared-prefix passes equal the repeated-prompt path: hidden states, per-token log-probs, the GRPO loss and
every parameter's gradient, on the tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL models, with left-padded prompts of
different lengths, images of different sizes, a text-only row and completions ending at different lengths.
The repeated path (one forward pass over each repeated prompt + completion) is the independent oracle."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from PIL import Image

from vgrpo.batch import MicroBatch
from vgrpo.config import GenerationConfig, GrpoConfig, ModelConfig
from vgrpo.errors import ParamsError
from vgrpo.loss import policy_loss
from vgrpo.models.adapters import ModelAdapter, Qwen2VLAdapter, Qwen3VLAdapter, Qwen25VLAdapter
from vgrpo.models.shared_prefix import backbone, use_shared_prefix
from vgrpo.models.tiny import build_tiny
from vgrpo.prompts import PromptGroups
from vgrpo.rollout import Rollout, completion_hidden, completion_logprobs, eos_token_ids, sample

ADAPTERS = {"qwen2_vl": Qwen2VLAdapter(), "qwen2_5_vl": Qwen25VLAdapter(), "qwen3_vl": Qwen3VLAdapter()}
RTOL = 1e-5

PROMPTS = [
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the red square?"}]}],
    [{"role": "user", "content": [{"type": "text", "text": "What is 12 + 30? Think first, then answer."}]}],
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count"}]}],
]
IMAGES = [[Image.new("RGB", (112, 84), (200, 10, 10))], [], [Image.new("RGB", (56, 56), (0, 200, 10))]]
COUNTS = [2, 3, 2]
LENGTHS = [6, 3, 1, 5, 6, 2, 4]  # tokens up to and including the end of each completion
T = 6


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def family(request: pytest.FixtureRequest) -> tuple[Any, Any, ModelAdapter]:
    model, processor = build_tiny(seed=1, family=request.param)
    return model.float(), processor, ADAPTERS[request.param]


def _rollouts(processor: Any, adapter: ModelAdapter) -> tuple[Rollout, Rollout]:
    """(repeated, shared) rollouts of the same completions."""
    unique = adapter.encode(processor, PROMPTS, IMAGES, group_size=1)
    repeated = adapter.encode(processor, PROMPTS, IMAGES, group_size=COUNTS)
    n = sum(COUNTS)
    ids = torch.randint(0, 256, (n, T), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]).float()
    truncated = torch.zeros(n, dtype=torch.bool)
    plain = Rollout(dict(repeated), ids, mask, truncated, [""] * n)
    shared = Rollout(
        dict(repeated), ids, mask, truncated, [""] * n, groups=PromptGroups(dict(unique), list(COUNTS))
    )
    return plain, shared


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = float(expected.detach().abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{what}: {m}")


def test_the_batch_has_what_the_test_is_about(family):
    _, processor, adapter = family
    unique = adapter.encode(processor, PROMPTS, IMAGES, group_size=1)
    valid = unique["attention_mask"].sum(1)
    assert len(set(valid.tolist())) == 3 and bool((unique["attention_mask"][:, 0] == 0).any())  # left-padded
    grids = unique["image_grid_thw"]
    assert grids.size(0) == 2 and not torch.equal(grids[0], grids[1])  # two images of different sizes


def test_hidden_states_equal_the_repeated_path(family):
    model, processor, adapter = family
    plain, shared = _rollouts(processor, adapter)
    with torch.no_grad():
        expected, _ = completion_hidden(model, adapter, plain)
        actual, _ = completion_hidden(model, adapter, shared)
    keep = plain.completion_mask.bool()
    assert actual.shape == expected.shape
    _close(actual[keep], expected[keep], "hidden states")


def test_the_shared_path_takes_compute_3d_position_ids_with_past_key_values_as_before_transformers_5_24(
    family, monkeypatch
):
    """Before 5.24 the cache argument of ``compute_3d_position_ids`` is a required ``past_key_values``."""
    model, processor, adapter = family
    _, shared = _rollouts(processor, adapter)
    base = backbone(model)
    current = base.compute_3d_position_ids
    params = [p for p in inspect.signature(current).parameters.values() if p.name != "cache"]
    old = inspect.Signature([*params, inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY)])
    calls = []

    def before_5_24(*args, **kwargs):
        if "cache" in kwargs:  # the model's own forward, which has the current signature
            return current(*args, **kwargs)
        old.bind(*args, **kwargs)  # a TypeError, as there, without past_key_values or with cache
        calls.append(kwargs)
        return current(*args, cache=kwargs.pop("past_key_values"), **kwargs)

    before_5_24.__signature__ = old
    with torch.no_grad():
        expected, _ = completion_hidden(model, adapter, shared)
        monkeypatch.setattr(base, "compute_3d_position_ids", before_5_24)
        actual, _ = completion_hidden(model, adapter, shared)
    assert calls, "the shared path computes its positions itself"
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_per_token_logprobs_equal_the_repeated_path(family, impl):
    model, processor, adapter = family
    plain, shared = _rollouts(processor, adapter)
    with torch.no_grad():
        expected = completion_logprobs(model, adapter, plain, temperature=0.9, impl=impl)
        actual = completion_logprobs(model, adapter, shared, temperature=0.9, impl=impl)
    assert bool((actual[plain.completion_mask == 0] == 0).all())
    _close(actual, expected, "log-probs")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
def test_loss_and_every_gradient_equal_the_repeated_path(family, fused):
    """Gradients from all G completions reach the shared prompt: the vision tower's and the embedding's
    gradients (only the prompt reaches the tower) equal the repeated path's."""
    model, processor, adapter = family
    plain, shared = _rollouts(processor, adapter)
    n = sum(COUNTS)
    gen = torch.Generator().manual_seed(2)
    advantages = torch.randn(n, generator=gen)
    with torch.no_grad():
        base = completion_logprobs(model, adapter, plain)
    old = base + 0.05 * torch.randn(base.shape, generator=gen)  # ratios away from 1: clipping has work
    ref = base + 0.1 * torch.randn(base.shape, generator=gen)
    grpo = GrpoConfig(beta=0.04, num_generations=2)
    results = []
    for rollout in (plain, shared):
        batch = MicroBatch(rollout, advantages, rollout.completion_mask, old * rollout.completion_mask, ref)
        model.zero_grad(set_to_none=True)
        out = policy_loss(
            model, adapter, batch, grpo, temperature=1.0, max_completion_length=T, num_items=20.0, fused=fused
        )
        out.loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (expected, expected_grads), (actual, actual_grads) = results
    _close(actual.loss, expected.loss, "loss")
    _close(actual.kl, expected.kl, "kl")
    _close(actual.clip_ratio, expected.clip_ratio, "clip ratio")
    assert sorted(actual_grads) == sorted(expected_grads)
    assert any(adapter.vision_parameters(model)) and any("visual" in k for k in actual_grads)
    for name, grad in expected_grads.items():
        _close(actual_grads[name], grad, f"gradient of {name}")
    model.zero_grad(set_to_none=True)


def test_a_batch_without_images_shares_its_prompts_too(family):
    model, processor, adapter = family
    prompts, images, counts = [PROMPTS[1], PROMPTS[1][:]], [[], []], [3, 1]
    prompts[1] = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    unique = adapter.encode(processor, prompts, images, group_size=1)
    repeated = adapter.encode(processor, prompts, images, group_size=counts)
    ids = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    plain = Rollout(dict(repeated), ids, mask, torch.zeros(4, dtype=torch.bool), [""] * 4)
    shared = Rollout(
        dict(repeated), ids, mask, plain.truncated, [""] * 4, groups=PromptGroups(dict(unique), counts)
    )
    with torch.no_grad():
        _close(
            completion_logprobs(model, adapter, shared), completion_logprobs(model, adapter, plain), "logps"
        )


def test_prompts_sharing_an_image_run_it_through_the_vision_tower_once(family):
    """Two questions about one image (REC data often asks several): the tower sees it once per pass, and the
    log-probs and the gradients (the image's summed over both prompts' completions) equal the repeated path's."""
    model, processor, adapter = family
    again = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a square?"}]}]
    prompts, images, counts = [*PROMPTS, again], [*IMAGES, IMAGES[0]], [2, 1, 2, 3]
    unique = adapter.encode(processor, prompts, images, group_size=1)
    repeated = adapter.encode(processor, prompts, images, group_size=counts)
    n, length = sum(counts), 5
    ids = torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(4))
    mask = (torch.arange(length)[None] < torch.tensor([5, 2, 1, 4, 5, 3, 1, 5])[:, None]).float()
    results, seen = [], []
    handle = model.model.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        for groups in (None, PromptGroups(dict(unique), counts)):
            model.zero_grad(set_to_none=True)
            rollout = Rollout(
                dict(repeated), ids, mask, torch.zeros(n, dtype=torch.bool), [""] * n, groups=groups
            )
            logps = completion_logprobs(model, adapter, rollout)
            (logps * torch.linspace(-1, 1, n).unsqueeze(1)).sum().backward()
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            results.append((logps.detach(), grads))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    blocks = torch.split(unique["pixel_values"], unique["image_grid_thw"].prod(-1).tolist())
    distinct = blocks[0].size(0) + blocks[1].size(0)  # the last prompt's image is the first's
    assert torch.equal(blocks[2], blocks[0]) and seen == [int(repeated["pixel_values"].size(0)), distinct]
    (expected, expected_grads), (actual, actual_grads) = results
    _close(actual, expected, "log-probs")
    for name, grad in expected_grads.items():
        _close(actual_grads[name], grad, f"gradient of {name}")


# -- generation ---------------------------------------------------------------------------------------------------
def _vision_rows(model: Any) -> tuple[list[int], Any]:
    seen: list[int] = []
    handle = model.model.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    return seen, handle


@pytest.mark.parametrize("greedy", [False, True], ids=["seeded", "greedy"])
def test_generation_from_a_shared_prefill_samples_the_same_completions(family, greedy):
    """Each prompt is prefilled once (the vision tower sees each image once) and sampling continues from its
    cache repeated G ways: the same tokens as G prefills."""
    model, processor, adapter = family
    model.eval()
    unique = adapter.encode(processor, PROMPTS, IMAGES, group_size=1)
    repeated = adapter.encode(processor, PROMPTS, IMAGES, group_size=COUNTS)
    gen = GenerationConfig(max_completion_length=10, temperature=1.0)
    eos, seeds = eos_token_ids(model, processor), list(range(sum(COUNTS)))
    groups = PromptGroups(dict(unique), list(COUNTS))
    seen, handle = _vision_rows(model)
    try:
        plain = sample(model, processor, dict(repeated), gen, eos, greedy=greedy, seeds=seeds)
        repeated_patches = list(seen)
        seen.clear()
        shared = sample(
            model,
            processor,
            dict(repeated),
            gen,
            eos,
            greedy=greedy,
            seeds=seeds,
            groups=groups,
            adapter=adapter,
        )
    finally:
        handle.remove()
        model.train()
    assert torch.equal(shared.completion_ids, plain.completion_ids)
    assert torch.equal(shared.completion_mask, plain.completion_mask) and shared.texts == plain.texts
    assert shared.groups is groups and plain.groups is None
    patches = int(unique["pixel_values"].size(0))
    assert repeated_patches == [int(repeated["pixel_values"].size(0))] and seen == [patches]


def test_an_adapter_without_a_generation_prefix_prefills_every_row(family):
    model, _, _ = family
    assert ModelAdapter().generation_prefix(model, {}, [1]) is None


# -- the setting ------------------------------------------------------------------------------------------------
class _NoSharing(ModelAdapter):
    name = "acme.nosharing"


def test_auto_uses_it_where_the_adapter_supports_it(family):
    model, _, adapter = family
    assert use_shared_prefix("auto", adapter, model) is True
    assert use_shared_prefix("off", adapter, model) is False
    assert use_shared_prefix("auto", _NoSharing(), model) is False  # the generic default: not supported


def test_on_with_an_adapter_without_support_names_the_adapter(family):
    model, _, _ = family
    with pytest.raises(ParamsError, match=r"shared_prefix: on.*'acme\.nosharing'.*auto or off"):
        use_shared_prefix("on", _NoSharing(), model)


def test_an_adapter_written_before_shared_prefix_existed_runs_without_it(family):
    """A duck-typed adapter without the optional methods (the contract grows the pluggy way)."""
    model, _, _ = family

    class Old:
        name = "acme.old"

    assert use_shared_prefix("auto", Old(), model) is False  # type: ignore[arg-type]
    with pytest.raises(ParamsError, match="acme.old"):
        use_shared_prefix("on", Old(), model)  # type: ignore[arg-type]


def test_the_config_refuses_on_with_gradient_checkpointing():
    with pytest.raises(ValueError, match="shared_prefix: on needs model.gradient_checkpointing: false"):
        ModelConfig(shared_prefix="on", gradient_checkpointing=True)
    assert ModelConfig().shared_prefix == "auto"
    assert ModelConfig(shared_prefix=True).shared_prefix == "on"  # YAML reads a bare on as true
    assert ModelConfig(shared_prefix=False).shared_prefix == "off"
    assert ModelConfig(gradient_checkpointing=True).shared_prefix == "auto"  # auto turns itself off
