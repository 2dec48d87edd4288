"""acme.llava: discovered through its hook, picked by model type, and exact on the tiny LLaVA where it
matters: hidden states x lm_head = logits, fused log-probs = log_softmax + gather, group encoding = repeated
rows."""

from __future__ import annotations

import inspect

import pytest
import torch
from PIL import Image

import vgrpo
from acme_adapter import LlavaAdapter, build_tiny_llava, save_tiny_llava
from vgrpo.kernels import token_logprobs
from vgrpo.models.adapters import adapter_for, select_adapter


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_llava(seed=0)
    return LlavaAdapter(), model.eval(), processor


def _batch():
    """Three prompts: an image, text only, another image of another shape."""
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find the red circle."}]}],
        [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count."}]}],
    ]
    images = [[Image.new("RGB", (224, 160), "red")], [], [Image.new("RGB", (90, 300), "blue")]]
    return messages, images


def test_the_plugin_is_installed_and_registers_the_adapter():
    registry = vgrpo.load_plugins()
    assert registry.owner("model adapter", "acme.llava")[0] == "vgrpo-acme-adapter"
    [info] = [p for p in registry.plugins if p.distribution == "vgrpo-acme-adapter"]
    assert info.model_adapters == ["acme.llava"] and info.tasks == [] and info.rewards == []
    assert isinstance(registry.model_adapters["acme.llava"], vgrpo.ModelAdapter)


def test_it_keeps_the_contract_signatures():
    """An override takes the parameters the base class declares (vgrpo calls them by these names)."""
    for name, base in inspect.getmembers(vgrpo.ModelAdapter, callable):
        if not name.startswith("_"):
            ours = inspect.signature(getattr(LlavaAdapter, name)).parameters
            assert [(p.name, p.kind, p.default) for p in ours.values()] == [
                (p.name, p.kind, p.default) for p in inspect.signature(base).parameters.values()
            ], name


def test_auto_picks_it_for_a_llava_checkpoint_and_the_builtins_for_theirs(tmp_path):
    adapters = vgrpo.load_plugins().model_adapters
    assert select_adapter(adapters, "auto", "llava").name == "acme.llava"
    assert select_adapter(adapters, "auto", "qwen2_5_vl").name == "qwen2_5_vl"  # the others are untouched
    assert select_adapter(adapters, "acme.llava", "").name == "acme.llava"  # model.adapter: acme.llava
    path = save_tiny_llava(tmp_path / "tiny-llava")
    adapter = adapter_for(adapters, "auto", str(path))  # reads config.json only
    assert adapter.name == "acme.llava" and adapter.default_coords == "norm1"
    model, processor = adapter.load(str(path))  # the inherited load: AutoModelForImageTextToText
    assert model.config.model_type == "llava" and type(processor.image_processor).__name__.endswith("Pil")


def test_hidden_states_times_the_lm_head_weight_are_the_logits(tiny):
    adapter, model, processor = tiny
    messages, images = _batch()
    inputs = adapter.encode(processor, messages, images)
    assert inputs["attention_mask"][:, -1].all()  # left-padded: every prompt ends at the last column
    with torch.no_grad():
        hidden = adapter.hidden_states(model, dict(inputs))
        logits = model(**inputs).logits
    head = adapter.lm_head(model)
    assert head is adapter.output_layer(model)
    torch.testing.assert_close(hidden @ head.weight.T, logits, atol=1e-5, rtol=1e-5)


def test_the_fused_log_probs_of_its_hidden_states_are_log_softmax_and_gather(tiny):
    adapter, model, processor = tiny
    messages, images = _batch()
    inputs = adapter.encode(processor, messages, images, group_size=2)
    with torch.no_grad():
        hidden = adapter.hidden_states(model, dict(inputs))
        logits = model(**inputs).logits
    targets = inputs["input_ids"][:, 1:]
    fused = token_logprobs(hidden[:, :-1], adapter.lm_head(model).weight, targets, backend="torch")
    plain = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("group_size", [1, 3, [2, 1, 3]])
def test_a_group_encodes_as_the_repeated_rows_would(tiny, group_size):
    adapter, model, processor = tiny
    messages, images = _batch()
    counts = [group_size] * 3 if isinstance(group_size, int) else group_size
    rows = [m for m, n in zip(messages, counts) for _ in range(n)]
    row_images = [i for i, n in zip(images, counts) for _ in range(n)]
    grouped = adapter.encode(processor, messages, images, group_size=group_size)
    plain = vgrpo.ModelAdapter().encode(processor, rows, row_images)  # each row preprocessed on its own
    assert set(grouped) == set(plain) == {"input_ids", "attention_mask", "pixel_values"}
    for key in plain:
        torch.testing.assert_close(grouped[key], plain[key], rtol=0, atol=0)
    sizes = adapter.input_sizes(processor, grouped, row_images)
    assert sizes == adapter.input_sizes(processor, plain, row_images)


def test_input_sizes_are_the_square_the_vision_tower_saw(tiny):
    adapter, model, processor = tiny
    messages, images = _batch()
    inputs = adapter.encode(processor, messages, images, group_size=[1, 2, 1])
    rows = [images[0], images[1], images[1], images[2]]
    assert adapter.input_sizes(processor, inputs, rows) == [(56.0, 56.0), None, None, (56.0, 56.0)]
    # the generic adapter reports the original sizes instead
    assert vgrpo.ModelAdapter().input_sizes(processor, inputs, rows)[0] == (224.0, 160.0)


def test_the_rec_task_reads_boxes_as_fractions_when_the_config_sets_no_coords(tiny):
    from vgrpo.mixture import task_params

    rec = vgrpo.load_plugins().task("rec")
    adapter = tiny[0]
    assert task_params(rec, {}, adapter).coords == "norm1"
    assert task_params(rec, {"coords": "abs"}, adapter).coords == "abs"  # the config still wins
    sample = vgrpo.Sample(id="a", solution=[40, 30, 120, 90], image_size=(200, 150))
    box = "<think>t</think><answer>[0.2, 0.2, 0.6, 0.6]</answer>"  # the same box as fractions
    [result] = vgrpo.score(rec, [box], [sample], params=task_params(rec, {}, adapter))
    assert result.rewards["accuracy"] == pytest.approx(1.0)


def test_only_the_clip_tower_is_the_vision_part(tiny):
    adapter, model, processor = tiny
    names = {n for n, _ in adapter.vision_parameters(model)}
    tower = {f"model.vision_tower.{n}" for n, _ in model.model.vision_tower.named_parameters()}
    assert names == tower  # the projector and the language model train
    assert not any("multi_modal_projector" in n for n in names)


def test_every_rank_runs_vision_also_on_a_batch_without_images(tiny):
    adapter, model, processor = tiny
    messages = [[{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}]]
    inputs = dict(adapter.encode(processor, messages, [[]]))
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            before = adapter.hidden_states(model, inputs)
        assert calls == []  # not prepared: a text-only batch skips the tower
        adapter.prepare(model, every_rank_runs_vision=True)
        hidden = adapter.hidden_states(model, inputs)
        assert calls == [1]
        torch.testing.assert_close(hidden, before, rtol=0, atol=0)  # weighted 0: the same states
        hidden.sum().backward()
        grads = {n: p.grad for n, p in adapter.vision_parameters(model) if p.grad is not None}
        assert "model.vision_tower.embeddings.patch_embedding.weight" in grads  # the tower is in the graph
        assert not any(g.any() for g in grads.values())  # with zero gradient
    finally:
        hook.remove()
        adapter.prepare(model, every_rank_runs_vision=False)
        model.zero_grad(set_to_none=True)
