"""Rollout on the tiny model: masks end at EOS, log-probs match the model's own logits, fused == naive."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vgrpo.config import GenerationConfig
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.rollout import completion_logprobs, end_of_sequence_mask, eos_token_ids, sample, visual_token_ids


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
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find it."}]}]
    ] * 3 + [[{"role": "user", "content": [{"type": "text", "text": "2 + 3?"}]}]] * 3
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
        ref = torch.log_softmax(logits[:, p - 1 : -1].float() / 0.7, -1).gather(
            -1, r.completion_ids.unsqueeze(-1)
        )
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


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 0, 0.9), (1.0, 3, 1.0), (1.3, 0, 1.0)])
def test_seeded_sampling_draws_from_the_warped_distribution(temperature, top_k, top_p):
    from vgrpo.rollout import SeededSampling

    logits = torch.tensor([[2.0, 1.5, 0.3, -0.2, -1.0, 0.9]])
    n, vocab = 40_000, logits.size(1)
    drawn = SeededSampling(list(range(n)), temperature, top_k, top_p)(None, logits.expand(n, vocab).clone())
    assert bool(((drawn == 0) | (drawn == float("-inf"))).all()) and bool(((drawn == 0).sum(-1) == 1).all())
    observed = torch.bincount(drawn.argmax(-1), minlength=vocab).double() / n
    p = torch.softmax(logits[0].double() / temperature, -1)
    order = p.argsort(descending=True)
    keep = torch.zeros(vocab, dtype=torch.bool)
    mass = 0.0
    for rank, token in enumerate(order.tolist()):  # top-k, then top-p: keep while the mass before is < top_p
        if (top_k and rank >= top_k) or mass >= top_p:
            break
        keep[token] = True
        mass += float(p[token]) / float(p[order[:top_k]].sum() if top_k else 1.0)
    expected = torch.where(keep, p, 0.0)
    expected /= expected.sum()
    assert (observed - expected).abs().max() < 0.01


def test_seeded_sampling_does_not_depend_on_the_other_rows_of_the_batch():
    from vgrpo.rollout import SeededSampling

    together = SeededSampling(list(range(10, 26)), temperature=0.9)
    halves = (
        SeededSampling(list(range(10, 18)), temperature=0.9),
        SeededSampling(list(range(18, 26)), temperature=0.9),
    )
    torch.manual_seed(0)
    for _ in range(SeededSampling.BLOCK + 5):  # past one block of drawn numbers
        scores = torch.randn(16, 50)
        a = together(None, scores).argmax(-1)
        b = torch.cat([halves[0](None, scores[:8]).argmax(-1), halves[1](None, scores[8:]).argmax(-1)])
        assert torch.equal(a, b)


def test_sampling_ignores_a_repetition_penalty_from_the_generation_config(monkeypatch):
    """The loss scores completions under the plain softmax; a penalty the model's generation_config carries
    (Qwen2.5-VL-Instruct ships 1.05) must not bend the sampling distribution away from it."""
    from vgrpo.models.tiny import build_tiny
    from vgrpo.rollout import SeededSampling

    model, processor = build_tiny(0)
    model.generation_config.repetition_penalty = 1.5
    seen = []
    real_call = SeededSampling.__call__

    def spy(self, input_ids, scores):
        seen.append((input_ids.clone(), scores.clone()))
        return real_call(self, input_ids, scores)

    monkeypatch.setattr(SeededSampling, "__call__", spy)
    inputs = processor.tokenizer(["hello"], return_tensors="pt")
    sample(
        model,
        processor,
        dict(inputs),
        GenerationConfig(max_completion_length=6),
        eos_token_ids(model, processor),
        seeds=[3],
    )
    for ids, scores in seen:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
        kept = torch.isfinite(scores)  # only the image placeholder tokens are suppressed
        assert sorted(torch.nonzero(~kept[0]).flatten().tolist()) == visual_token_ids(model)
        assert torch.allclose(scores.float()[kept], logits[kept], atol=1e-5)
