"""Rewards in worker processes: same results as in-process, and a hanging reward cannot stall the caller."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import vgrpo
from vgrpo.plugins import load_plugins
from vgrpo.reward_pool import RewardPool

SLOW_TASK = '''
import os
import time
import vgrpo

@vgrpo.reward(range=(-1.0, 1.0))
def accuracy(parsed, sample):
    """Hangs when the answer says so."""
    if parsed == "hang":
        time.sleep(600)
    if parsed == "raise":
        raise RuntimeError("reward bug")
    if parsed == "crash":
        os._exit(3)
    if parsed and parsed.startswith("spawn "):  # starts a process that would outlive the worker, then hangs
        import subprocess
        proc = subprocess.Popen(["sleep", "600"])
        with open(parsed.split(" ", 1)[1], "w") as f:
            f.write(str(proc.pid))
        time.sleep(600)
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


PENALTY_PLUGIN = '''
import vgrpo

@vgrpo.reward("acme.length_penalty", range=(-1.0, 0.0))
def length_penalty(completion):
    """Minus the completion's length in hundreds of characters, at most -1."""
    return -min(1.0, len(completion) / 100)

@vgrpo.hookimpl
def vgrpo_rewards():
    return [length_penalty]
'''


@pytest.fixture
def slow(fake_site):
    fake_site.add("acme-slow", source=SLOW_TASK)
    pool = RewardPool(workers=2, timeout_s=3.0)
    yield load_plugins().task("acme.slow"), pool
    pool.close()


def _samples(n):
    return [vgrpo.Sample(id=str(i), solution="a") for i in range(n)]


def _values(scores):
    return [(s.parsed, s.rewards, s.reward) for s in scores]


def test_worker_results_equal_in_process_results(slow):
    task, pool = slow
    completions = ["<think>t</think><answer>a</answer>", "<answer>b</answer>", "<answer>raise</answer>"]
    params, weights = task.params(), {"accuracy": 1.0, "format": 1.0}
    expected = vgrpo.score(task, completions, _samples(3), params, weights)
    got = pool.score(task, completions, _samples(3), params, weights)
    assert _values(got) == _values(expected)
    assert "reward bug" in got[2].errors[0]


def test_a_hanging_reward_times_out_scores_the_minimum_and_the_next_call_works(slow):
    task, pool = slow
    failures: Counter[str] = Counter()
    start = time.monotonic()
    completions, weights = ["<answer>hang</answer>", "<answer>a</answer>"], {"accuracy": 1.0, "format": 1.0}
    hung = pool.score(task, completions, _samples(2), task.params(), weights, failures=failures)
    assert time.monotonic() - start < 60  # the 600 s sleep was cut off
    assert [r.rewards["accuracy"] for r in hung] == [-1.0, -1.0]
    assert all("timeout" in r.errors[0] for r in hung)
    assert failures["accuracy/timeout"] == 2
    [ok] = pool.score(task, ["<answer>a</answer>"], _samples(1), task.params(), {"accuracy": 1.0})
    assert ok.reward == 1.0


def test_a_worker_that_dies_mid_call_scores_the_minimum_counted_as_a_crash(slow):
    task, pool = slow
    failures: Counter[str] = Counter()
    crashed = pool.score(
        task, ["<answer>crash</answer>"], _samples(1), task.params(), {"accuracy": 1.0}, failures=failures
    )
    assert crashed[0].rewards == {"accuracy": -1.0, "format": 0.0} and crashed[0].reward == -1.0
    assert crashed[0].errors == ["crash: the reward worker died (exit code 3)"]
    assert failures == Counter({"accuracy/crash": 1, "format/crash": 1})


def test_calls_run_in_parallel_on_different_workers(slow):
    task, pool = slow
    call = {"task": task, "completions": ["<answer>a</answer>"] * 3, "samples": _samples(3)}
    calls = [{**call, "params": task.params(), "weights": {"accuracy": 1.0}} for _ in range(2)]
    results = pool.score_many(calls)
    assert [[r.reward for r in rs] for rs in results] == [[1.0] * 3, [1.0] * 3]


def test_a_failed_call_scores_each_weighted_reward_at_its_minimum_plugin_rewards_included(slow, fake_site):
    """A (-1, 0) penalty from a reward plugin scores -1 (not 0, its best) when the task's reward hangs."""
    fake_site.add("acme-penalty", source=PENALTY_PLUGIN)
    registry = load_plugins()
    task, pool = slow
    weights = {"accuracy": 1.0, "format": 0.5, "acme.length_penalty": 2.0}
    call = {"task": task, "samples": _samples(2), "params": task.params(), "weights": weights}
    call["plugin_rewards"] = registry.rewards  # as the trainer passes them
    hang, fine = ["<answer>hang</answer>", "<answer>a</answer>"], ["<answer>a</answer>"] * 2
    failures: Counter[str] = Counter()
    calls = [{**call, "completions": hang}, {**call, "completions": fine}]
    hung, scored = pool.score_many(calls, failures=failures)
    minima = {"accuracy": -1.0, "format": 0.0, "acme.length_penalty": -1.0}  # the declared ranges' lower ends
    assert [r.rewards for r in hung] == [minima, minima]
    assert [r.reward for r in hung] == [1.0 * -1.0 + 0.5 * 0.0 + 2.0 * -1.0] * 2
    assert failures == Counter({"accuracy/timeout": 2, "format/timeout": 2, "acme.length_penalty/timeout": 2})
    expected = vgrpo.score(task, fine, _samples(2), task.params(), weights, plugin_rewards=registry.rewards)
    assert [(r.rewards, r.reward) for r in scored] == [(e.rewards, e.reward) for e in expected]
    assert expected[0].rewards["acme.length_penalty"] > -1.0  # the worker computed the plugin reward itself


def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too (only its parent's wait is missing)
        return f.read().split()[2] != "Z"


def test_a_timeout_ends_the_processes_a_reward_started_and_a_ctrl_c_never_reaches_a_worker(slow, tmp_path):
    import os
    import signal

    task, pool = slow
    pid_file = tmp_path / "child.pid"
    failures: Counter[str] = Counter()
    (hung,) = pool.score(
        task,
        [f"<answer>spawn {pid_file}</answer>"],
        _samples(1),
        task.params(),
        {"accuracy": 1},
        failures=failures,
    )
    assert failures["accuracy/timeout"] == 1 and hung.reward == -1.0
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)  # killed with the worker's process group
    ok = pool.score(
        task, ["<answer>a</answer>"], _samples(1), task.params(), {"accuracy": 1}
    )  # a fresh worker
    worker = next(w for w in pool._free if w.proc is not None)
    assert os.getpgid(worker.proc.pid) != os.getpgid(
        0
    )  # its own group: a terminal's Ctrl-C goes to ours only
    os.kill(worker.proc.pid, signal.SIGINT)  # and even sent to it directly, SIGINT is ignored
    again = pool.score(task, ["<answer>a</answer>"], _samples(1), task.params(), {"accuracy": 1})
    assert worker.proc is not None and worker.proc.poll() is None
    assert ok[0].rewards["accuracy"] == again[0].rewards["accuracy"] == 1.0
