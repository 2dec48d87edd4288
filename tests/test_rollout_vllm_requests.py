"""The vLLM backend's parts that need no engine: the requests it sends (an image prompt carries its image and
exactly the chat text the hf path encodes; a text prompt the hf path's token ids), completions turned into the hf
backend's Rollout, and the start-up error without vLLM."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from vgrpo.config import load_config
from vgrpo.errors import TrainingError
from vgrpo.models.adapters import CausalLMAdapter, Qwen25VLAdapter
from vgrpo.plugins import get_registry
from vgrpo.prompts import Prompt, encode_prompts
from vgrpo.rollout_vllm import build_requests, rollout_from_tokens
from vgrpo.task import Sample
from vgrpo.trainer import Trainer


def _prompt(task_name: str, question: str, images: list) -> Prompt:
    task = get_registry().tasks[task_name]
    paths = tuple(f"img{i}.png" for i in range(len(images)))
    sample = Sample(id=f"{task_name}-1", question=question, solution="3", images=paths)
    return Prompt(task, task.Params(), sample, images)


def test_an_image_prompt_carries_its_image_and_the_chat_text_the_hf_path_encodes():
    adapter = Qwen25VLAdapter()
    _, processor = adapter.load("tiny")
    image = Image.new("RGB", (112, 84), "red")
    prompts = [_prompt("count", "How many shapes?", [image]), _prompt("math", "What is 1 + 2?", [])]
    encoded = encode_prompts(adapter, processor, prompts, group_size=[3, 2])
    requests = build_requests(processor, prompts, encoded, [3, 2], [11, 12])

    image_request, text_request = requests
    assert (image_request.n, image_request.seed, text_request.n, text_request.seed) == (3, 11, 2, 12)
    assert image_request.prompt["multi_modal_data"]["image"] == [image]
    # the chat text, processed with the image as the hf path does, gives exactly the hf path's tokens
    again = processor(text=[image_request.prompt["prompt"]], images=[image], return_tensors="pt")
    row = encoded.inputs["input_ids"][0][encoded.inputs["attention_mask"][0].bool()]
    assert again["input_ids"][0].tolist() == row.tolist()
    assert image_request.prompt_tokens == len(row)
    assert "<|image_pad|>" in image_request.prompt["prompt"]
    # a text prompt: its hf tokens, left padding removed (rows 3 and 4 are its group)
    assert "multi_modal_data" not in text_request.prompt
    text_row = encoded.inputs["input_ids"][3][encoded.inputs["attention_mask"][3].bool()]
    assert text_request.prompt["prompt_token_ids"] == text_row.tolist()
    assert processor.tokenizer.pad_token_id not in text_request.prompt["prompt_token_ids"]


def test_completions_become_the_hf_backends_rollout():
    adapter = CausalLMAdapter()
    _, processor = adapter.load("tiny-text")
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    a, b = tok("ab", add_special_tokens=False)["input_ids"], tok("xyz", add_special_tokens=False)["input_ids"]
    inputs = {"input_ids": torch.ones(3, 4, dtype=torch.long), "attention_mask": torch.ones(3, 4)}
    rows = [(a + [eos], [-0.1, -0.2, -0.3]), (b, [-1.0, -2.0, -3.0]), ([], [])]  # ended, cut, empty
    r = rollout_from_tokens(inputs, rows, [eos], tok)
    assert r.completion_ids.tolist() == [a + [eos], b, [tok.pad_token_id] * 3]
    assert r.completion_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert r.truncated.tolist() == [False, True, True]
    assert r.texts == ["ab", "xyz", ""]
    torch.testing.assert_close(
        r.sampler_logps, torch.tensor([[-0.1, -0.2, -0.3], [-1.0, -2.0, -3.0], [0.0] * 3])
    )
    short = rollout_from_tokens(inputs, [(a, [-0.5, -0.5]), (a + [eos], [-0.1, -0.2, -0.3])], [eos], tok)
    assert short.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]  # the padding of a short row never counts


def test_the_text_model_refuses_an_image_prompt_naming_what_to_use():
    adapter = CausalLMAdapter()
    _, processor = adapter.load("tiny-text")
    prompt = _prompt("count", "How many?", [Image.new("RGB", (28, 28))])
    with pytest.raises(ValueError, match="text-only"):
        encode_prompts(adapter, processor, [prompt])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_fails_at_start_up_with_the_install_line(tmp_path):
    config = load_config(
        None, [f"output_dir={tmp_path}", "model.name_or_path=tiny-text", "generation.backend=vllm"]
    )
    with pytest.raises(TrainingError, match=r"needs vLLM.*pip install"):
        Trainer(config).setup()
    assert not (tmp_path / "config.yaml").exists()  # nothing was started
