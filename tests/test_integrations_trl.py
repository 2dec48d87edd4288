"""vgrpo's rewards as TRL reward functions: routing by task, per-(task, reward) values, a GRPOTrainer step."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pytest
import yaml

import vgrpo.integrations.trl as vtrl
from vgrpo.config import TrainConfig
from vgrpo.errors import DataError, ParamsError, UnknownNameError
from vgrpo.integrations.trl import dataset_rows, reward_funcs

REC_GT = json.dumps([0, 0, 10, 10])

# A mixed batch: completion, task, ground truth (JSON text), and what each reward gives, worked out by hand.
BATCH = [
    # rec: box [0, 0, 10, 5] inside [0, 0, 10, 10] -> IoU 50 / 100; think + answer -> format 1
    ("<think>a</think><answer>[0, 0, 10, 5]</answer>", "rec", REC_GT),
    # count: "3" is right; no <think> block -> format 0
    ("<answer>3</answer>", "count", "3"),
    # count, conversational: "two" parses to 2, wrong; well formatted
    ([{"role": "assistant", "content": "<think>b</think> <answer>two</answer>"}], "count", "3"),
    # rec, conversational with content parts: the exact box
    (
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "<think>c</think>"},
                    {"type": "text", "text": '<answer>{"bbox_2d": [0, 0, 10, 10]}</answer>'},
                ],
            }
        ],
        "rec",
        REC_GT,
    ),
    # count without answer tags: nothing parses
    ("I think 3", "count", "3"),
]
EXPECTED = {
    "rec/accuracy": [0.5, None, None, 1.0, None],
    "rec/format": [1.0, None, None, 1.0, None],
    "rec/iou": [0.5, None, None, 1.0, None],
    "count/accuracy": [None, 1.0, 0.0, None, 0.0],
    "count/format": [None, 0.0, 1.0, None, 0.0],
}
#: rec weighs accuracy 2 and format 0.5 (so iou 0); count keeps its defaults (1 and 1).
WEIGHTS = {"rec/accuracy": 2.0, "rec/format": 0.5, "rec/iou": 0.0, "count/accuracy": 1.0, "count/format": 1.0}
#: TRL's total per row: nansum of weight x value -> 2 * 0.5 + 0.5 * 1, 1 + 0, 0 + 1, 2 * 1 + 0.5 * 1, 0 + 0
TOTALS = [1.5, 1.0, 1.0, 2.5, 0.0]


def mixed_config() -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "tasks": [
                {"task": "rec", "data": ["unused.jsonl"], "rewards": {"accuracy": 2.0, "format": 0.5}},
                {"task": "count", "data": ["unused.jsonl"]},
            ]
        }
    )


def call_all(funcs, batch=BATCH, **extra):
    completions = [c for c, _, _ in batch]
    columns = {"task": [t for _, t, _ in batch], "solution": [s for _, _, s in batch], **extra}
    return {f.__name__: f(prompts=[[]] * len(batch), completions=completions, **columns) for f in funcs}


def test_routing_on_a_mixed_batch():
    funcs = reward_funcs(mixed_config())
    assert [f.__name__ for f in funcs] == list(EXPECTED)
    assert {f.__name__: f.weight for f in funcs} == WEIGHTS
    assert call_all(funcs) == EXPECTED
    values = call_all(funcs)
    totals = [
        sum(WEIGHTS[n] * v[i] for n, v in values.items() if v[i] is not None) for i in range(len(BATCH))
    ]
    assert totals == TOTALS


def test_a_batch_is_scored_once_per_task_and_logs_parse_rates(monkeypatch):
    calls = []
    real = vtrl.score

    def counting(task, *args, **kwargs):
        calls.append(task.name)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(vtrl, "score", counting)
    logged: list[tuple[str, float]] = []
    funcs = reward_funcs(["rec", "count"])
    call_all(funcs, log_metric=lambda name, value: logged.append((name, value)))
    assert calls == ["rec", "count"]  # five functions, one parse-and-score per task
    assert logged == [("tasks/rec/parse_rate", 1.0), ("tasks/count/parse_rate", 2 / 3)]
    call_all(funcs, batch=BATCH[:2])  # another batch is scored afresh
    assert calls == ["rec", "count", "rec", "count"]


def test_inputs_a_config_accepts(tmp_path: Path):
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(mixed_config().model_dump(mode="json")), encoding="utf-8")
    assert {f.__name__: f.weight for f in reward_funcs(path)} == WEIGHTS
    assert {f.__name__: f.weight for f in reward_funcs(str(path))} == WEIGHTS
    # one task: no task column needed; a non-string solution is the ground truth itself
    [acc, fmt] = reward_funcs(["count"])
    kwargs = {
        "prompts": [[], []],
        "completions": ["<answer>4</answer>", "<answer>5</answer>"],
        "solution": [4, 4],
    }
    assert acc(**kwargs) == [1.0, 0.0] and fmt(**kwargs) == [0.0, 0.0]

    with pytest.raises(ParamsError, match=r"got 'rec' \(for one task, pass \['rec'\]\)"):
        reward_funcs("rec")
    with pytest.raises(UnknownNameError, match="unknown task 'recc'"):
        reward_funcs(["recc"])
    bad = TrainConfig.model_validate(
        {"tasks": [{"task": "rec", "data": ["x.jsonl"], "rewards": {"acc": 1.0}}]}
    )
    with pytest.raises(ParamsError, match="unknown reward 'acc' for task 'rec'"):
        reward_funcs(bad)


def test_bad_columns_say_what_was_expected():
    funcs = reward_funcs(["rec", "count"])
    with pytest.raises(
        DataError, match=r"expected a 'task' column naming each row's task \(one of \['rec', 'count'\]\)"
    ):
        funcs[0](prompts=[[]], completions=["x"], solution=["3"])
    with pytest.raises(
        DataError, match=r"row 1: expected one of the configured tasks \['rec', 'count'\], got 'ovd'"
    ):
        funcs[0](prompts=[[]] * 2, completions=["x", "y"], task=["rec", "ovd"], solution=[REC_GT, "[]"])
    with pytest.raises(DataError, match=r"row 0 \(task rec\): .*x2 > x1"):
        funcs[0](prompts=[[]], completions=["x"], task=["rec"], solution=["[5, 0, 1, 10]"])


def test_a_plain_text_solution_is_taken_as_it_is():
    """R1-V/TRL math datasets hold the answer as plain text, not JSON text; JSON text is still parsed."""
    funcs = {f.__name__: f for f in reward_funcs(["math", "rec"])}
    batch = [
        (r"<think>.</think><answer>\frac{1}{2}</answer>", "math", r"\frac{1}{2}"),  # not JSON: the text
        (r"<think>.</think><answer>\frac{1}{3}</answer>", "math", r"\frac{1}{2}"),
        ("<think>.</think><answer>0.5</answer>", "math", json.dumps(r"\frac{1}{2}")),  # JSON text, as before
        ("<think>.</think><answer>[1, 2]</answer>", "math", "[1, 2]"),  # JSON, but a list: the text itself
        ("<think>.</think><answer>[0, 0, 10, 5]</answer>", "rec", REC_GT),  # structured: parsed
    ]
    values = call_all(funcs.values(), batch)
    assert values["math/accuracy"] == [1.0, 0.0, 1.0, 1.0, None]
    assert values["rec/accuracy"] == [None, None, None, None, 0.5]
    with pytest.raises(DataError, match=r"row 0 \(task count\): .*non-negative integer count, got 'three'"):
        reward_funcs(["count"])[0](prompts=[[]], completions=["x"], solution=["three"])
    with pytest.raises(DataError, match=r"row 0 \(task rec\): .*x2 > x1"):  # the JSON value's problem
        funcs["rec/accuracy"](prompts=[[]], completions=["x"], task=["rec"], solution=["[5, 0, 1, 10]"])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    from vgrpo.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("synth"), n_per_task=2, n_val=0, tasks=["rec", "count"], image_size=64
    )


def test_dataset_rows_round_trip_through_the_reward_funcs(synth):
    from vgrpo.data import load_jsonl
    from vgrpo.integrations.trl import _placeholder_prompt
    from vgrpo.plugins import get_registry

    rows = dataset_rows(synth["rec"], "rec") + dataset_rows(synth["count"], "count")
    assert len(rows) == 4 and [r["task"] for r in rows] == ["rec", "rec", "count", "count"]
    registry = get_registry()
    samples = load_jsonl(synth["rec"], registry.task("rec")) + load_jsonl(
        synth["count"], registry.task("count")
    )
    for row, sample in zip(rows, samples):
        task = registry.task(row["task"])
        assert row["prompt"] == _placeholder_prompt(task.build_prompt(sample, task.params()))
        assert [im.size for im in row["images"]] == [(64, 64)]
        assert json.loads(row["solution"]) == sample.solution and row["id"] == sample.id
        assert row["image_size"] == [64.0, 64.0]
    # the right answer to every row scores accuracy 1 and format 1 through the TRL functions
    completions = [f"<think>.</think><answer>{json.loads(r['solution'])}</answer>" for r in rows]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    values = {
        f.__name__: f(prompts=[r["prompt"] for r in rows], completions=completions, **columns)
        for f in reward_funcs(["rec", "count"])
    }
    assert values["rec/accuracy"] == [1.0, 1.0, None, None]
    assert values["count/accuracy"] == [None, None, 1.0, 1.0]
    assert values["rec/format"][:2] == values["count/format"][2:] == [1.0, 1.0]
    assert [p["images"] for p in dataset_rows(synth["count"], "count", load_images=False)] == [
        list(s.images) for s in samples[2:]
    ]


def test_grpo_trainer_runs_a_step_with_them(tmp_path: Path, synth):
    """TRL's GRPOTrainer, set up as `vgrpo.bench step` runs it, trains one step on rows of two tasks."""
    pytest.importorskip("trl")
    from datasets import Dataset

    from vgrpo.bench.step import add_arguments, prepare, trl_trainer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--prompts", "2", "-G", "2", "--max-new-tokens", "8", "--warmup", "0", "--steps", "1"]
    )
    model_dir, _ = prepare(tmp_path, args.seed, "count")
    rows = dataset_rows(synth["rec"], "rec")[:1] + dataset_rows(synth["count"], "count")[:1]
    funcs = reward_funcs(["rec", "count"])
    trainer = trl_trainer(
        args,
        model_dir,
        tmp_path / "trl",
        funcs,
        Dataset.from_list(rows),
        reward_weights=[f.weight for f in funcs],
    )
    trainer.train()
    assert trainer.state.global_step == 1
    logs = next(h for h in trainer.state.log_history if "reward" in h)
    for f in funcs:  # both tasks are in the batch (2 prompts, 2 rows), so every per-reward mean is a number
        assert math.isfinite(logs[f"rewards/{f.__name__}/mean"]), (f.__name__, logs)
    assert math.isfinite(logs["reward"])
    assert 0.0 <= logs["tasks/rec/parse_rate"] <= 1.0 and 0.0 <= logs["tasks/count/parse_rate"] <= 1.0


PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "trl.md"


def test_the_pages_example_trains_a_vgrpo_checkpoint_in_trl_as_it_stands(tmp_path: Path, monkeypatch):
    """docs/plugins/trl.md's example, run verbatim on a real vgrpo checkpoint of the tiny model: transformers'
    Auto classes load it (no vgrpo code) and TRL's GRPOTrainer trains a step with images on it."""
    pytest.importorskip("trl")
    from transformers import AutoProcessor
    from transformers.processing_utils import ProcessorMixin
    from trl import GRPOConfig, GRPOTrainer

    from vgrpo import cli
    from vgrpo.synth import synthesize

    [snippet] = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    data = synthesize(
        tmp_path / "data" / "tiny", n_per_task=2, n_val=0, tasks=["rec", "count"], image_size=64
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {name_or_path: tiny}\n"
        f"tasks: [{{task: rec, data: {data['rec']}}}, {{task: count, data: {data['count']}}}]\n"
        "grpo: {num_generations: 2}\ngeneration: {max_completion_length: 4}\noptim: {prompts_per_step: 2}\n"
        "logging: {tensorboard: false}\nrewards: {workers: 0}\n",
        encoding="utf-8",
    )
    assert cli.main(["train", str(config), "output_dir=runs/vgrpo", "max_steps=1"]) == 0
    # the page's path: the last checkpoint of examples/tiny.yaml (30 steps); one step writes the same folder
    (tmp_path / "runs" / "tiny").mkdir()
    (tmp_path / "runs" / "vgrpo" / "checkpoint-1").rename(tmp_path / "runs" / "tiny" / "checkpoint-30")
    namespace: dict = {}
    exec(compile(snippet, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own code
    assert isinstance(namespace["processor"], ProcessorMixin)
    assert type(namespace["processor"].image_processor).__name__ == "Qwen2VLImageProcessorPil"
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1
    logs = next(h for h in trainer.state.log_history if "reward" in h)
    for f in namespace["funcs"]:  # 4 prompts, every row of both tasks: each per-reward mean is a number
        assert math.isfinite(logs[f"rewards/{f.__name__}/mean"]), (f.__name__, logs)
    # and TRL loads the processor itself from the path, with AutoProcessor
    by_path = GRPOTrainer(
        model="runs/tiny/checkpoint-30",
        reward_funcs=namespace["funcs"],
        train_dataset=namespace["trainer"].train_dataset,
        args=GRPOConfig(
            output_dir="runs/trl2",
            per_device_train_batch_size=2,
            num_generations=2,
            max_steps=1,
            report_to=[],
            use_cpu=True,
        ),
    )
    assert type(by_path.processing_class) is type(AutoProcessor.from_pretrained("runs/tiny/checkpoint-30"))
    assert hasattr(by_path.processing_class, "image_processor")
