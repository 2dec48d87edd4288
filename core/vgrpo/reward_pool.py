"""Rewards in worker processes, each call under a time limit, so a hanging reward cannot stall training.

Each call (one task's completions of a step) goes to a worker process; calls of different tasks run in
parallel on different workers. A call that outlives ``timeout_s`` kills its worker: every item of the call
scores each reward's minimum and is counted as ``<reward>/timeout``; a fresh worker starts on the next call.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from vgrpo.errors import VgrpoError
from vgrpo.scoring import Score
from vgrpo.task import Sample, Task, TaskParams

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0


class _Worker:
    """One reward worker process and its two pipes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.inbox: Connection | None = None
        self.outbox: Connection | None = None

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.stop()
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the parent's plugins
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vgrpo.reward_worker", str(child_in), str(child_out)],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        finally:
            os.close(child_in)
            os.close(child_out)
        self.outbox = Connection(to_child, readable=False)
        self.inbox = Connection(from_child, writable=False)
        if not self.inbox.poll(START_TIMEOUT_S):
            self.stop()
            raise VgrpoError(f"the reward worker did not start within {START_TIMEOUT_S:g} s")
        try:
            self.inbox.recv()
        except (EOFError, OSError):
            code = self.stop()
            raise VgrpoError(f"the reward worker exited with code {code} while starting (see its stderr)") from None

    def call(self, request: dict[str, Any], timeout_s: float) -> tuple[Any, ...] | None:
        """The worker's reply, or None when it did not answer in time (the worker is then killed)."""
        self.ensure()
        assert self.outbox is not None and self.inbox is not None
        try:
            self.outbox.send(request)
            if self.inbox.poll(timeout_s):
                return self.inbox.recv()
        except (EOFError, OSError, BrokenPipeError):
            log.warning("the reward worker died; restarting it")
        self.stop()
        return None

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        for conn in (self.outbox, self.inbox):
            if conn is not None:
                conn.close()
        self.outbox = self.inbox = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


class RewardPool:
    """``workers`` reward processes; :meth:`score` has the signature of :func:`vgrpo.score` plus a time limit."""

    def __init__(self, workers: int = 1, timeout_s: float = 60.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.timeout_s = timeout_s
        self._free: list[_Worker] = [_Worker() for _ in range(workers)]
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vgrpo-rewards")

    def score(
        self,
        task: Task,
        completions: Sequence[str],
        samples: Sequence[Sample],
        params: TaskParams,
        weights: Mapping[str, float],
        *,
        failures: Counter[str] | None = None,
    ) -> list[Score]:
        """Score one task's completions in a worker; past the time limit every item scores the minimum."""
        with self._lock:
            worker = self._free.pop()
        try:
            request = {"task": task.name, "completions": list(completions), "samples": list(samples),
                       "params": params.model_dump(), "weights": dict(weights)}  # fmt: skip
            reply = worker.call(request, self.timeout_s)
        finally:
            with self._lock:
                self._free.append(worker)
        if reply is not None and reply[0] == "ok":
            if failures is not None:
                failures.update(reply[2])
            return reply[1]
        reason = "timeout" if reply is None else "error"
        message = f"{self.timeout_s:g} s time limit" if reply is None else reply[1]
        log.warning("task %s: reward call failed (%s: %s); its %d completions score the minimum",
                    task.name, reason, message, len(completions))  # fmt: skip
        return self._minimum(task, completions, weights, reason, message, failures)

    def score_many(self, calls: Sequence[dict[str, Any]], failures: Counter[str] | None = None) -> list[list[Score]]:
        """Several :meth:`score` calls (keyword dicts) in parallel, results in order."""
        futures = [self._threads.submit(self.score, **call, failures=failures) for call in calls]
        return [f.result() for f in futures]

    @staticmethod
    def _minimum(task: Task, completions: Sequence[str], weights: Mapping[str, float], reason: str, message: str,
                 failures: Counter[str] | None) -> list[Score]:  # fmt: skip
        rewards = {r.name: r.minimum for r in task.rewards}
        total = float(sum(w * rewards.get(name, 0.0) for name, w in weights.items()))
        if failures is not None:
            for name in rewards:
                failures[f"{name}/{reason}"] += len(completions)
        return [Score(parsed=None, rewards=dict(rewards), reward=total, errors=[f"{reason}: {message}"])
                for _ in completions]  # fmt: skip

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self._free:
            worker.stop()
