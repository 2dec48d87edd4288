"""The per-item time limit: the worker is killed at the deadline, the item counted, the rest still scored."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import vgrpo
import vgrpo_math.task
from vgrpo.data import sample_from_record
from vgrpo_math.task import MathTask
from vgrpo_math.verifier import IN_PROCESS_ENV, Verifier

TASK = MathTask()
FAKE_WORKER = [sys.executable, str(Path(__file__).with_name("_fake_worker.py"))]
# sympy never finishes this (one C-level big-integer power: no signal can interrupt it)
HANG = "2^{2^{2^{100}}}"


def completion(answer: str) -> str:
    return f"<think>work</think><answer>{answer}</answer>"


def sample(solution: object) -> vgrpo.Sample:
    return sample_from_record({"id": "t", "solution": solution}, TASK)


@pytest.fixture
def fake() -> Verifier:
    with Verifier(FAKE_WORKER, fast_path=False) as verifier:
        yield verifier


def is_failure(outcome: object, kind: str) -> bool:
    return isinstance(outcome, vgrpo.RewardFailure) and outcome.kind == kind


# -- the real worker: kill and restart --------------------------------------------------------------
def test_real_hang_times_out_is_counted_and_next_item_still_scores() -> None:
    answers = [f"\\boxed{{{HANG}}}", "\\boxed{\\frac{6}{4}}", "\\boxed{1}"]
    completions = [completion(a) for a in answers]
    samples = [sample("3"), sample("1.5"), sample("2")]
    failures: Counter[str] = Counter()
    start = time.monotonic()
    results = vgrpo.score(TASK, completions, samples, {"timeout_s": 0.5}, failures=failures)
    assert time.monotonic() - start < 10
    assert [r.rewards["accuracy"] for r in results] == [0.0, 1.0, 0.0]
    assert failures == Counter({"accuracy/timeout": 1})
    assert results[0].errors and "timeout" in results[0].errors[0]
    assert results[1].errors == [] and results[2].errors == []


def test_real_worker_restarts_after_timeout() -> None:
    with Verifier() as verifier:
        assert verifier.verify([("3", "\\frac{6}{2}")], 5.0) == [True]
        first = verifier.worker_pid
        out = verifier.verify([("3", HANG), ("3", "\\frac{9}{3}"), ("3", "3.5")], 0.5)
        assert is_failure(out[0], "timeout")
        assert out[1:] == [True, False]
        assert verifier.worker_pid not in (None, first)
        assert verifier.starts == 2
    assert verifier.worker_pid is None


def test_works_from_a_non_main_thread_with_concurrent_callers() -> None:
    results: dict[int, list[object]] = {}

    def run(k: int) -> None:
        answers = [f"\\boxed{{\\frac{{{2 * k}}}{{2}}}}", f"\\boxed{{{HANG}}}" if k == 0 else "\\boxed{x}"]
        scores = vgrpo.score(TASK, [completion(a) for a in answers], [sample(str(k))] * 2, {"timeout_s": 0.5})
        results[k] = [s.rewards["accuracy"] for s in scores]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {0: [1.0, 0.0], 1: [1.0, 0.0], 2: [1.0, 0.0]}


# -- a stand-in worker: deterministic failures ------------------------------------------------------
def test_fake_timeout_then_following_items(fake: Verifier) -> None:
    start = time.monotonic()
    out = fake.verify([("a", "a"), ("a", "sleep"), ("a", "a"), ("b", "a")], 0.3)
    assert out[0] is True and is_failure(out[1], "timeout") and out[2:] == [True, False]
    assert "0.3 s" in out[1].message
    assert time.monotonic() - start < 5
    assert fake.starts == 2


def test_fake_crash_is_an_error_and_the_worker_restarts(fake: Verifier) -> None:
    out = fake.verify([("a", "crash 1"), ("a", "a"), ("a", "crash 2"), ("b", "b")], 5.0)
    assert is_failure(out[0], "error") and "exited" in out[0].message
    assert out[1] is True and is_failure(out[2], "error") and out[3] is True
    assert fake.starts == 3


def test_fake_exception_is_an_error_without_restart(fake: Verifier) -> None:
    out = fake.verify([("a", "raise"), ("a", "a")], 5.0)
    assert is_failure(out[0], "error") and "RecursionError" in out[0].message
    assert out[1] is True and fake.starts == 1


def test_slow_ground_truth_is_waited_for_once_per_call(fake: Verifier) -> None:
    out = fake.verify([("slowgold", "x"), ("slowgold", "y"), ("slowgold", "z"), ("c", "c")], 0.3)
    assert all(is_failure(o, "timeout") for o in out[:3]) and out[3] is True
    assert "ground truth" in out[1].message
    assert fake.starts == 2  # one wait (the worker killed once and restarted for "c"), not three


def test_duplicate_pairs_are_verified_once(fake: Verifier) -> None:
    out = fake.verify([("a", "sleep")] * 3 + [("a", "a")], 0.3)
    assert all(is_failure(o, "timeout") for o in out[:3]) and out[3] is True
    assert fake.starts == 2


def test_interrupted_call_leaves_no_stale_results(fake: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Verifier, "_collect", interrupt)
        with pytest.raises(KeyboardInterrupt):
            fake.verify([("a", "b"), ("c", "d")], 5.0)  # sent, never read
    assert fake.worker_pid is None
    assert fake.verify([("x", "x")], 5.0) == [True]


def test_worker_that_cannot_start_scores_errors_without_raising() -> None:
    with Verifier([sys.executable, "-c", "import sys; sys.exit(2)"], fast_path=False) as broken:
        out = broken.verify([("1", "x"), ("2", "y")], 1.0)
    assert all(is_failure(o, "error") and "code 2" in o.message for o in out)


def test_timeouts_and_errors_are_counted_by_score(fake: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vgrpo_math.task, "default_verifier", lambda: fake)
    answers = ["\\boxed{sleep}", "\\boxed{crash}", "\\boxed{raise}", "\\boxed{q}", "\\boxed{r}"]
    failures: Counter[str] = Counter()
    comps = [completion(a) for a in answers]
    results = vgrpo.score(TASK, comps, [sample("q")] * 5, {"timeout_s": 0.3}, failures=failures)
    assert [r.rewards["accuracy"] for r in results] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert failures == Counter({"accuracy/timeout": 1, "accuracy/error": 2})


def test_in_process_mode_needs_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    with Verifier(fast_path=False) as verifier:
        assert verifier.verify([("\\frac{1}{2}", "0.5"), ("2", "3")], 1.0) == [True, False]
        assert verifier.worker_pid is None and verifier.starts == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_its_own_worker() -> None:
    with Verifier(fast_path=False) as verifier:
        assert verifier.verify([("2", "\\frac{4}{2}")], 5.0) == [True]
        parent_worker = verifier.worker_pid
        pid = os.fork()
        if pid == 0:  # the child must never return into pytest
            code = 1
            try:
                ok = verifier.verify([("2", "\\frac{4}{2}")], 5.0) == [True]
                code = 0 if ok and verifier.worker_pid not in (None, parent_worker) else 1
                verifier.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert verifier.worker_pid == parent_worker  # the child left the parent's worker alone
        assert verifier.verify([("2", "\\frac{6}{3}")], 5.0) == [True]


# -- pathological inputs: in range, no raise, bounded time --------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [
        "\\boxed{" + "\\frac{" * 1000 + "1" + "}{2}" * 1000 + "}",
        "\\frac{" * 1000,
        "x + " * 50_000 + "1",
        "\\boxed{" + "9" * 200_000 + "}",
        bytes(range(256)).decode("latin-1") * 800,
        "".join(chr(c) for c in range(0x2000, 0x3000)) * 50,
        "\\boxed{1000000!}",
    ],
)
def test_pathological_answers(answer: str) -> None:
    start = time.monotonic()
    comps = [completion(answer), completion("\\boxed{2}")]
    results = vgrpo.score(TASK, comps, [sample("2")] * 2, {"timeout_s": 1.0})
    assert time.monotonic() - start < 15
    assert 0.0 <= results[0].rewards["accuracy"] <= 1.0 and results[1].rewards["accuracy"] == 1.0
    assert all(e.startswith("reward 'accuracy' timeout") for e in results[0].errors)
