"""Rollout on the tiny model: masks end at EOS, log-probs match the model's own logits, fused == naive."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vgrpo.config import GenerationConfig
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.rollout import completion_logprobs, end_of_sequence_mask, eos_token_ids, sample


def test_end_of_sequence_mask():
    ids = torch.tensor([[5, 9, 7, 7], [5, 5, 5, 5], [9, 1, 1, 1]])
    mask, truncated = end_of_sequence_mask(ids, [9])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


@pytest.fixture(scope="module")
def rollout():
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    model.eval()
    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find it."}]}]] * 3 + [
        [{"role": "user", "content": [{"type": "text", "text": "2 + 3?"}]}]
    ] * 3
    images = [[Image.new("RGB", (224, 224), "blue")]] * 3 + [[]] * 3
    inputs = adapter.encode(processor, messages, images)
    torch.manual_seed(0)
    gen = GenerationConfig(max_completion_length=12, temperature=1.0)
    return adapter, model, sample(model, processor, dict(inputs), gen, eos_token_ids(model, processor))


def test_sample_gives_one_masked_completion_per_row(rollout):
    _, _, r = rollout
    assert r.completion_ids.shape == (6, 12) and len(r.texts) == 6
    assert torch.all(r.completion_mask[:, 0] == 1) and torch.all(r.lengths <= 12)
    assert torch.all(r.lengths[r.truncated] == 12)  # a truncated completion used every token


@pytest.mark.parametrize("impl", ["naive", "fused"])
def test_logprobs_equal_log_softmax_of_the_models_own_logits(rollout, impl):
    adapter, model, r = rollout
    with torch.no_grad():
        ours = completion_logprobs(model, adapter, r, temperature=0.7, impl=impl)
        ids = torch.cat([r.inputs["input_ids"], r.completion_ids], 1)
        attn = torch.cat([r.inputs["attention_mask"], r.completion_mask.long()], 1)
        extra = {k: v for k, v in r.inputs.items() if k in ("pixel_values", "image_grid_thw")}
        mm = torch.cat([r.inputs["mm_token_type_ids"], torch.zeros_like(r.completion_ids)], 1)
        logits = model(input_ids=ids, attention_mask=attn, mm_token_type_ids=mm, **extra).logits
        p = r.inputs["input_ids"].size(1)
        ref = torch.log_softmax(logits[:, p - 1 : -1].float() / 0.7, -1).gather(-1, r.completion_ids.unsqueeze(-1))
    torch.testing.assert_close(ours, ref.squeeze(-1) * r.completion_mask, atol=1e-5, rtol=1e-5)


def test_fused_and_naive_gradients_agree(rollout):
    adapter, model, r = rollout
    grads = []
    for impl in ("naive", "fused"):
        model.zero_grad()
        lp = completion_logprobs(model, adapter, r, impl=impl)
        (lp.sum() / r.completion_mask.sum()).backward()
        grads.append(model.lm_head.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_visual_placeholder_tokens_are_never_sampled(rollout):
    from vgrpo.rollout import visual_token_ids

    _, model, r = rollout
    banned = visual_token_ids(model)
    assert model.config.image_token_id in banned and len(banned) == 4
    assert not torch.isin(r.completion_ids, torch.tensor(banned)).any()
