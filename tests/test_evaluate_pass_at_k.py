"""Sampled evaluation: the pass@k estimator, each task's per-record correctness, resuming with N samples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

import vgrpo
from vgrpo import cli
from vgrpo.data import load_jsonl
from vgrpo.evaluate import EvalSplit, evaluate, pass_at_k
from vgrpo.models.adapters import Qwen25VLAdapter
from vgrpo.synth import synthesize

SAMPLED = {"temperature": 1.0, "top_p": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=4, n_val=0, seed=4, tasks=["count"])


@pytest.fixture(scope="module")
def tiny():
    adapter = Qwen25VLAdapter()
    model, processor = adapter.load("tiny")
    return adapter, model, processor


def row(
    task: str,
    sample_id: str,
    index: int,
    completion: str,
    parsed: Any,
    sampling: Any = SAMPLED,
    max_new_tokens: int = 256,
) -> dict:
    return {
        "task": task,
        "id": sample_id,
        "sample": index,
        "sampling": sampling,
        "max_new_tokens": max_new_tokens,
        "completion": completion,
        "parsed": parsed,
        "input_size": None,
        "error": None,
    }


# -- the estimator -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 2 / 5),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 4, 1 - 35 / 210),  # 1 - C(7,4)/C(10,4)
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),
        (5, 4, 2, 1.0),  # n - c < k: every draw of 2 holds a correct one
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError, match="pass@k"):
            pass_at_k(n, c, k)


# -- per-record correctness of the built-in tasks ---------------------------------------------------------
def correct(task_name: str, predictions: Sequence[Any], solutions: Sequence[Any], **extra: Any) -> list[bool]:
    task = vgrpo.get_registry().task(task_name)
    samples = [
        vgrpo.Sample(id=str(i), solution=task.check_solution(s), **extra) for i, s in enumerate(solutions)
    ]
    return task.correct(list(predictions), samples, task.params())


def test_rec_is_correct_at_iou_half():
    gt = [0, 0, 100, 100]
    # IoU 0.5 exactly (50x100 inside), 0.49, 1.0, unparsable, an invalid box
    got = correct("rec", [[0, 0, 50, 100], [0, 0, 49, 100], gt, None, [10, 10, 5, 5]], [gt] * 5)
    assert got == [True, False, True, False, False]


def test_count_is_correct_when_exact():
    assert correct("count", [3, 4, 3.0, None, 0], [3, 3, 3, 3, 0]) == [True, False, False, False, True]


def test_math_is_correct_when_verified():
    task = vgrpo.get_registry().task("math")
    completions = [
        "<answer>\\boxed{5}</answer>",
        "<answer>x = 5</answer>",
        "<answer>\\boxed{6}</answer>",
        "no",
    ]
    parsed = [task.parse(c, task.params()) for c in completions]
    assert correct("math", parsed, ["5"] * 4) == [True, True, False, False]


def test_ovd_is_correct_with_all_objects_and_nothing_else():
    a, b = {"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [20, 20, 40, 40], "label": "dog"}
    near = {"bbox_2d": [1, 1, 11, 11], "label": "CAT "}  # IoU 81/119 ≥ 0.5, label normalised
    extra = {"bbox_2d": [50, 50, 60, 60], "label": "zebra"}
    preds = [[b, a], [near, b], [a], [a, b, extra], [a, a, b], None, [], [a]]
    gts = [[a, b]] * 6 + [[], []]
    assert correct("ovd", preds, gts) == [True, True, False, False, False, False, True, False]


def test_default_rule_is_the_first_metric_on_one_record():
    class Half(vgrpo.Task):
        name = "half"
        template = vgrpo.PromptTemplate(user="{question}")
        metric_names = ("score", "other")

        def parse(self, completion, params):
            return completion

        def metric(self, predictions, samples, params):
            score = sum(1.0 if p == s.solution else 0.5 for p, s in zip(predictions, samples)) / len(samples)
            return {"other": 1.0, "score": score}

    task = Half()
    samples = [vgrpo.Sample(id=str(i), solution="a") for i in range(3)]
    assert task.correct(["a", "b", None], samples, task.params()) == [True, False, False]


# -- evaluate with N samples ---------------------------------------------------------------------------------
def test_pass_at_k_metrics_from_the_rows(data, tiny, tmp_path):
    """3 records x 4 samples with 0, 2 and 4 correct (one unparsable): every number by hand."""
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    samples = load_jsonl(data["count"], task)[:3]
    right = {0: set(), 1: {0, 1}, 2: {0, 1, 2, 3}}
    rows = []
    for r, s in enumerate(samples):
        for i in range(4):
            value = s.solution if i in right[r] else s.solution + 1
            parsed = None if (r, i) == (0, 3) else value
            text = f"<answer>{value}</answer>" if parsed is not None else "?"
            rows.append(row("count", s.id, i, text, parsed))
    out = tmp_path / "eval"
    out.mkdir()
    (out / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    split = EvalSplit(task, task.params(), samples)
    metrics = evaluate(model, processor, adapter, [split], out, num_samples=4, pass_k=[1, 2, 4])
    got = metrics["count"]
    assert got["pass@1"] == pytest.approx((0 + 2 / 4 + 1) / 3)
    assert got["pass@2"] == pytest.approx((0 + (1 - 1 / 6) + 1) / 3)  # 1 - C(2,2)/C(4,2)
    assert got["pass@4"] == pytest.approx(2 / 3)
    # accuracy per sample index (2/3, 2/3, 1/3, 1/3), averaged: equals pass@1
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["parse_rate"] == pytest.approx(11 / 12) and got["unparsed"] == 1 and got["n"] == 3
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12  # nothing generated
    default = evaluate(model, processor, adapter, [split], out, num_samples=4)["count"]
    assert {k for k in default if k.startswith("pass@")} == {"pass@1", "pass@4"}  # default k: 1 and N


def test_resume_with_n_samples_generates_only_missing_rows(data, tiny, tmp_path):
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    samples = load_jsonl(data["count"], task)
    out = tmp_path / "eval"
    out.mkdir()
    kept = [
        row("count", s.id, i, "<answer>1</answer>", 1, max_new_tokens=3) for s in samples for i in range(2)
    ]
    greedy = row("count", samples[0].id, 2, "<answer>1</answer>", 1, None, 3)  # other mode: not reused
    (out / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [*kept, greedy]))
    split = EvalSplit(task, task.params(), samples)
    metrics = evaluate(model, processor, adapter, [split], out, num_samples=3, max_new_tokens=3, batch_size=3)
    new = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()[len(kept) + 1 :]]
    assert sorted((r["id"], r["sample"]) for r in new) == sorted((s.id, 2) for s in samples)
    assert all(r["sampling"] == SAMPLED for r in new)
    assert set(metrics["count"]) >= {"accuracy", "pass@1", "pass@3", "parse_rate", "unparsed", "n"}
    before = (out / "predictions.jsonl").read_text()
    again = evaluate(model, processor, adapter, [split], out, num_samples=3, max_new_tokens=3, batch_size=3)
    assert again == metrics and (out / "predictions.jsonl").read_text() == before


def test_sampled_evaluation_is_seeded_and_leaves_the_callers_rng_alone(data, tiny, tmp_path):
    import torch

    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    split = EvalSplit(task, task.params(), load_jsonl(data["count"], task))
    model.train()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    kw = {"num_samples": 3, "max_new_tokens": 6, "batch_size": 4, "temperature": 1.5, "seed": 7}
    evaluate(model, processor, adapter, [split], tmp_path / "a", **kw)
    assert torch.equal(torch.get_rng_state(), state)  # training's RNG stream is untouched
    assert model.training  # and the model is back in the mode it was in
    evaluate(model, processor, adapter, [split], tmp_path / "b", **{**kw, "batch_size": 1})
    evaluate(model, processor, adapter, [split], tmp_path / "c", **{**kw, "seed": 8})

    def completions(name: str) -> dict[tuple[str, int], str]:
        rows = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        return {(r["id"], r["sample"]): r["completion"] for r in rows}

    a = completions("a")
    assert len(a) == 12 and len(set(a.values())) > 1
    assert completions("b") == a  # each row has its own random stream: batching does not matter
    assert completions("c") != a  # another seed, other samples
    model.eval()


def test_sampled_rows_are_reused_only_with_the_same_seed(data, tiny, tmp_path):
    """Another seed samples again; a sampled row that does not say its seed (an older file's) is not trusted."""
    adapter, model, processor = tiny
    task = vgrpo.get_registry().task("count")
    split = EvalSplit(task, task.params(), load_jsonl(data["count"], task)[:2])
    out = tmp_path / "eval"
    out.mkdir()
    unseeded = row(
        "count", split.samples[0].id, 0, "<answer>1</answer>", 1, {"temperature": 1.0, "top_p": 1.0}, 3
    )
    (out / "predictions.jsonl").write_text(json.dumps(unseeded) + "\n")
    kw = {"num_samples": 2, "max_new_tokens": 3}

    def made() -> list[tuple[str, int, int | None]]:
        rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()[1:]]
        return [(r["id"], r["sample"], (r["sampling"] or {}).get("seed")) for r in rows]

    evaluate(model, processor, adapter, [split], out, seed=1, **kw)
    assert sorted(made()) == sorted((x.id, i, 1) for x in split.samples for i in range(2))
    evaluate(model, processor, adapter, [split], out, seed=1, **kw)
    assert len(made()) == 4  # same seed: nothing sampled
    evaluate(model, processor, adapter, [split], out, seed=2, **kw)
    assert sorted(made()[4:]) == sorted((x.id, i, 2) for x in split.samples for i in range(2))
    evaluate(model, processor, adapter, [split], out, seed=3, max_new_tokens=3)
    evaluate(model, processor, adapter, [split], out, seed=4, max_new_tokens=3)
    assert made()[8:] == [(x.id, 0, None) for x in split.samples]  # greedy rows do not depend on the seed


def test_cli_eval_samples_and_k_then_resume_with_more(data, tmp_path, capsys):
    out = tmp_path / "e"
    base = [
        "eval",
        "--model",
        "tiny",
        "--task",
        "count",
        "--data",
        str(data["count"]),
        "--output-dir",
        str(out),
        "--max-new-tokens",
        "3",
    ]
    assert cli.main([*base, "--samples", "3", "--k", "1,2"]) == 0
    metrics = json.loads((out / "eval_metrics.json").read_text())["count"]
    assert {k for k in metrics if k.startswith("pass@")} == {"pass@1", "pass@2"}
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@2"] <= 1.0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["sample"] for r in rows) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    table = capsys.readouterr().out
    assert "pass@2" in table and "unparsed" in table and "3 samples per record" in table
    assert cli.main([*base, "--samples", "4"]) == 0  # one more sample per record; k defaults to 1 and 4
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and sorted(r["sample"] for r in rows[12:]) == [3, 3, 3, 3]
    metrics = json.loads((out / "eval_metrics.json").read_text())["count"]
    assert {k for k in metrics if k.startswith("pass@")} == {"pass@1", "pass@4"}


def test_cli_eval_rejects_k_above_samples(data, capsys):
    code = cli.main(["eval", "--model", "tiny", "--task", "count", "--data", str(data["count"]), "--k", "4"])
    assert code == 2 and "num_samples" in capsys.readouterr().err
    code = cli.main(
        [
            "eval",
            "--model",
            "tiny",
            "--task",
            "count",
            "--data",
            str(data["count"]),
            "--samples",
            "2",
            "--k",
            "1,3",
        ]
    )
    assert code == 2 and "between 1 and num_samples (2)" in " ".join(capsys.readouterr().err.split())
