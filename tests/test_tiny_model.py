"""The embedded tiny Qwen2.5-VL: built offline, deterministic, generates, and round-trips through disk."""

from __future__ import annotations

import torch
from PIL import Image

from vgrpo.models.tiny import TAG_TOKENS, VOCAB_SIZE, build_tiny, load_tiny_processor, save_tiny


def _inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt")


def test_tiny_model_generates_from_an_image_prompt():
    model, processor = build_tiny(seed=0)
    inputs = _inputs(processor)
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4 == 16  # 224² → 112² → 8×8 patches → 16
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=6, do_sample=True)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6 or out[0, -1] == model.config.eos_token_id
    assert model.lm_head.weight.shape[0] == VOCAB_SIZE


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
    assert torch.equal(a.lm_head.weight, b.lm_head.weight) and not torch.equal(a.lm_head.weight, c.lm_head.weight)
    path = save_tiny(tmp_path / "tiny", seed=1)
    from transformers import AutoModelForImageTextToText

    loaded = AutoModelForImageTextToText.from_pretrained(path)
    assert torch.equal(loaded.lm_head.weight, a.lm_head.weight)
    processor = load_tiny_processor(path)
    assert processor(text=["<think>"], return_tensors="pt")["input_ids"].shape == (1, 1)
