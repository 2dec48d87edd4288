"""Rewards in worker processes: same results as in-process, and a hanging reward cannot stall the caller."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import vgrpo
from vgrpo.plugins import load_plugins
from vgrpo.reward_pool import RewardPool

SLOW_TASK = '''
import time
import vgrpo

@vgrpo.reward(range=(-1.0, 1.0))
def accuracy(parsed, sample):
    """Hangs when the answer says so."""
    if parsed == "hang":
        time.sleep(600)
    if parsed == "raise":
        raise RuntimeError("reward bug")
    return 1.0 if parsed == sample.solution else 0.0

class Slow(vgrpo.Task):
    name = "acme.slow"
    description = "A task whose reward can hang."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy, vgrpo.format_reward)
    example = {"id": "0", "question": "q", "solution": "a"}
    example_completion = "<think>t</think><answer>a</answer>"
    def parse(self, completion, params):
        return vgrpo.extract_answer(completion)
    def metric(self, predictions, samples, params):
        return {}

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Slow()]
'''


@pytest.fixture
def slow(fake_site):
    fake_site.add("acme-slow", source=SLOW_TASK)
    pool = RewardPool(workers=2, timeout_s=3.0)
    yield load_plugins().task("acme.slow"), pool
    pool.close()


def _samples(n):
    return [vgrpo.Sample(id=str(i), solution="a") for i in range(n)]


def test_worker_results_equal_in_process_results(slow):
    task, pool = slow
    completions = ["<think>t</think><answer>a</answer>", "<answer>b</answer>", "<answer>raise</answer>"]
    params, weights = task.params(), {"accuracy": 1.0, "format": 1.0}
    expected = vgrpo.score(task, completions, _samples(3), params, weights)
    got = pool.score(task, completions, _samples(3), params, weights)
    assert [(g.parsed, g.rewards, g.reward) for g in got] == [(e.parsed, e.rewards, e.reward) for e in expected]
    assert "reward bug" in got[2].errors[0]


def test_a_hanging_reward_times_out_scores_the_minimum_and_the_next_call_works(slow):
    task, pool = slow
    failures: Counter[str] = Counter()
    start = time.monotonic()
    hung = pool.score(task, ["<answer>hang</answer>", "<answer>a</answer>"], _samples(2), task.params(),
                      {"accuracy": 1.0, "format": 1.0}, failures=failures)  # fmt: skip
    assert time.monotonic() - start < 60  # the 600 s sleep was cut off
    assert [r.rewards["accuracy"] for r in hung] == [-1.0, -1.0] and all("timeout" in r.errors[0] for r in hung)
    assert failures["accuracy/timeout"] == 2
    [ok] = pool.score(task, ["<answer>a</answer>"], _samples(1), task.params(), {"accuracy": 1.0})
    assert ok.reward == 1.0


def test_calls_run_in_parallel_on_different_workers(slow):
    task, pool = slow
    calls = [{"task": task, "completions": ["<answer>a</answer>"] * 3, "samples": _samples(3),
              "params": task.params(), "weights": {"accuracy": 1.0}} for _ in range(2)]  # fmt: skip
    results = pool.score_many(calls)
    assert [[r.reward for r in rs] for rs in results] == [[1.0] * 3, [1.0] * 3]
