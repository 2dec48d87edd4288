"""Plugin failures during training are never silent: counted per task, each kind shown once on the console,
and a task that parses nothing because its parser raises is called out."""

from __future__ import annotations

import json
import logging

import pytest

from vgrpo.config import load_config
from vgrpo.plugins import load_plugins
from vgrpo.trainer import Trainer

FLAKY_TASK = """
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed):
    return 1.0 if parsed == "ok" else 0.0

class Flaky(vgrpo.Task):
    name = "acme.flaky"
    description = "A task whose parser raises on everything but its example."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy,)
    default_weights = {"accuracy": 1.0}
    example = {"id": "0", "question": "Say ok", "solution": "ok"}
    example_completion = "ok"
    def parse(self, completion, params):
        if completion == "ok":
            return "ok"
        if not completion:  # what registration checks besides the example
            return None
        raise RuntimeError("flaky parser exploded")
    def metric(self, predictions, samples, params):
        return {}

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Flaky()]
"""


@pytest.mark.parametrize("workers", [0, 1])
def test_a_parser_that_raises_is_counted_per_task_and_reported_once(fake_site, tmp_path, caplog, workers):
    fake_site.add("acme-flaky", source=FLAKY_TASK)
    registry = load_plugins()
    data = tmp_path / "flaky.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "question": "Say ok", "solution": "ok"}) + "\n" for i in range(4))
    )
    out = tmp_path / "run"
    config = load_config(
        None,
        [
            f"output_dir={out}",
            f"tasks=[{{task: acme.flaky, data: {data}}}]",
            "grpo.num_generations=2",
            "optim.prompts_per_step=2",
            "optim.max_steps=2",
            "generation.max_completion_length=4",
            "logging.tensorboard=false",
            f"rewards.workers={workers}",
        ],
    )
    with caplog.at_level(logging.WARNING):
        Trainer(config, registry).train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    key = "acme.flaky/parse/error"
    per_step = [r.get(f"step_counters/{key}", 0) for r in rows]
    assert all(n > 0 for n in per_step) and max(per_step) <= 4  # the step's raising completions (of 4)
    assert [r[f"counters/{key}"] for r in rows] == [
        per_step[0],
        per_step[0] + per_step[1],
    ]  # and the run's total
    assert all(r["tasks/acme.flaky/parse_rate"] == 0.0 for r in rows)
    first = [m for m in caplog.messages if "flaky parser exploded" in m]
    assert len(first) == 1 and "acme-flaky" in first[0]  # once, with the plugin that failed
    assert sum("no completion parsed" in m for m in caplog.messages) == 1
