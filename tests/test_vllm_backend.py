"""generation.backend: vllm on vLLM's real engine (the CPU build in `make test-vllm`), with `tiny-text`: the engine
follows the policy's weights step after step (greedy tokens and sampled log-probs), LoRA reaches it merged, a
learnable reward rises, a stopped and resumed run logs what an uninterrupted one does, and bad input fails with
what to change."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import uuid

import pytest
import torch

if os.environ.get("VGRPO_REQUIRE_VLLM"):  # make test-vllm: a missing vLLM is a failure, not a skip
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm")

from vgrpo.config import load_config
from vgrpo.errors import TrainingError
from vgrpo.plugins import load_plugins
from vgrpo.rollout import sample
from vgrpo.rollout_vllm import build_requests
from vgrpo.trainer import Trainer

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (vLLM's default is 4)
TIMING = {"step_time_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def letters(tmp_path_factory, letters_task_source):
    """The registry with task acme.letters (a reward a random model already earns) and its data."""
    root = tmp_path_factory.mktemp("site")
    module = f"fake_letters_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(textwrap.dedent(letters_task_source))
    info = root / "acme_letter-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-letter\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[vgrpo]\nacme-letter = {module}\n")
    import sys

    sys.path.insert(0, str(root))
    data = root / "letters.jsonl"
    records = [{"id": str(i), "question": "Say a", "solution": "a"} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    yield load_plugins(path=[str(root)]), data
    sys.path.remove(str(root))


def _config(out, data, *extra):
    return load_config(
        None,
        [
            f"output_dir={out}",
            "model.name_or_path=tiny-text",
            "generation.backend=vllm",
            "generation.vllm.max_model_len=256",
            "grpo.num_generations=4",
            "optim.prompts_per_step=2",
            "optim.lr=1e-2",
            "optim.lr_scheduler=constant",
            "generation.max_completion_length=8",
            "logging.tensorboard=false",
            "rewards.workers=0",
            "checkpoint.every=100",
            f"tasks=[{{task: acme.letters, data: {data}}}]",
            *extra,
        ],
    )


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _engine_vs_policy(trainer):
    """(engine greedy ids, HF greedy ids, engine sampled rollout, the policy's log-probs of it)."""
    prompts = trainer._draw_prompts(2)
    encoded_1 = trainer_encode(trainer, prompts, 1)
    requests = build_requests(trainer.processor, prompts, encoded_1, [1, 1], [1, 2])
    greedy = trainer.engine.generate(requests, encoded_1.inputs, trainer.eos_ids, greedy=True)
    hf = sample(
        trainer.unwrapped,
        trainer.processor,
        encoded_1.inputs,
        trainer.config.generation,
        trainer.eos_ids,
        greedy=True,
    )
    encoded = trainer_encode(trainer, prompts, 4)
    requests = build_requests(trainer.processor, prompts, encoded, [4, 4], [3, 4])
    sampled = trainer.engine.generate(requests, encoded.inputs, trainer.eos_ids)
    return greedy, hf, sampled, trainer.policy.logps(sampled)


def trainer_encode(trainer, prompts, g):
    from vgrpo.prompts import encode_prompts

    return encode_prompts(trainer.adapter, trainer.processor, prompts, trainer.dist.device, group_size=g)


def test_after_each_optimizer_step_the_engine_generates_and_scores_as_the_policy(letters, tmp_path):
    registry, data = letters
    trainer = Trainer(_config(tmp_path / "run", data, "optim.max_steps=3"), registry)
    trainer.setup()
    try:
        _, _, first, before = _engine_vs_policy(trainer)
        for step in range(1, 4):
            rows = trainer.train_step()
            assert rows[-1]["step"] == step and rows[-1]["grad_norm"] > 0
            assert rows[-1]["rollout/logp_diff_max"] < 1e-4  # the rollout of this step was sampled in sync
            trainer.sync_engine()
            greedy, hf, sampled, policy = _engine_vs_policy(trainer)
            assert greedy.completion_ids.tolist() == hf.completion_ids.tolist(), f"step {step}"
            assert torch.equal(greedy.completion_mask, hf.completion_mask)
            assert sampled.completion_mask.sum() > 0
            diff = ((policy - sampled.sampler_logps) * sampled.completion_mask).abs().max()
            assert float(diff) < 1e-4, f"step {step}: engine and policy log-probs differ by {float(diff)}"
        moved = ((trainer.policy.logps(first) - before) * first.completion_mask).abs().max()
        assert float(moved) > 1e-2  # the weights really changed: a stale engine would fail the checks above

        # a weight the engine does not know is an error, before anything is generated with it
        state = dict(trainer.unwrapped.state_dict())
        state["model.norm.weight"] = torch.ones(3)
        with pytest.raises(TrainingError, match="refused the policy's weights.*backend: hf"):
            trainer.engine.load_weights(state.items())
    finally:
        trainer.cleanup()


def test_lora_weights_reach_the_engine_merged(letters, tmp_path):
    registry, data = letters
    lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0"]
    trainer = Trainer(_config(tmp_path / "lora", data, "optim.max_steps=2", "optim.lr=5e-2", *lora), registry)
    trainer.setup()
    try:
        for _ in range(2):
            trainer.train_step()
        trainer.sync_engine()
        _, _, sampled, policy = _engine_vs_policy(trainer)
        mask = sampled.completion_mask
        assert float(((policy - sampled.sampler_logps) * mask).abs().max()) < 1e-4
        with (
            trainer.policy.peft_model.disable_adapter()
        ):  # the base alone: what an unmerged engine would hold
            base = trainer.policy.logps(sampled)
        assert float(((base - sampled.sampler_logps) * mask).abs().max()) > 1e-3
    finally:
        trainer.cleanup()


def test_a_learnable_reward_rises_on_vllm(letters, tmp_path):
    registry, data = letters
    out = tmp_path / "learn"
    config = _config(
        out,
        data,
        "grpo.num_generations=8",
        "optim.lr=3e-3",
        "generation.max_completion_length=6",
        "optim.max_steps=30",
    )
    Trainer(config, registry).train()
    rewards = [r["reward"] for r in _rows(out)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards


def test_a_stopped_and_resumed_run_logs_the_same_metrics_and_skips_prompts_too_long(
    letters, tmp_path, monkeypatch
):
    registry, data = letters
    long = tmp_path / "long.jsonl"
    text = data.read_text() + json.dumps({"id": "long", "question": "a" * 400, "solution": "a"}) + "\n"
    long.write_text(text)
    common = ("optim.max_steps=4", "grpo.beta=0.04", "generation.vllm.max_model_len=128")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(_config(straight, long, *common), registry).train()

    real_step = Trainer.train_step

    def step_then_sigterm(self):
        rows = real_step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # finish the step, save, stop
        return rows

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    Trainer(_config(resumed, long, *common), registry).train()
    assert [r["step"] for r in _rows(resumed)] == [1, 2] and (resumed / "checkpoint-2").exists()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    Trainer(_config(resumed, long, *common, "checkpoint.resume=auto"), registry).train()
    a, b = _rows(straight), _rows(resumed)
    assert any(r["grad_norm"] > 0 for r in a) and a[-1]["kl"] > 0  # real training, not zeros
    assert a[-1].get("counters/prompts_too_long", 0) > 0  # the long record was drawn, skipped and counted
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_a_model_the_engine_cannot_serve_names_its_type_and_the_hf_backend(letters, tmp_path):
    """XLNet: a causal LM transformers trains but vLLM has no model for."""
    from transformers import XLNetConfig, XLNetLMHeadModel

    from vgrpo.models.text import build_tiny_text

    registry, data = letters
    _, processor = build_tiny_text(0)
    folder = tmp_path / "xlnet"
    tok = processor.tokenizer
    config = XLNetConfig(vocab_size=272, d_model=32, n_layer=1, n_head=2, d_inner=64)
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    XLNetLMHeadModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    config = _config(
        tmp_path / "run", data, f"model.name_or_path={folder}", "model.attn_implementation=eager"
    )
    with pytest.raises(
        TrainingError,
        match=r"could not serve model .*model type xlnet.*XLNetLMHeadModel.*not supported.*generation.backend: hf",
    ):
        Trainer(config, registry).setup()
