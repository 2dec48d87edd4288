"""The SFT recipe (`vgrpo sft`): targets from reference completions or a record's `completion` field, the loss
on target tokens only, metrics, checkpoints, exact resume, the plot, the errors that name the way out, and the
checkpoint that GRPO and `vgrpo eval` read."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from vgrpo import cli
from vgrpo.config import load_config
from vgrpo.errors import DataError
from vgrpo.plugins import load_plugins
from vgrpo.prompts import draw_prompts
from vgrpo.rollout import _full_inputs
from vgrpo.sft import SFTTrainer, sft_output_dir
from vgrpo.synth import synthesize
from vgrpo.trainer import Trainer

TIMING = {"step_time_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(
        tmp_path_factory.mktemp("data"), n_per_task=8, n_val=2, seed=0, image_size=112, max_shapes=2
    )


def _config(data, out, *extra, tasks=("count", "math", "rec", "ovd")):
    entries = ",".join(f"{{task: {t}, data: {data[t]}}}" for t in tasks)
    return load_config(
        None,
        [
            f"output_dir={out}",
            "sft.batch=4",
            "sft.lr=1e-2",
            "sft.steps=3",
            "generation.max_completion_length=64",
            "logging.tensorboard=false",
            "checkpoint.every=2",
            f"tasks=[{entries}]",
            "rewards.workers=0",
            *extra,
        ],
    )


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_an_sft_run_writes_metrics_a_checkpoint_and_its_plot_where_grpo_reads_it(data, tmp_path):
    out = tmp_path / "run"
    config = _config(data, out, "checkpoint.save_total_limit=1")
    trainer = SFTTrainer(config)
    run = trainer.train()
    assert run == sft_output_dir(config) == out / "sft"  # beside the GRPO run, never in its way
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "grad_norm", "lr", "completion_length", "step_time_s", "tokens_per_s"} <= set(rows[0])
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in rows)
    assert any(k.startswith("tasks/") and k.endswith("/loss") for k in rows[0])
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"]
    assert trainer.plot_path == run / "plot.png" and trainer.plot_path.read_bytes()[:4] == b"\x89PNG"
    # GRPO from the SFT checkpoint: a normal model folder
    grpo = Trainer(
        _config(
            data,
            out,
            f"model.name_or_path={run / 'checkpoint-3'}",
            "optim.max_steps=1",
            "grpo.num_generations=2",
            "optim.prompts_per_step=2",
        )
    )
    grpo.train()
    assert [r["step"] for r in _rows(out)] == [1] and (out / "plot.png").exists()
    assert (run / "checkpoint-3").exists(), "the GRPO run in output_dir leaves the SFT run alone"


def test_the_loss_is_the_token_cross_entropy_of_the_targets_only(data, tmp_path):
    trainer = SFTTrainer(_config(data, tmp_path / "run", tasks=("count",)))
    trainer.setup()
    try:
        state = trainer.sampler.state_dict()
        prompts = draw_prompts(trainer.sampler, trainer.entries, 4, trainer.dist, trainer.counters)
        batch = trainer._batch(prompts)
        texts = [p.task.reference_completion(p.sample, p.params) for p in prompts]
        assert batch.rollout.texts == texts and texts[0].startswith("<think>")
        tokenizer = trainer.processor.tokenizer
        eos = trainer.eos_ids[0]
        for i, text in enumerate(texts):  # the target is the text then EOS; nothing of the prompt
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            n = int(batch.rollout.completion_mask[i].sum())
            assert batch.rollout.completion_ids[i, :n].tolist() == ids
        # the fused loss equals log_softmax + gather over the full logits, on target tokens only
        ids, mask = batch.rollout.completion_ids, batch.rollout.completion_mask
        prompt_length = batch.rollout.inputs["input_ids"].size(1)
        with torch.no_grad():
            full = _full_inputs(batch.rollout.inputs, ids, mask)
            logits = trainer.unwrapped(**full).logits[:, prompt_length - 1 : -1].float()
        expected = (
            -(logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask).sum() / mask.sum()
        )
        trainer.sampler.load_state_dict(state)  # the step draws the same records
        [row] = trainer.train_step()
        assert row["loss"] == pytest.approx(float(expected), rel=1e-4)
    finally:
        trainer.cleanup()


def test_an_interrupted_sft_run_resumes_exactly(data, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    SFTTrainer(_config(data, straight, "sft.steps=4", "checkpoint.every=3")).train()
    real_step = SFTTrainer.train_step

    def step_then_sigterm(self):
        rows = real_step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setattr(SFTTrainer, "train_step", step_then_sigterm)
    first = SFTTrainer(_config(data, resumed, "sft.steps=4", "checkpoint.every=3"))
    first.train()
    assert first.interrupted_by == signal.SIGTERM and (resumed / "sft" / "checkpoint-2").exists()
    monkeypatch.setattr(SFTTrainer, "train_step", real_step)
    again = SFTTrainer(_config(data, resumed, "sft.steps=4", "checkpoint.every=3"))
    again.train()
    assert again.resumed is not None and again.resumed.step == 2
    a, b = _rows(straight / "sft"), _rows(resumed / "sft")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_an_sft_resume_refuses_a_change_that_breaks_exactness(data, tmp_path):
    from vgrpo.errors import CheckpointError

    SFTTrainer(_config(data, tmp_path / "run", "sft.steps=2")).train()
    with pytest.raises(CheckpointError, match=r"sft\.batch"):
        SFTTrainer(_config(data, tmp_path / "run", "sft.steps=4", "sft.batch=2")).setup()


def test_a_task_without_targets_names_the_task_and_both_ways_out(fake_site, tmp_path):
    fake_site.task_plugin("acme-echo", "acme.echo")  # a task written before reference_completion existed
    registry = load_plugins(path=[str(fake_site.root)])
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        "".join(json.dumps({"id": str(i), "question": "Say hi", "solution": "hi"}) + "\n" for i in range(3))
    )
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'a'}",
            f"tasks=[{{task: acme.echo, data: {plain}}}]",
            "logging.tensorboard=false",
        ],
    )
    with pytest.raises(DataError) as err:
        SFTTrainer(config, registry).setup()
    message = str(err.value)
    assert "'acme.echo'" in message and "'completion' field" in message and "reference_completion" in message
    assert str(plain) in message
    # the first way out: records with a completion field are trained on as they are
    given = tmp_path / "given.jsonl"
    given.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(i),
                    "question": "Say hi",
                    "solution": "hi",
                    "completion": "<think>.</think><answer>hi</answer>",
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'b'}",
            f"tasks=[{{task: acme.echo, data: {given}}}]",
            "logging.tensorboard=false",
            "sft.steps=1",
            "sft.batch=2",
        ],
    )
    trainer = SFTTrainer(config, registry)
    trainer.train()
    assert [r["step"] for r in _rows(trainer.output_dir)] == [1]


def test_cli_sft_then_plot(data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ntasks: [{{task: count, data: {data['count']}}}]\n"
        "sft: {steps: 2, batch: 2}\nlogging: {tensorboard: false}\n",
        encoding="utf-8",
    )
    assert cli.main(["sft", str(config)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint-2" in out and f"model.name_or_path={tmp_path / 'run' / 'sft' / 'checkpoint-2'}" in out
    png = tmp_path / "p.png"
    assert cli.main(["plot", str(tmp_path / "run" / "sft"), "-o", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2  # no metrics.jsonl: a usage error
    assert "metrics.jsonl" in capsys.readouterr().err
