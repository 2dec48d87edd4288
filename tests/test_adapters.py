"""Model adapters on the tiny model: inputs, model-input image sizes, hidden states that give the logits."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vgrpo
from vgrpo.models.adapters import ModelAdapter, Qwen25VLAdapter, select_adapter


@pytest.fixture(scope="module")
def tiny():
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    return adapter, model.eval(), processor


def _batch():
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find the red circle."}]}],
        [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count."}]}],
    ]
    images = [[Image.new("RGB", (224, 224))], [], [Image.new("RGB", (300, 120))]]
    return messages, images


def test_encode_left_pads_and_reports_model_input_sizes(tiny):
    adapter, model, processor = tiny
    messages, images = _batch()
    inputs = adapter.encode(processor, messages, images)
    assert inputs["input_ids"].shape[0] == 3
    assert inputs["attention_mask"][:, -1].all()  # left padding: every prompt ends at the last column
    sizes = adapter.input_sizes(processor, inputs, images)
    assert sizes[0] == (112.0, 112.0)  # 224² shrinks to the tiny model's max 112² area, multiple of 28
    assert sizes[1] is None
    w, h = sizes[2]
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 112 * 112 and w > h  # aspect ratio kept roughly


def test_hidden_states_times_the_output_layer_are_the_logits(tiny):
    adapter, model, processor = tiny
    messages, images = _batch()
    inputs = adapter.encode(processor, messages, images)
    with torch.no_grad():
        hidden = adapter.hidden_states(model, dict(inputs))
        logits = model(**inputs).logits
        head = adapter.output_layer(model)
    torch.testing.assert_close(hidden @ head.weight.T, logits, atol=1e-5, rtol=1e-5)


def test_adapters_are_registered_through_the_hook_and_selected_by_model_type():
    adapters = vgrpo.get_registry().model_adapters
    assert {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "generic"} <= set(adapters)
    assert select_adapter(adapters, "auto", "qwen2_5_vl").default_coords == "abs"
    assert select_adapter(adapters, "auto", "qwen2_vl").default_coords == "norm1000"
    assert select_adapter(adapters, "auto", "llava").name == "generic"
    with pytest.raises(KeyError, match="unknown model adapter"):
        select_adapter(adapters, "qwen9", "x")
    assert isinstance(adapters["generic"], ModelAdapter)


def test_a_saved_tiny_checkpoint_loads_through_the_normal_path(tmp_path):
    from vgrpo.models.tiny import save_tiny

    path = save_tiny(tmp_path / "ckpt")
    model, processor = Qwen25VLAdapter().load(str(path))
    assert (
        model.config.model_type == "qwen2_5_vl" and processor.tokenizer.convert_tokens_to_ids("<think>") > 255
    )


def test_a_group_of_repeated_prompts_encodes_as_if_each_row_were_encoded(tiny):
    """GRPO repeats each prompt G times: with ``group_size`` the Qwen adapter preprocesses each image once and
    repeats the rows, and the result equals encoding every row on its own."""
    adapter, model, processor = tiny
    messages, images = _batch()
    rows_m = [m for m in messages for _ in range(3)]
    rows_i = [i for i in images for _ in range(3)]
    fast = adapter.encode(processor, messages, images, group_size=3)
    plain = ModelAdapter.encode(adapter, processor, rows_m, rows_i)
    assert set(fast) == set(plain)
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=0, atol=0)
    assert adapter.input_sizes(processor, fast, rows_i) == adapter.input_sizes(processor, plain, rows_i)
    uneven = adapter.encode(processor, messages, images, group_size=[1, 2, 3])  # one count per prompt
    plain = ModelAdapter.encode(
        adapter,
        processor,
        [messages[0], *[messages[1]] * 2, *[messages[2]] * 3],
        [images[0], *[images[1]] * 2, *[images[2]] * 3],
    )
    for key in plain:
        torch.testing.assert_close(uneven[key], plain[key], rtol=0, atol=0)
