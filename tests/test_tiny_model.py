"""The embedded tiny Qwen2.5-VL: built offline, deterministic, generates (greedy is reproducible, stops at
EOS, never writes a visual placeholder when they are suppressed), and round-trips through disk."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from vgrpo.models import tiny as tiny_model
from vgrpo.models.tiny import TAG_TOKENS, VOCAB_SIZE, build_tiny, load_tiny_processor, save_tiny
from vgrpo.rollout import visual_token_ids

PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def _inputs(processor, rows: int = 1):
    content = [{"type": "image"}, {"type": "text", "text": "How many circles?"}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [Image.new("RGB", (224, 224), "red")] * rows
    return processor(text=[text] * rows, images=images, return_tensors="pt")


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny(seed=0)
    return model.eval(), processor


def _new_tokens(model, inputs, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(**inputs, pad_token_id=model.generation_config.pad_token_id, **kw)
    return out[:, inputs["input_ids"].shape[1] :]


def test_an_image_prompt_has_one_placeholder_per_merged_patch(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4 == 16  # 224² → 112² → 8×8 patches → 16
    assert model.lm_head.weight.shape[0] == VOCAB_SIZE >= len(processor.tokenizer)


def test_greedy_generation_is_deterministic_and_stops_at_the_end_of_sequence_token(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    tok = processor.tokenizer
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    free = _new_tokens(model, inputs, max_new_tokens=12, do_sample=False, eos_token_id=[])[0].tolist()
    assert _new_tokens(model, inputs, max_new_tokens=12, do_sample=False, eos_token_id=[])[0].tolist() == free
    assert all(0 <= t < VOCAB_SIZE for t in free)
    # Declare a later token of the free-running path the end of sequence: generation stops right after it.
    stop = next(i for i, t in enumerate(free) if i >= 1 and t not in free[:i])
    stopped = _new_tokens(model, inputs, max_new_tokens=12, do_sample=False, eos_token_id=free[stop])
    assert stopped[0].tolist() == free[: stop + 1]


def test_suppressed_visual_placeholders_never_appear_in_a_completion(tiny):
    """The head is scaled so that, unsuppressed, greedy decoding picks a placeholder; suppressed, never."""
    model, processor = tiny
    tok = processor.tokenizer
    placeholders = visual_token_ids(model)
    assert placeholders == sorted(tok.convert_tokens_to_ids(t) for t in PLACEHOLDERS)
    assert set(placeholders) <= {tok.convert_tokens_to_ids(t) for t in tiny_model.SPECIAL_TOKENS}
    biased = copy.deepcopy(model)
    with torch.no_grad():
        biased.lm_head.weight[placeholders] *= 1000.0
    inputs = _inputs(processor, rows=4)
    loose = _new_tokens(biased, inputs, max_new_tokens=4, do_sample=False, eos_token_id=[])
    assert torch.isin(loose, torch.tensor(placeholders)).any()  # the test has teeth
    torch.manual_seed(0)
    sampled = _new_tokens(biased, inputs, max_new_tokens=8, do_sample=True, suppress_tokens=placeholders)
    greedy = _new_tokens(biased, inputs, max_new_tokens=8, do_sample=False, suppress_tokens=placeholders)
    for ids in (sampled, greedy):
        assert not torch.isin(ids, torch.tensor(placeholders)).any()
        assert bool(((ids >= 0) & (ids < VOCAB_SIZE)).all())


def test_tags_are_single_tokens_and_text_round_trips():
    _, processor = build_tiny()
    tok = processor.tokenizer
    for tag in TAG_TOKENS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    text = "<think>Voilà: 3 ≠ 4 🙂</think><answer>3</answer>"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_same_seed_same_weights_and_save_load_round_trip(tmp_path):
    a, _ = build_tiny(seed=1)
    b, _ = build_tiny(seed=1)
    c, _ = build_tiny(seed=2)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    path = save_tiny(tmp_path / "tiny", seed=1)
    from transformers import AutoModelForImageTextToText

    loaded = AutoModelForImageTextToText.from_pretrained(path)
    assert torch.equal(loaded.lm_head.weight, a.lm_head.weight)
    processor = load_tiny_processor(path)
    assert processor(text=["<think>"], return_tensors="pt")["input_ids"].shape == (1, 1)
