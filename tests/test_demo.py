"""`vgrpo demo` (`make demo`): synthetic data, eval, SFT, eval, GRPO, eval, the table. The pipeline at the
smallest size, then (slow) the recipe at reduced size: SFT teaches the format, GRPO raises the reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vgrpo import cli
from vgrpo.demo import STAGES, run_demo, stage_means

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _config(tmp_path: Path, tasks: tuple[str, ...], body: str, eval_extra: str = "") -> Path:
    data = tmp_path / "data"
    entries = "\n".join(f"  - {{task: {t}, data: data/{t}/train.jsonl}}" for t in tasks)
    evals = "\n".join(f"    {t}: data/{t}/val.jsonl" for t in tasks)
    path = tmp_path / "demo.yaml"
    text = (
        f"output_dir: {tmp_path / 'run'}\ntasks:\n{entries}\n"
        f"eval:\n  batch_size: 8\n{eval_extra}  data:\n{evals}\n"
    )
    path.write_text(f"{text}logging: {{tensorboard: false}}\n{body}", encoding="utf-8")
    assert not data.exists()
    return path


def test_the_demo_writes_three_evaluations_both_runs_and_their_plots(tmp_path, capsys):
    config = _config(
        tmp_path,
        ("count", "rec"),
        "sft: {steps: 2, batch: 2}\ngrpo: {num_generations: 2}\n"
        "optim: {max_steps: 2, prompts_per_step: 2}\ngeneration: {max_completion_length: 8}\n"
        "rewards: {workers: 0}\n",
        eval_extra="  num_samples: 2\n  temperature: 1.5\n",
    )
    argv = ["demo", str(config), "--synth", str(tmp_path / "data"), "--n", "4", "--image-size", "112"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for words in (*STAGES, "count", "rec", "format", "reward", "acc@0.5", "mean", "plots:", "took"):
        assert words in out
    flat = " ".join(out.split())
    assert (
        "val split: greedy" in flat
        and "val split: 2 completions per record sampled at temperature 1.5" in flat
    )
    run = tmp_path / "run"
    summary = json.loads((run / "demo" / "summary.json").read_text())
    assert list(summary["evals"]) == list(STAGES) == list(summary["sampled_evals"])
    # the greedy evaluation predicts each val record once, the sampled one scores both of its completions
    n_val = sum(len((tmp_path / "data" / t / "val.jsonl").read_text().splitlines()) for t in ("count", "rec"))
    greedy = (run / "demo" / "eval-grpo" / "predictions.jsonl").read_text().splitlines()
    sampled = (run / "demo" / "eval-grpo-sampled" / "predictions.jsonl").read_text().splitlines()
    assert len(greedy) == n_val and len(sampled) == 2 * n_val
    assert {json.loads(r)["sample"] for r in sampled} == {0, 1}
    assert (
        summary["sampled_evals"]["after GRPO"]["count"]["n"] == summary["evals"]["after GRPO"]["count"]["n"]
    )
    for stage in STAGES:
        assert set(summary["evals"][stage]) == {"count", "rec"}
        assert {"format", "reward", "parse_rate", "accuracy"} <= set(summary["evals"][stage]["count"])
    assert set(summary["grpo_reward_thirds"]) <= {"count", "rec"}
    assert (run / "sft" / "plot.png").exists() and (run / "plot.png").exists()
    assert (run / "sft" / "checkpoint-2").exists() and (run / "checkpoint-2").exists()
    # the GRPO run started from the SFT checkpoint
    assert f"name_or_path: {run / 'sft' / 'checkpoint-2'}" in (run / "config.yaml").read_text()
    # a second demo starts over; the first one's files are moved aside, never deleted
    assert cli.main(argv) == 0
    assert len(list((run / "previous-runs").iterdir())) >= 1 and (run / "demo" / "summary.json").exists()


@pytest.mark.slow
def test_the_demo_recipe_at_reduced_size_learns_the_format_then_raises_the_reward(tmp_path):
    """The recipe of examples/demo.yaml (its sft and grpo settings) on two tasks and fewer steps: after SFT
    the greedy format reward is at least 0.9 on each task (0 before), and GRPO's training reward over its last
    third of steps is above the first third's on the learnable task (count: a short answer, its format under
    sampling and its accuracy to gain) and on the mean over the tasks."""
    body = (
        "seed: 0\nsft: {steps: 150, lr: 1.0e-2, lr_scheduler: cosine, batch: 8}\n"
        "grpo: {num_generations: 4}\ngeneration: {max_completion_length: 32, temperature: 1.3}\n"
        "optim: {lr: 1.0e-3, lr_scheduler: constant, prompts_per_step: 8, max_steps: 18}\n"
    )
    config = _config(tmp_path, ("count", "math"), body)
    synth = {"n_per_task": 60, "image_size": 112, "max_shapes": 2}
    result = run_demo(config, synth_dir=tmp_path / "data", synth=synth)
    untrained, after_sft = result.evals["untrained"], result.evals["after SFT"]
    for task in ("count", "math"):
        assert untrained[task]["format"] == 0.0
        assert after_sft[task]["format"] >= 0.9, (task, after_sft[task])
    first, last = result.thirds["count"]
    assert last > first, result.thirds
    mean_first = sum(a for a, _ in result.thirds.values()) / len(result.thirds)
    mean_last = sum(b for _, b in result.thirds.values()) / len(result.thirds)
    assert mean_last > mean_first, result.thirds
    means = stage_means(result)  # the greedy evaluation after GRPO is not asserted: see docs/benchmarks.md
    assert means["after SFT"]["format"] >= 0.9 and means["untrained"]["reward"] == 0.0, means
