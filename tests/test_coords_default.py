"""A task's ``coords`` param follows the model adapter's convention when the config sets none: REC on a
Qwen2-VL-architecture model reads 0–1000 boxes, on Qwen2.5-VL pixels of the model input."""

from __future__ import annotations

import json

import pytest
import torch

from vgrpo.config import load_config
from vgrpo.evaluate import build_eval_splits
from vgrpo.models.tiny import save_tiny
from vgrpo.plugins import get_registry
from vgrpo.rollout import Rollout
from vgrpo.scoring import score_rollout
from vgrpo.synth import synthesize
from vgrpo.trainer import Trainer


@pytest.fixture(scope="module")
def rec_data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=4, seed=0)["rec"]


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("qwen2_vl"), seed=0, family="qwen2_vl"))


def _config(model, data, out, *extra):
    return load_config(
        None,
        [
            f"model.name_or_path={model}",
            f"output_dir={out}",
            f"tasks=[{{task: rec, data: {data}}}]",
            "grpo.num_generations=2",
            "optim.prompts_per_step=1",
            "optim.max_steps=1",
            "logging.tensorboard=false",
            *extra,
        ],
    )


def _score_box(trainer, to_answer):
    """The rec reward, through the trainer's own prompt and reward path, of a completion whose box is the
    sample's ground truth written by ``to_answer(box, sample)``."""
    prompt = trainer._draw_prompts(1)[0]
    from vgrpo.prompts import encode_prompts

    sample = encode_prompts(trainer.adapter, trainer.processor, [prompt], group_size=1).samples[0]
    text = f"<think>there</think><answer>{json.dumps(to_answer(sample.solution, sample))}</answer>"
    rollout = Rollout(
        {}, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), torch.zeros(1, dtype=torch.bool), [text]
    )
    scored = score_rollout(trainer.entries, [prompt.entry], rollout.texts, [sample], [1.0])
    return scored.stats.tasks["rec"]["accuracy"][0]


def _norm1000(box, sample):
    w, h = sample.image_size
    return [box[0] * 1000 / w, box[1] * 1000 / h, box[2] * 1000 / w, box[3] * 1000 / h]


def _model_input_pixels(box, sample):
    (w, h), (iw, ih) = sample.image_size, sample.input_size
    return [box[0] * iw / w, box[1] * ih / h, box[2] * iw / w, box[3] * ih / h]


def test_rec_on_qwen2_vl_reads_0_to_1000_boxes_without_coords_in_the_config(
    qwen2_vl, rec_data, tmp_path, caplog
):
    trainer = Trainer(_config(qwen2_vl, rec_data, tmp_path / "run"))
    with caplog.at_level("INFO"):
        trainer.setup()
    try:
        assert trainer.adapter.name == "qwen2_vl" and trainer.entries[0].params.coords == "norm1000"
        assert "coords=norm1000" in caplog.text and "qwen2_vl" in caplog.text  # the run says which it used
        assert _score_box(trainer, _norm1000) == pytest.approx(1.0, abs=1e-6)
        assert _score_box(trainer, _model_input_pixels) < 0.5  # pixels are not what this family writes
    finally:
        trainer.cleanup()


def test_rec_on_qwen2_5_vl_reads_pixels_of_the_model_input(rec_data, tmp_path):
    trainer = Trainer(_config("tiny", rec_data, tmp_path / "run"))
    trainer.setup()
    try:
        assert trainer.entries[0].params.coords == "abs"
        assert _score_box(trainer, _model_input_pixels) == pytest.approx(1.0, abs=1e-6)
    finally:
        trainer.cleanup()


def test_coords_set_in_the_config_win_over_the_adapter_and_eval_follows_the_same_rule(
    qwen2_vl, rec_data, tmp_path
):
    from vgrpo.models.adapters import adapter_for

    registry = get_registry()
    adapter = adapter_for(registry.model_adapters, "auto", qwen2_vl)
    config = _config(qwen2_vl, rec_data, tmp_path / "run")
    assert build_eval_splits(config, registry, adapter)[0].params.coords == "norm1000"
    explicit = load_config(
        None,
        [
            f"model.name_or_path={qwen2_vl}",
            f"output_dir={tmp_path / 'x'}",
            f"tasks=[{{task: rec, data: {rec_data}, params: {{coords: norm1}}}}]",
        ],
    )
    assert build_eval_splits(explicit, registry, adapter)[0].params.coords == "norm1"
    assert build_eval_splits(config, registry)[0].params.coords == "abs"  # no adapter: the task's own default
