"""Random SIGKILLs during steps and checkpoint writes, then resumes, over several rounds: the run ends with the
metrics of an uninterrupted one, no step missing or logged twice (slow: `make test-slow`)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

TIMING = {"step_time_s", "tokens_per_s"}
pytestmark = pytest.mark.slow


def _train(config, out, fake_site, *, kill_after=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_site.root), *sys.path])}
    cmd = [sys.executable, "-m", "vgrpo.cli", "train", str(config), f"output_dir={out}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
        return True
    try:
        proc.wait(timeout=kill_after)
        return True  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False


def _rows(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_a_kill_loop_ends_with_the_metrics_of_an_uninterrupted_run(fake_site, letters_task_source, tmp_path):
    fake_site.add("acme-letter", source=letters_task_source)
    data = tmp_path / "letter.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "question": "Say a", "solution": "a"}) + "\n" for i in range(8))
    )
    config = tmp_path / "letters.yaml"
    config.write_text(
        f"tasks: [{{task: acme.letters, data: {data}}}]\n"
        "grpo: {num_generations: 2}\noptim: {prompts_per_step: 2, lr: 0.001, max_steps: 6}\n"
        "generation: {max_completion_length: 8}\nlogging: {tensorboard: false, completions_every: 1}\n"
        "checkpoint: {every: 1, save_total_limit: 2}\nrewards: {workers: 0}\n"
    )
    straight = tmp_path / "straight"
    _train(config, straight, fake_site)
    expected = _rows(straight)
    assert len(expected) == 6 and any(r["grad_norm"] > 0 for r in expected)  # a run with learning signal
    killed = tmp_path / "killed"
    rng = random.Random(0)
    for _ in range(12):
        start = time.monotonic()
        if _train(config, killed, fake_site, kill_after=rng.uniform(4.0, 14.0)):
            break
        assert time.monotonic() - start < 120
    else:
        _train(config, killed, fake_site)
    assert [r["step"] for r in _rows(killed)] == [1, 2, 3, 4, 5, 6]
    assert _rows(killed) == expected
    steps = [json.loads(x)["step"] for x in (killed / "completions.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == 6 * 2 * 2  # each step's completions once
