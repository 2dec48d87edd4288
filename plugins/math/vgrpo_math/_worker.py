"""The verification worker: math-verify in a child process, so the parent can kill it at a deadline.

A signal cannot interrupt one long C-level operation (sympy evaluating ``2^{2^{2^{100}}}``), and
math-verify's own ``signal.alarm`` time limit works only in the main thread, so the parent runs this module as
a script (``python _worker.py IN_FD OUT_FD``) and kills it when an item runs past its deadline.

Protocol over two pipes (``multiprocessing.connection`` framing): the worker sends ``("ready", pid)``; each
request is a list of ``(gold, pred)`` LaTeX strings, answered in order: for each item ``("gold", i)`` once
its ground truth is parsed (so the parent can tell a slow ground truth from a slow prediction), then
``(i, "ok", bool)`` or ``(i, "error", message)``. The worker exits when its input pipe closes or its parent
goes away.

This module imports nothing from vgrpo, so the worker starts in about the time it takes to import sympy.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any, Protocol

from vgrpo.reward_worker import exit_with_parent

#: Address-space cap of the worker (MiB), so one huge integer cannot exhaust the machine before its
#: deadline (on Linux the OOM killer would likely pick the trainer). 0 disables it.
MEMORY_ENV = "VGRPO_MATH_WORKER_MEMORY_MB"
DEFAULT_MEMORY_MB = 4096
GOLD_CACHE_SIZE = 4096


class Check(Protocol):
    """What the worker runs: a cached ground-truth parse and a verification against it."""

    def gold(self, text: str) -> Any:
        """The parsed ground truth."""

    def verify(self, gold: Any, pred: str) -> bool:
        """Whether ``pred`` (LaTeX) equals the parsed ground truth."""


def quiet_math_verify() -> None:
    """Silence math-verify's one-time "timeout is disabled" warning: our caller enforces the time limit."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    logging.getLogger("math_verify").setLevel(logging.ERROR)


class MathVerifyCheck:
    """math-verify's ``parse`` (LaTeX, then plain expressions) and ``verify``, with their own time limits off.

    Ground truths are parsed once and cached: in GRPO the G completions of a group share one.
    """

    def __init__(self, gold_cache_size: int = GOLD_CACHE_SIZE) -> None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        quiet_math_verify()
        self._config = (LatexExtractionConfig(), ExprExtractionConfig())
        self._golds: OrderedDict[str, Any] = OrderedDict()
        self._size = gold_cache_size

    def parse(self, text: str) -> Any:
        from math_verify import parse

        return parse(text, extraction_config=self._config, parsing_timeout=None)  # type: ignore[arg-type]

    def gold(self, text: str) -> Any:
        if text in self._golds:
            self._golds.move_to_end(text)
            return self._golds[text]
        parsed = self.parse(text)
        self._golds[text] = parsed
        if len(self._golds) > self._size:
            self._golds.popitem(last=False)
        return parsed

    def warm_up(self) -> None:
        """Compile math-verify's regexes and load the LaTeX grammar now, so that a fresh worker's first item
        is not charged for them (it has a deadline; this start-up has not)."""
        self.verify(self.parse("$\\frac{1}{2}$"), "$0.5$")

    def verify(self, gold: Any, pred: str) -> bool:
        from math_verify import verify

        parsed = self.parse(pred)
        if certainly_unequal(gold, parsed):
            return False
        return bool(verify(gold, parsed, timeout_seconds=None))


def _is_number(x: Any) -> bool:
    from sympy import Number

    return isinstance(x, Number) and x.is_finite is True


def _is_symbolic_monomial(x: Any) -> bool:
    """A product of nonzero finite constants and at least one symbol (to a positive integer power):
    what math-verify makes of words read as math, e.g. ``$two apples$`` → ``o·t·w`` (the parser hands over
    the final number of prose that has one, so mostly words without a number get here)."""
    from sympy import Integer, Mul, Number, NumberSymbol, Pow, Symbol

    if not isinstance(x, Mul):
        return False
    has_symbol = False
    for arg in x.args:
        if isinstance(arg, Symbol) or (
            isinstance(arg, Pow)
            and isinstance(arg.base, Symbol)
            and isinstance(arg.exp, Integer)
            and arg.exp > 0
        ):
            has_symbol = True
        elif isinstance(arg, Number):
            if not (arg.is_finite is True and arg.is_zero is False):
                return False
        elif not isinstance(arg, NumberSymbol):  # pi, E, ...: nonzero finite constants
            return False
    return has_symbol


def certainly_unequal(gold: list[Any], pred: list[Any]) -> bool:
    """True only where math-verify's ``verify(gold, pred)`` is sure to be False, decided without sympy.

    The case: every gold item is a finite number or a string, every prediction item a symbolic monomial
    (see :func:`_is_symbolic_monomial`) or a string, and no two strings are equal. math-verify then compares
    number and monomial by ``==`` (False: different types), numerically (False: the monomial is not a
    number) and by ``simplify(gold - pred).is_zero`` (not True: a nonzero polynomial is not identically 0),
    mixed sympy/string pairs are False, and strings compare equal only when identical after ``strip()``.
    This skips ``simplify`` (~20 ms) on prose answers. A test checks the agreement with ``verify``.
    """
    if not isinstance(gold, list) or not isinstance(pred, list) or not gold or not pred:
        return False
    if not all(isinstance(g, str) or _is_number(g) for g in gold):
        return False
    if not all(isinstance(p, str) or _is_symbolic_monomial(p) for p in pred):
        return False
    gold_strings = {g.strip() for g in gold if isinstance(g, str) and g.strip()}
    return not any(isinstance(p, str) and p.strip() in gold_strings for p in pred)


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - str() of a sympy object can itself fail
        message = ""
    return f"{type(exc).__name__}: {message[:200]}" if message else type(exc).__name__


def serve(check: Check, inbox: Connection, outbox: Connection) -> None:
    """Answer requests until the input pipe closes."""
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            request = inbox.recv()
        except (EOFError, OSError):
            return
        for i, (gold, pred) in enumerate(request):
            try:
                parsed_gold = check.gold(gold)
                outbox.send(("gold", i))
                outcome: tuple[Any, ...] = (i, "ok", check.verify(parsed_gold, pred))
            except BaseException as exc:  # noqa: BLE001 - RecursionError, MemoryError: report, keep serving
                outcome = (i, "error", _describe(exc))
            outbox.send(outcome)


def _limit_memory() -> None:
    try:
        import resource

        mb = int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB))
        if mb <= 0:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def connect(argv: list[str]) -> tuple[Connection, Connection]:
    """The (inbox, outbox) pipes whose file descriptors the parent passed as arguments."""
    return Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False)


def main(argv: list[str]) -> None:
    inbox, outbox = connect(argv)
    exit_with_parent(os.getppid())
    _limit_memory()
    check = MathVerifyCheck()
    check.warm_up()
    serve(check, inbox, outbox)


if __name__ == "__main__":
    main(sys.argv)
