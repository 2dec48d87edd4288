"""The checkpoint layout: finding the latest, resume paths, LoRA adapters in the new and the old folder, and which
config changes each recipe refuses on a resume."""

from __future__ import annotations

import pytest
import torch

from vgrpo.checkpoint import (
    EXACTNESS_KEYS,
    LORA_DIR,
    MODEL_EXACTNESS_KEYS,
    OLD_LORA_DIR,
    config_changes,
    latest_checkpoint,
    load_lora,
    lora_dir,
    merged_lora_state_dict,
    resume_path,
)
from vgrpo.errors import CheckpointError
from vgrpo.sft import SFT_EXACTNESS_KEYS


def test_latest_checkpoint_is_the_highest_step_not_the_newest_name(tmp_path):
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "missing") is None
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-x", ".tmp-checkpoint-11"):
        (tmp_path / name).mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert resume_path(tmp_path, "never") is None
    assert resume_path(tmp_path, "auto") is None  # empty folders are no intact checkpoints: nothing to resume


def test_resume_from_a_folder_that_is_no_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        resume_path(tmp_path, str(tmp_path))


def _lora_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4))
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0"], init_lora_weights=False))


@pytest.mark.parametrize("folder", [LORA_DIR, OLD_LORA_DIR])
def test_a_lora_adapter_loads_from_lora_and_from_the_older_adapter_folder(tmp_path, folder):
    saved = _lora_model()
    saved.save_pretrained(tmp_path / folder)
    assert lora_dir(tmp_path) == tmp_path / folder
    fresh = _lora_model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    load_lora(fresh, tmp_path)
    key = "base_model.model.0.lora_B.default.weight"
    torch.testing.assert_close(dict(fresh.named_parameters())[key], dict(saved.named_parameters())[key])


def test_a_checkpoint_without_lora_weights_says_how_to_resume_it(tmp_path):
    with pytest.raises(CheckpointError, match="model.lora.enabled=true"):
        load_lora(_lora_model(), tmp_path)


def test_merged_lora_weights_are_w_plus_scaled_b_a():
    a, b, w = torch.randn(2, 4), torch.randn(4, 2), torch.randn(4, 4)
    state = {
        "l.base_layer.weight": w,
        "l.lora_A.default.weight": a,
        "l.lora_B.default.weight": b,
        "l.bias": w[0],
    }
    merged = merged_lora_state_dict(state, scaling=2.0)
    assert set(merged) == {"l.weight", "l.bias"}
    torch.testing.assert_close(merged["l.weight"], w + 2.0 * b @ a)


def test_both_recipes_refuse_a_changed_model_and_only_grpo_a_flipped_shared_prefix():
    """The model/data keys are one tuple both recipes start from; ``model.shared_prefix`` changes GRPO's sums
    (equal to the repeated path to ~1e-5, not bit for bit), and SFT never shares a prefix."""
    assert EXACTNESS_KEYS[: len(MODEL_EXACTNESS_KEYS)] == MODEL_EXACTNESS_KEYS
    assert SFT_EXACTNESS_KEYS[: len(MODEL_EXACTNESS_KEYS)] == MODEL_EXACTNESS_KEYS
    saved = {"seed": 0, "model": {"dtype": "float32", "shared_prefix": "auto"}}
    now = {"seed": 0, "model": {"dtype": "bfloat16", "shared_prefix": "off"}}
    grpo = {c.key: c.breaks_exactness for c in config_changes(saved, now, EXACTNESS_KEYS)}
    sft = {c.key: c.breaks_exactness for c in config_changes(saved, now, SFT_EXACTNESS_KEYS)}
    assert grpo == {"model.dtype": True, "model.shared_prefix": True}
    assert sft == {"model.dtype": True, "model.shared_prefix": False}
