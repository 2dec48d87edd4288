"""The training recipe end to end on the tiny model: metrics, checkpoints, exact resume, a learnable reward."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from vgrpo.config import load_config
from vgrpo.plugins import load_plugins
from vgrpo.synth import synthesize
from vgrpo.trainer import Trainer

TIMING = {"step_time_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=12, seed=0)


@pytest.fixture
def with_letter(fake_site, tmp_path, data, letters_task_source):
    """The built-ins plus a task whose reward a random model can already earn (so losses are non-zero)."""
    fake_site.add("acme-letter", source=letters_task_source)
    path = tmp_path / "letter.jsonl"
    path.write_text(
        "".join(json.dumps({"id": str(i), "question": "Say a", "solution": "a"}) + "\n" for i in range(8))
    )
    return load_plugins(), {**data, "acme.letters": path}


def _config(data, out, *extra):
    tasks = ",".join(f"{{task: {t}, data: {p}}}" for t, p in data.items())
    return load_config(
        None,
        [
            f"output_dir={out}",
            "grpo.num_generations=2",
            "optim.prompts_per_step=2",
            "optim.lr=1e-3",
            "generation.max_completion_length=8",
            "logging.tensorboard=false",
            "checkpoint.every=2",
            f"tasks=[{tasks}]",
            *extra,
        ],
    )


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_metrics_checkpoints_and_the_resolved_config(data, tmp_path):
    out = tmp_path / "run"
    Trainer(
        _config(
            data, out, "optim.max_steps=3", "checkpoint.save_total_limit=1", "logging.completions_every=1"
        )
    ).train()
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    required = {
        "step",
        "loss",
        "reward",
        "kl",
        "clip_ratio",
        "grad_norm",
        "lr",
        "completion_length",
        "step_time_s",
        "tokens_per_s",
    }
    assert all(required <= set(r) for r in rows)
    task_keys = {k for r in rows for k in r if k.startswith("tasks/")}
    assert any(k.endswith("/parse_rate") for k in task_keys) and any(
        k.endswith("/completion_length") for k in task_keys
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]  # save_total_limit=1
    ckpt = out / "checkpoint-3"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "trainer_state.json").exists()
    assert "max_steps: 3" in (ckpt / "config.yaml").read_text() and (out / "config.yaml").exists()
    assert (out / "completions.jsonl").read_text().count("\n") == 3 * 2 * 2  # steps x prompts x G


def test_interrupted_and_resumed_run_logs_the_same_metrics(with_letter, tmp_path, monkeypatch):
    registry, data = with_letter
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    kl = "grpo.beta=0.04"  # the reference model after a resume is still the starting model
    Trainer(_config(data, straight, "optim.max_steps=4", "checkpoint.every=3", kl), registry).train()

    real_step = Trainer.train_step

    def step_then_sigterm(self):
        rows = real_step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would: finish the step, save, stop
        return rows

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    Trainer(_config(data, resumed, "optim.max_steps=4", "checkpoint.every=3", kl), registry).train()
    assert [r["step"] for r in _rows(resumed)] == [1, 2] and (resumed / "checkpoint-2").exists()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    Trainer(
        _config(data, resumed, "optim.max_steps=4", "checkpoint.every=3", "checkpoint.resume=auto", kl),
        registry,
    ).train()
    a, b = _rows(straight), _rows(resumed)
    assert any(r["grad_norm"] > 0 for r in a)  # the comparison is of real training, not of zeros
    assert a[-1]["kl"] > 0
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_a_learnable_reward_rises(fake_site, tmp_path, letters_task_source):
    fake_site.add("acme-letter", source=letters_task_source)
    registry = load_plugins(path=[str(fake_site.root)])
    data = tmp_path / "a.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "question": "Say a", "solution": "a"}) + "\n" for i in range(8))
    )
    out = tmp_path / "run"
    config = load_config(
        None,
        [
            f"output_dir={out}",
            "grpo.num_generations=8",
            "optim.prompts_per_step=2",
            "optim.lr=3e-3",
            "optim.lr_scheduler=constant",
            "generation.max_completion_length=6",
            "optim.max_steps=30",
            "logging.tensorboard=false",
            "checkpoint.every=100",
            f"tasks=[{{task: acme.letters, data: {data}}}]",
        ],
    )
    Trainer(config, registry).train()
    rewards = [r["reward"] for r in _rows(out)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards


def test_fused_and_naive_paths_give_the_same_training_metrics(with_letter, tmp_path):
    registry, data = with_letter
    letter = {"acme.letters": data["acme.letters"]}
    rows = {}
    for impl in ("fused", "naive"):
        out = tmp_path / impl
        Trainer(
            _config(
                letter,
                out,
                "optim.max_steps=3",
                f"model.logprobs={impl}",
                "grpo.beta=0.04",
                "grpo.num_iterations=3",
                "grpo.num_generations=4",
            ),
            registry,
        ).train()
        rows[impl] = _rows(out)
    assert all(r["grad_norm"] > 0 for r in rows["naive"]) and any(r["kl"] > 0 for r in rows["naive"])
    for a, b in zip(rows["fused"], rows["naive"]):
        for key in ("loss", "kl", "clip_ratio", "grad_norm", "reward"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key


def test_a_shared_prefix_gives_the_training_metrics_of_repeated_prompts(with_letter, tmp_path):
    """model.shared_prefix on (each prompt once per group) against off, on image prompts and text-only ones."""
    registry, data = with_letter
    mixed = {"acme.letters": data["acme.letters"], "count": data["count"]}
    rows = {}
    for setting in ("on", "off"):
        out = tmp_path / setting
        trainer = Trainer(
            _config(
                mixed,
                out,
                "optim.max_steps=2",
                f"model.shared_prefix={setting}",
                "grpo.beta=0.04",
                "grpo.num_iterations=2",
                "grpo.num_generations=3",
                "model.freeze_vision=false",
            ),
            registry,
        )
        trainer.train()
        assert trainer.shared_prefix is (setting == "on")
        rows[setting] = _rows(out)
    assert all(r["grad_norm"] > 0 for r in rows["off"]) and any(r["kl"] > 0 for r in rows["off"])
    for a, b in zip(rows["on"], rows["off"], strict=True):
        for key in ("loss", "kl", "clip_ratio", "grad_norm", "reward", "completion_length"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key


def test_out_of_memory_names_the_knobs_to_turn(data, tmp_path, monkeypatch):
    from vgrpo import TrainingError

    def oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Trainer, "train_step", oom)
    with pytest.raises(TrainingError) as info:
        Trainer(_config(data, tmp_path / "run", "optim.max_steps=2")).train()
    msg = str(info.value)
    assert "optim.prompts_per_step=2" in msg and "grpo.num_generations=2" in msg
    assert "model.gradient_checkpointing=true" in msg and "generation.max_completion_length=8" in msg


def test_non_finite_losses_skip_steps_then_stop_with_a_checkpoint(data, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from vgrpo import TrainingError
    from vgrpo.policy import Policy

    real_loss = Policy.loss
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        out = real_loss(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1 or calls["n"] >= 3:  # step 1 bad, step 2 fine, steps 3-5 bad
            return SimpleNamespace(loss=out.loss * float("nan"), kl=out.kl, clip_ratio=out.clip_ratio)
        return out

    monkeypatch.setattr(Policy, "loss", sometimes_nan)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="3 steps in a row"):
        Trainer(_config(data, out, "optim.max_steps=10", "checkpoint.every=100")).train()
    rows = _rows(out)
    assert [r.get("skipped", False) for r in rows] == [True, False, True, True]  # the 3rd in a row raises
    assert (out / "checkpoint-5").exists()
    assert rows[1]["counters/nonfinite_steps"] == 1


def test_evaluation_during_training_logs_each_tasks_metric_and_leaves_training_unchanged(data, tmp_path):
    plain, with_eval = tmp_path / "plain", tmp_path / "eval"
    Trainer(_config(data, plain, "optim.max_steps=3")).train()
    Trainer(
        _config(
            data,
            with_eval,
            "optim.max_steps=3",
            "eval.every=2",
            "eval.max_samples=2",
            "eval.max_new_tokens=4",
        )
    ).train()
    a, b = _rows(plain), _rows(with_eval)
    evaluated = [r["step"] for r in b if any(k.startswith("eval/") for k in r)]
    assert evaluated == [2, 3]  # every 2 steps, and after the last
    for task, metric in (("rec", "acc@0.5"), ("ovd", "map"), ("count", "accuracy"), ("math", "accuracy")):
        key = f"eval/{task}/{metric}"
        assert all(key in r and 0.0 <= r[key] <= 1.0 for r in b if r["step"] in evaluated), key
        assert b[1][f"eval/{task}/n"] == 2.0
    for ra, rb in zip(a, b):  # evaluation does not disturb sampling or training
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING and not k.startswith("eval/")
        }


def test_a_missing_image_is_found_at_start_up_naming_file_and_line(data, tmp_path):
    from vgrpo import DataError

    good = json.loads(data["count"].read_text().splitlines()[0])
    good["image"] = str(data["count"].parent / good["image"])
    bad = {**good, "id": "bad", "image": "nowhere.png", "image_size": [64, 64]}  # a size, so nothing opens it
    path = tmp_path / "count.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as info:
        Trainer(_config({"count": path}, tmp_path / "run", "optim.max_steps=1")).setup()
    message = str(info.value)
    assert "nowhere.png" in message and f"{path}:2" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_lora_trains_only_adapters_and_resumes_exactly_with_a_merged_loadable_checkpoint(
    with_letter, tmp_path
):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vgrpo.models.tiny import build_tiny

    registry, data = with_letter
    letters = {"acme.letters": data["acme.letters"]}
    lora = (
        "model.lora.enabled=true",
        "model.lora.r=4",
        "model.lora.dropout=0.0",
        "optim.lr_scheduler=constant",
        "grpo.beta=0.04",
        "optim.max_steps=3",
        "checkpoint.every=2",
        "grpo.num_generations=4",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    trainer = Trainer(_config(letters, straight, *lora), registry)
    trainer.train()
    trainable = [n for n, p in trainer.unwrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # freeze_vision keeps adapters out of the vision tower
    Trainer(
        _config(letters, resumed, *lora[:-3], "optim.max_steps=2", "checkpoint.every=2", lora[-1]), registry
    ).train()
    Trainer(_config(letters, resumed, *lora), registry).train()  # resumes from checkpoint-2: base + adapter
    a, b = _rows(straight), _rows(resumed)
    assert any(r["grad_norm"] > 0 for r in a) and a[-1]["kl"] > 0 and [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }

    ckpt = straight / "checkpoint-3"
    assert (ckpt / "lora" / "adapter_config.json").exists()
    merged = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        ckpt, dtype=torch.float32
    ).eval()  # a plain model: adapters merged
    base, processor = build_tiny(0)
    assert not torch.equal(merged.lm_head.weight, base.lm_head.weight) or not all(
        torch.equal(p, q)
        for p, q in zip(merged.model.language_model.parameters(), base.model.language_model.parameters())
    )
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = trainer.unwrapped.eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_a_stop_request_finishes_the_batch_so_a_resume_with_reused_batches_is_exact(
    with_letter, tmp_path, monkeypatch
):
    registry, data = with_letter
    letters = {"acme.letters": data["acme.letters"]}
    reuse = ("grpo.num_iterations=2", "grpo.beta=0.04", "optim.max_steps=4", "checkpoint.every=4")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(_config(letters, straight, *reuse), registry).train()
    real_optimize = Trainer._optimize

    def optimize_then_sigterm(self, *args):
        row = real_optimize(self, *args)
        if self.step == 1:  # the first of the batch's two optimizer steps
            os.kill(os.getpid(), signal.SIGTERM)
        return row

    monkeypatch.setattr(Trainer, "_optimize", optimize_then_sigterm)
    Trainer(_config(letters, resumed, *reuse), registry).train()
    assert [r["step"] for r in _rows(resumed)] == [1, 2] and (resumed / "checkpoint-2").exists()
    monkeypatch.setattr(Trainer, "_optimize", real_optimize)
    Trainer(_config(letters, resumed, *reuse), registry).train()
    a, b = _rows(straight), _rows(resumed)
    assert a[1]["kl"] > 0 and [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }
