"""A plugin that prints, at import and in every call, never corrupts vgrpo's machine-readable output."""

from __future__ import annotations

import json

import pytest

from vgrpo.cli import main

PRINTING = """
import vgrpo
print("NOISE at import")

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed, sample):
    print("NOISE in a reward")
    return 1.0 if parsed == sample.solution else 0.0

class Loud(vgrpo.Task):
    name = "acme.loud"
    description = "A task that prints everywhere."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {"id": "0", "question": "Say hi", "solution": "hi"}
    example_completion = "<think>.</think><answer>hi</answer>"
    def parse(self, completion, params):
        print("NOISE in parse")
        return vgrpo.extract_answer(completion)
    def check_solution(self, solution):
        print("NOISE in check_solution")
        return solution
    def metric(self, predictions, samples, params):
        print("NOISE in the metric")
        return {"accuracy": sum(p == s.solution for p, s in zip(predictions, samples)) / max(1, len(samples))}

@vgrpo.hookimpl
def vgrpo_tasks():
    print("NOISE in a hook")
    return [Loud()]
"""


@pytest.fixture
def loud(fake_site, tmp_path):
    fake_site.add("acme-loud", source=PRINTING)
    data = tmp_path / "loud.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Say hi", "solution": "hi"}) + "\n")
    return data


@pytest.mark.parametrize(
    "command",
    [["plugins", "--json"], ["env", "--json"], ["tasks", "--json"], ["tasks", "show", "acme.loud", "--json"]],
)
def test_json_commands_stay_valid_json(loud, capsys, command):
    assert main(command) == 0
    out, err = capsys.readouterr()
    json.loads(out)
    assert "NOISE" not in out and "NOISE at import" in err


def test_data_check_json_and_score_jsonl_stay_valid(loud, capsys, tmp_path):
    assert main(["data", "check", "--task", "acme.loud", str(loud), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["problems"] == []
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "".join(
            json.dumps({"completion": c, "solution": "hi"}) + "\n"
            for c in ["<think>.</think><answer>hi</answer>", "no"]
        )
    )
    assert main(["score", "acme.loud", str(cases)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rewards"]["accuracy"] for r in rows] == [1.0, 0.0] and "NOISE in a reward" in err


def test_evaluation_reports_a_metric_that_raises_and_goes_on(caplog):
    import math

    import vgrpo
    from vgrpo.evaluate import EvalSplit, _split_metrics

    class Broken(vgrpo.Task):
        name = "acme.broken"
        template = vgrpo.PromptTemplate(user="{question}")
        metric_names = ("accuracy",)

        def parse(self, completion, params):
            return completion

        def metric(self, predictions, samples, params):
            raise ZeroDivisionError("metric bug")

    task = Broken()
    split = EvalSplit(task, task.params(), [vgrpo.Sample(id="a")])
    done = {("acme.broken", "a", 0, "null", 8): {"parsed": None, "error": "parse raised ValueError: x"}}
    metrics = _split_metrics(split, done, 1, None, 8, [])
    assert math.isnan(metrics["accuracy"]) and metrics["unparsed"] == 1.0
    assert (
        "metric raised ZeroDivisionError: metric bug" in caplog.text
        and "parser raised on 1 of 1" in caplog.text
    )
