"""A saved tiny model is an ordinary Hugging Face folder: transformers' AutoProcessor and
AutoModelForImageTextToText load it without vgrpo code and without torchvision, giving the very inputs and
weights vgrpo uses; older checkpoints (a processor class transformers does not know) still load with
``load_image_only_processor``, which writes them back in the readable form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vgrpo.models.tiny import build_tiny, load_image_only_processor, save_tiny

#: What vgrpo wrote before the processor was saved as a stock class: its own class name, no named tokens.
OLD_CLASS = "ImageOnlyQwen2_5_VLProcessor"


def _inputs(processor) -> dict[str, torch.Tensor]:
    """Two chat prompts with images of different sizes, padded: every tensor the processor makes."""
    content = [{"type": "image"}, {"type": "text", "text": "How many circles?"}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [Image.new("RGB", (224, 224), "red"), Image.new("RGB", (100, 60), "blue")]
    return dict(processor(text=[text, text + "ab"], images=images, return_tensors="pt", padding=True))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_torchvision_is_not_installed():
    """The premise: the registry's torchvision is CUDA-linked, so vgrpo never needs it (see DESIGN.md)."""
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_the_auto_classes_load_a_saved_tiny_model_as_vgrpo_uses_it(tmp_path: Path, family: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.processing_utils import ProcessorMixin

    model, processor = build_tiny(seed=3, family=family)
    path = save_tiny(tmp_path / "tiny", seed=3, family=family)
    loaded = AutoProcessor.from_pretrained(path)
    assert isinstance(loaded, ProcessorMixin), type(loaded)  # not a bare tokenizer
    assert type(loaded.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert not hasattr(loaded, "video_processor")
    _assert_same(_inputs(loaded), _inputs(processor))
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    weights = AutoModelForImageTextToText.from_pretrained(path).state_dict()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    inputs = _inputs(loaded)
    with torch.no_grad():  # and the loaded pair runs: the images reach the model
        out = AutoModelForImageTextToText.from_pretrained(path)(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape


def test_an_older_checkpoint_loads_with_load_image_only_processor_and_saves_readable(tmp_path: Path):
    from transformers import AutoProcessor
    from transformers.processing_utils import ProcessorMixin

    _, processor = build_tiny()
    old = save_tiny(tmp_path / "old")
    for name in ("processor_config.json", "tokenizer_config.json"):  # as an older vgrpo wrote it
        doc = json.loads((old / name).read_text(encoding="utf-8"))
        doc["processor_class"] = OLD_CLASS
        for key in ("image_token", "video_token", "vision_start_token", "vision_end_token"):
            doc.pop(key, None)
        (old / name).write_text(json.dumps(doc), encoding="utf-8")
    bare = AutoProcessor.from_pretrained(old)
    assert not isinstance(bare, ProcessorMixin)  # the bare tokenizer TRL fails on
    rescued = load_image_only_processor(old)
    _assert_same(_inputs(rescued), _inputs(processor))
    rescued.save_pretrained(tmp_path / "resaved")
    again = AutoProcessor.from_pretrained(tmp_path / "resaved")
    assert isinstance(again, ProcessorMixin)
    _assert_same(_inputs(again), _inputs(processor))
    bounded = load_image_only_processor(old, max_pixels=56 * 56)  # image processor settings pass through
    grid = bounded(text=["<|image_pad|>"], images=[Image.new("RGB", (224, 224))])["image_grid_thw"]
    assert int(grid.prod()) == 16  # 224² → 56² → 4×4 patches (the default bound gives 8×8)
