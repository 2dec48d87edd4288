"""`vgrpo train` on the console: the run header says which model adapter and box convention each task uses, a
resume says where it continues and what changed, and an interrupted run says so and exits 128 + signal."""

from __future__ import annotations

import os
import signal

import pytest

from vgrpo.cli import main
from vgrpo.synth import synthesize


@pytest.fixture(scope="module")
def rec_data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=4, seed=0, tasks=["rec"])["rec"]


def _train(config, out, *extra):
    return main(
        [
            "train",
            str(config),
            f"output_dir={out}",
            "grpo.num_generations=2",
            "optim.prompts_per_step=1",
            "generation.max_completion_length=4",
            "logging.tensorboard=false",
            *extra,
        ]
    )


def test_the_header_names_adapter_and_coords_and_a_resume_says_where_and_what_changed(
    rec_data, tmp_path, capsys
):
    config = tmp_path / "rec.yaml"
    config.write_text(f"tasks: [{{task: rec, data: {rec_data}}}]\n")
    assert _train(config, tmp_path / "run", "optim.max_steps=1") == 0
    err = capsys.readouterr().err
    assert (
        "model adapter qwen2_5_vl" in err and "task rec: coords=abs (the model adapter's convention)" in err
    )
    assert _train(config, tmp_path / "run", "optim.max_steps=2") == 0
    err = capsys.readouterr().err
    assert "resuming from" in err and "checkpoint-1 at step 1" in err and "optim.max_steps" in err


def test_an_interrupted_run_says_so_and_exits_143(rec_data, tmp_path, capsys, monkeypatch):
    from vgrpo.trainer import Trainer

    real = Trainer.train_step

    def step_then_sigterm(self):
        rows = real(self)
        os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    config = tmp_path / "rec.yaml"
    config.write_text(f"tasks: [{{task: rec, data: {rec_data}}}]\n")
    assert _train(config, tmp_path / "run", "optim.max_steps=5") == 143
    err = capsys.readouterr().err
    assert (
        "interrupted at step 1, checkpoint-1 written" in err and (tmp_path / "run" / "checkpoint-1").is_dir()
    )
