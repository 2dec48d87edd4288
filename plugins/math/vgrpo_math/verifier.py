"""Verifying answers with math-verify under a per-item time limit.

math-verify runs in a persistent worker process (:mod:`vgrpo_math._worker`), started on first use and
reused. The parent sends a batch, the worker streams one result per item, and the parent waits for each with
the item's deadline; on expiry it kills the worker, scores the item as a ``timeout`` failure, starts a fresh
worker and resends the rest. This works from any thread and interrupts even a single C-level operation, which
math-verify's own ``signal.alarm`` limit cannot.

Two exact shortcuts keep the common case off the pipe: plain integers on both sides are compared directly
(math-verify decides them by integer equality too; a test checks agreement), and identical (ground truth,
prediction) pairs in a batch are verified once.

Set ``VGRPO_MATH_IN_PROCESS=1`` to call math-verify in the calling process instead (for debugging with
breakpoints or a profiler): there is then no time limit.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import vgrpo
from vgrpo_math import _worker
from vgrpo_math.answer import as_latex, plain_integers_equal

log = logging.getLogger(__name__)

IN_PROCESS_ENV = "VGRPO_MATH_IN_PROCESS"
#: A verdict: equal or not, or the reason there is none (``timeout`` or ``error``), counted by vgrpo.
Outcome = bool | vgrpo.RewardFailure


class WorkerStartError(RuntimeError):
    """The worker process did not come up."""


class Verifier:
    """Verifies (ground truth, prediction) texts with math-verify, each within a time limit.

    ``command`` starts the worker (the two pipe descriptors are appended); tests pass a stand-in.
    Thread-safe: concurrent calls take turns on the one worker.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        fast_path: bool = True,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.command = list(command) if command else [sys.executable, _worker.__file__]
        self.fast_path = fast_path
        self.start_timeout_s = start_timeout_s
        self.starts = 0
        """Worker processes started so far (the first plus one per restart)."""
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbox: Connection | None = None
        self._outbox: Connection | None = None
        self._in_process_check: Any = None
        _VERIFIERS.add(self)

    # -- public -----------------------------------------------------------------------------------
    def verify(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[Outcome]:
        """For each (ground-truth text, prediction text): whether they are equal as math, or a failure."""
        results: list[Outcome | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        for i, (gold, pred) in enumerate(pairs):
            if self.fast_path:
                verdict = plain_integers_equal(gold, pred)
                if verdict is not None:
                    results[i] = verdict
                    continue
            todo.setdefault((as_latex(gold), as_latex(pred)), []).append(i)
        if todo:
            items = list(todo)
            with self._lock:
                if os.environ.get(IN_PROCESS_ENV, "") not in ("", "0"):
                    outcomes = self._run_in_process(items)
                else:
                    try:
                        outcomes = self._run_in_worker(items, timeout_s)
                    except BaseException:  # KeyboardInterrupt: no unread result may reach a later call
                        self._stop()
                        raise
            for key, outcome in zip(items, outcomes):
                for i in todo[key]:
                    results[i] = outcome
        return results  # type: ignore[return-value] - every slot is filled

    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker -------------------------------------------------------------------------------
    def _run_in_worker(self, items: list[tuple[str, str]], timeout_s: float) -> list[Outcome]:
        out: list[Outcome | None] = [None] * len(items)
        slow_golds: set[str] = set()  # ground truths whose parse ran past a deadline in this call
        pending = list(range(len(items)))
        while pending:
            keep = []
            for j in pending:
                if items[j][0] in slow_golds:
                    message = f"parsing the ground truth took over {timeout_s:g} s"
                    out[j] = vgrpo.RewardFailure("timeout", message)
                else:
                    keep.append(j)
            pending = keep
            if not pending:
                break
            try:
                self._ensure_worker()
                assert self._outbox is not None
                self._outbox.send([items[j] for j in pending])
            except (WorkerStartError, OSError) as exc:
                log.warning("math verifier worker unavailable: %s", exc)
                self._stop()
                for j in pending:
                    out[j] = vgrpo.RewardFailure("error", f"verifier worker unavailable: {exc}")
                break
            done = self._collect(items, pending, out, timeout_s, slow_golds)
            pending = pending[done:]
        return out  # type: ignore[return-value]

    def _collect(
        self,
        items: list[tuple[str, str]],
        pending: list[int],
        out: list[Outcome | None],
        timeout_s: float,
        slow_golds: set[str],
    ) -> int:
        """Receive results for ``pending`` in order; returns how many got one before the worker stopped."""
        inbox = self._inbox
        assert inbox is not None
        deadline = time.monotonic() + timeout_s
        gold_ready = False
        for k, j in enumerate(pending):
            while True:
                if not inbox.poll(max(0.0, deadline - time.monotonic())):
                    out[j] = vgrpo.RewardFailure("timeout", f"verification took over {timeout_s:g} s")
                    if not gold_ready:
                        slow_golds.add(items[j][0])
                    log.info("math verification timed out after %g s; restarting the worker", timeout_s)
                    self._stop()
                    return k + 1
                try:
                    msg = inbox.recv()
                except (EOFError, OSError):
                    code = self._stop()
                    message = f"verifier worker exited (code {code}) on this item"
                    out[j] = vgrpo.RewardFailure("error", message)
                    log.warning("math verifier worker exited with code %s; restarting it", code)
                    return k + 1
                if msg[0] == "gold":
                    gold_ready = True
                    continue
                index, status, value = msg
                if index != k:  # cannot happen with a sound worker; never misattribute a result
                    self._stop()
                    message = f"verifier worker answered item {index}, expected {k}"
                    out[j] = vgrpo.RewardFailure("error", message)
                    return k + 1
                out[j] = bool(value) if status == "ok" else vgrpo.RewardFailure("error", str(value))
                break
            gold_ready = False
            deadline = time.monotonic() + timeout_s
        return len(pending)

    def _ensure_worker(self) -> None:
        if self._owner != os.getpid():  # we are a forked child: the worker belongs to the parent
            self._forget()
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        try:
            proc = subprocess.Popen(
                [*self.command, str(child_in), str(child_out)],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            for fd in (to_child, from_child):
                os.close(fd)
            raise WorkerStartError(f"cannot start {self.command}: {exc}") from None
        finally:
            os.close(child_in)
            os.close(child_out)
        self._proc = proc
        self._outbox = Connection(to_child, readable=False)
        self._inbox = Connection(from_child, writable=False)
        if not self._inbox.poll(self.start_timeout_s):
            self._stop()
            raise WorkerStartError(f"worker did not start within {self.start_timeout_s:g} s")
        try:
            self._inbox.recv()  # ("ready", pid)
        except (EOFError, OSError):
            code = self._stop()
            message = f"worker exited with code {code} while starting (see its stderr)"
            raise WorkerStartError(message) from None
        self.starts += 1

    def _stop(self) -> int | None:
        """Kill the worker (if any) and close the pipes; returns its exit code."""
        proc, self._proc = self._proc, None
        for conn in (self._outbox, self._inbox):
            if conn is not None:
                conn.close()
        self._outbox = self._inbox = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def _forget(self) -> None:
        """Drop the parent's worker after a fork without touching it."""
        self._lock = threading.Lock()
        for conn in (self._outbox, self._inbox):
            if conn is not None:
                conn.close()
        self._proc = self._outbox = self._inbox = None
        self._owner = os.getpid()

    # -- debugging: in the calling process, no time limit -------------------------------------------
    def _run_in_process(self, items: list[tuple[str, str]]) -> list[Outcome]:
        if self._in_process_check is None:
            self._in_process_check = _worker.MathVerifyCheck()
        out: list[Outcome] = []
        for gold, pred in items:
            try:
                out.append(self._in_process_check.verify(self._in_process_check.gold(gold), pred))
            except Exception as exc:  # noqa: BLE001 - same policy as the worker
                out.append(vgrpo.RewardFailure("error", _worker._describe(exc)))
        return out


_VERIFIERS: weakref.WeakSet[Verifier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for verifier in list(_VERIFIERS):
        verifier._forget()


def _close_all() -> None:
    for verifier in list(_VERIFIERS):
        if verifier._owner == os.getpid():
            verifier._stop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)

_default: Verifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> Verifier:
    """The process-wide verifier the task uses (its worker starts on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Verifier()
        return _default
