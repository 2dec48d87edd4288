"""Reading a math answer: the last ``\\boxed{…}``, and turning text into LaTeX math for math-verify.

Everything here is linear in the input length and never raises, because a parser must not hang or crash on
a 200k-character completion.
"""

from __future__ import annotations

import re
from decimal import Decimal

import vgrpo

BOXED = "\\boxed"
#: An integer written in ASCII digits, nothing else: the only form the exact fast path decides.
_PLAIN_INTEGER = re.compile(r"-?[0-9]{1,100}")
# An unescaped dollar sign: the text already contains math-mode delimiters.
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_MATH_OPENERS = ("\\(", "\\[", BOXED)


def _last_box_start(text: str) -> int:
    """Index just after the ``{`` of the last ``\\boxed{`` (spaces allowed before the brace), or -1."""
    end = len(text)
    while True:
        at = text.rfind(BOXED, 0, end)
        if at < 0:
            return -1
        i = at + len(BOXED)
        # Each candidate scans only the whitespace after it, a region no other candidate scans: linear.
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            return i + 1
        end = at


def _group_end(text: str, start: int) -> int:
    """Index of the ``}`` closing the group opened just before ``start``, or -1 when it never closes.

    ``\\{`` and ``\\}`` are literal braces in LaTeX (set notation), not grouping; ``\\\\`` is a line break.
    """
    depth = 1
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # a control symbol (\{, \}, \\) or the first letter of a command: never a grouping brace
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text`` (braces balanced), or ``None`` when there is none.

    "Last" is the box opened last, so nested boxes resolve to the innermost. A box that never closes (a
    truncated completion) yields everything after its opening brace.
    """
    start = _last_box_start(text)
    if start < 0:
        return None
    end = _group_end(text, start)
    return text[start:] if end < 0 else text[start:end]


def parse_answer(answer: str) -> str | None:
    """The prediction in an answer: the last box's content, else the whole answer (code fence removed).

    Stripped; ``None`` when that leaves nothing (an empty box or answer).
    """
    boxed = last_boxed(answer)
    text = boxed.strip() if boxed is not None else vgrpo.strip_code_fence(answer)
    return text or None


def gold_text(solution: object) -> str:
    """A ground truth as text: strings as they are, numbers in plain decimal notation (never ``1e-07``)."""
    if isinstance(solution, str):
        if not solution.strip():
            raise ValueError("expected a non-empty LaTeX or plain-text answer, got an empty string")
        return solution
    if isinstance(solution, bool) or not isinstance(solution, (int, float)):
        raise ValueError(f"expected a string (LaTeX or plain) or a number, got {type(solution).__name__}")
    if isinstance(solution, int):
        return str(solution)
    if solution != solution or solution in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {solution!r}")
    return format(Decimal(repr(solution)), "f")


def as_latex(text: str) -> str:
    """``text`` as math-verify input: unchanged when it already holds math delimiters (``$``, ``\\(``,
    ``\\[``, ``\\boxed``), else wrapped as inline math ``$…$`` (newlines become spaces, as in TeX)."""
    if _UNESCAPED_DOLLAR.search(text) or any(opener in text for opener in _MATH_OPENERS):
        return text
    return "$" + text.strip().replace("\n", " ") + "$"


def plain_integers_equal(gold: str, pred: str) -> bool | None:
    """The verdict when both sides are plain integers (``42``, ``-7``, ``007``), else ``None`` (undecided).

    math-verify parses such LaTeX to sympy Integers and compares them exactly, so integer equality is its
    verdict; a test checks the agreement on many cases.
    """
    g, p = gold.strip(), pred.strip()
    if _PLAIN_INTEGER.fullmatch(g) and _PLAIN_INTEGER.fullmatch(p):
        return int(g) == int(p)
    return None
