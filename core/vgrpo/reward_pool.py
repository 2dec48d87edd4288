"""Rewards in worker processes, each call under a time limit, so a hanging reward cannot stall training.

Each call (one task's completions of a step) goes to a worker process; calls of different tasks run in
parallel on different workers. A call that fails (it outlives ``timeout_s`` and its worker is killed, its
worker dies, or scoring raises) scores every item at each reward's declared minimum, the task's rewards and
the weighted plugin rewards alike, and is counted as ``<reward>/timeout``, ``/crash`` or ``/error``; a fresh
worker starts on the next call.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from vgrpo.errors import VgrpoError
from vgrpo.rewards import Reward, RewardWeights
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
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: a Ctrl-C meant for the trainer does not reach
            )  # it, and stopping it ends whatever its rewards started too
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
            message = f"the reward worker exited with code {code} while starting (see its stderr)"
            raise VgrpoError(message) from None

    def call(self, request: dict[str, Any], timeout_s: float) -> tuple[Any, ...]:
        """The reply: ``("ok", scores, failures)`` or ``("error", message, failures)`` from the worker, or
        ``("timeout", message)`` when it did not answer in time, ``("crash", message)`` when it died; either
        way the worker is stopped and the next call starts a fresh one."""
        self.ensure()
        assert self.outbox is not None and self.inbox is not None
        try:
            self.outbox.send(request)
            if self.inbox.poll(timeout_s):
                return self.inbox.recv()
        except (EOFError, OSError):  # the pipe closed under us: the worker died mid-call
            return ("crash", f"the reward worker died (exit code {self._reap()})")
        self.stop()
        return ("timeout", f"{timeout_s:g} s time limit")

    def _reap(self) -> int | None:
        """Stop a worker that closed its pipe, first letting it exit by itself (so its exit code shows)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        return self.stop()

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        for conn in (self.outbox, self.inbox):
            if conn is not None:
                conn.close()
        self.outbox = self.inbox = None
        if proc is None:
            return None
        try:  # the whole group: processes a reward started end with the worker
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


class RewardPool:
    """``workers`` reward processes; :meth:`score` takes :func:`vgrpo.score`'s arguments, time-limited."""

    def __init__(self, workers: int = 1, timeout_s: float = 60.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.timeout_s = timeout_s
        self._all: list[_Worker] = [_Worker() for _ in range(workers)]
        self._free: list[_Worker] = list(self._all)
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
        plugin_rewards: Mapping[str, Reward] | None = None,
        failures: Counter[str] | None = None,
    ) -> list[Score]:
        """Score one task's completions in a worker; when the call fails every item scores the minimum.

        ``plugin_rewards`` (the caller's ``registry.rewards``) gives only the minima of the weighted plugin
        rewards of a failed call: the worker computes rewards with the plugins of its own registry.
        """
        with self._lock:
            worker = self._free.pop()
        try:
            weights = RewardWeights.of(weights)  # numbers for a failed call's minima; reward params travel as
            request = {  # plain data in the config's {weight, params} form, validated again in the worker
                "task": task.name,
                "completions": list(completions),
                "samples": list(samples),
                "params": params.model_dump(),
                "weights": weights.to_config(),
            }
            try:
                reply = worker.call(request, self.timeout_s)
            except (
                VgrpoError
            ) as exc:  # the worker did not start: this call scores the minimum, the run goes on
                reply = ("crash", str(exc))
        finally:
            with self._lock:
                self._free.append(worker)
        reason, detail = reply[0], reply[1]
        if reason == "ok":
            if failures is not None:
                failures.update(reply[2])
            return detail
        log.warning(
            "task %s: reward call failed (%s: %s); its %d completions score each reward's minimum",
            task.name,
            reason,
            detail,
            len(completions),
        )
        minima = _minima(task, weights, plugin_rewards)
        return _minimum_scores(minima, weights, len(completions), f"{reason}: {detail}", reason, failures)

    def score_many(
        self, calls: Sequence[Mapping[str, Any]], failures: Counter[str] | None = None
    ) -> list[list[Score]]:
        """Several :meth:`score` calls (keyword dicts, ``plugin_rewards`` included) in parallel, in order; a call
        that carries its own ``failures`` counter counts there instead of in ``failures``."""
        futures = [self._threads.submit(self.score, **{"failures": failures, **call}) for call in calls]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop every worker, busy ones too (their process groups are killed, so a waiting call returns at once)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self._all:
            worker.stop()


def _minima(
    task: Task, weights: Mapping[str, float], plugin_rewards: Mapping[str, Reward] | None
) -> dict[str, float]:
    """Each reward's declared minimum: every task reward (all are reported) and each weighted plugin reward.

    A weighted name that neither the task nor ``plugin_rewards`` knows has no known minimum: it is left out
    (weighing nothing) with a warning, since the caller did not say which plugin reward it is.
    """
    minima = {r.name: r.minimum for r in task.rewards}
    for name in weights:
        if name in minima:
            continue
        if plugin_rewards is not None and name in plugin_rewards:
            minima[name] = plugin_rewards[name].minimum
        else:
            log.warning(
                "task %s: weighted reward %r is not a task reward and no plugin_rewards name it; "
                "its minimum is unknown, so it weighs nothing in this failed call",
                task.name,
                name,
            )
    return minima


def _minimum_scores(
    minima: Mapping[str, float],
    weights: Mapping[str, float],
    n: int,
    error: str,
    reason: str,
    failures: Counter[str] | None,
) -> list[Score]:
    """``n`` scores of a failed call: each reward at its minimum, their weighted total; failures counted."""
    total = float(sum(w * minima[name] for name, w in weights.items() if name in minima))
    if failures is not None:
        for name in minima:
            failures[f"{name}/{reason}"] += n
    return [Score(parsed=None, rewards=dict(minima), reward=total, errors=[error]) for _ in range(n)]
