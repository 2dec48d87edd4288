"""Reading a math answer: the last ``\\boxed{…}``, the final number or expression of an answer written in
words, and turning text into LaTeX math for math-verify.

Everything here is linear in the input length and never raises, because a parser must not hang or crash on
a 200k-character completion.
"""

from __future__ import annotations

import re
import string
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


# -- answers written in words ---------------------------------------------------------------------------
#: Sentence punctuation that may end an answer. ``!`` is not among them: ``5!`` is a factorial.
FINAL_PUNCTUATION = ".,;:?"
# Math (``$…$``, ``$$…$$``, ``\(…\)``, ``\[…\]``), groups and commands: what the prose view blanks out.
_STRUCTURE = re.compile(r"\\[()\[\]]|\\[^\W\d_]+|\\.|\$\$?|[{}]", re.DOTALL)
_MATH_CLOSERS = {"\\(": "\\)", "\\[": "\\]", "$": "$", "$$": "$$"}
_BLANK = "\0"
# A run of letters; apostrophes and hyphens join letters into one ("it's", "right-angled", but also "x-y").
_LETTER_RUN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_TWO_LETTERS = re.compile(r"[^\W\d_]{2}")
_ALNUM = re.compile(r"[^\W_]")
# What may stand right before / right after a word, besides whitespace, the ends of the text and ``**``.
_BEFORE_WORD = frozenset("([\"'“‘")
_AFTER_WORD = frozenset(".,;:!?)]\"'”’")
_OPENERS = "(["  # before a word only when they open a parenthesis ("(in cm)"), not a call ("f(ab)", "2(ab)")
_EMPHASIS = "**"  # Markdown bold around words: "**The answer is 7**"
# A letter run next to one of these (spaces between allowed) is an operand, not a word: "xy + 1", "AB = 5".
_OPERATORS_LEFT = frozenset("=<>*/^_|+-")
_OPERATORS_RIGHT = frozenset("=<>*/^_|")  # "+"/"-" only when binary (a space after): "is -3" is prose
_OPERATOR_NAMES = r"\\(?:cdot|times|div|pm|mp|leq?|geq?|neq?|approx|equiv)"
_OPERATOR_COMMAND = re.compile(_OPERATOR_NAMES + r"(?![A-Za-z])")
_OPERATOR_COMMAND_BEFORE = re.compile(_OPERATOR_NAMES + r"$")
# Words joining two expressions into one answer ("x = 2 or x = 3"): math-verify reads the pair as a set.
_CONNECTIVES = frozenset({"and", "or"})
# Trimmed from a piece of text between words: a bracket or quote it does not close or open, emphasis, commas.
_QUOTES = '"“”‘’'  # not "'", which may be a prime (f')
_PIECE_LEAD = string.whitespace + ",;:*)]" + _QUOTES
_PIECE_TRAIL = string.whitespace + FINAL_PUNCTUATION + "*([" + _QUOTES


def _prose_view(text: str) -> str:
    """``text`` with math, the inside of ``{…}`` groups (``\\text{cm}``) and LaTeX commands (``\\pi``)
    blanked out, same length: what is left is where words can be."""
    pieces: list[str] = []
    kept = 0  # text[kept:] is not yet in pieces
    depth = 0
    math_end: str | None = None
    blank_from = 0
    for m in _STRUCTURE.finditer(text):
        token = m.group()
        if math_end is not None or depth > 0:
            if math_end is not None:
                closed = token == math_end
            else:
                depth += (token == "{") - (token == "}")
                closed = depth == 0
            if closed:
                math_end = None
                pieces += [text[kept:blank_from], _BLANK * (m.end() - blank_from)]
                kept = m.end()
            continue
        if token in _MATH_CLOSERS or token == "{":
            math_end = _MATH_CLOSERS.get(token)
            depth = 1 if token == "{" else 0
            blank_from = m.start()
        else:  # a command, a control symbol, a stray closer
            pieces += [text[kept : m.start()], _BLANK * len(token)]
            kept = m.end()
    if math_end is not None or depth > 0:  # never closed: math to the end
        pieces += [text[kept:blank_from], _BLANK * (len(text) - blank_from)]
    else:
        pieces.append(text[kept:])
    return "".join(pieces)


def _script_end(view: str, at: int) -> int:
    """End of the power ``^…`` at ``view[at] == "^"``: ``^2``, ``^{2}`` (``cm^2`` is one unit)."""
    i, n = at + 1, len(view)
    j = i
    while j < n and (view[j].isdigit() or (view[j] == _BLANK and view[i] == _BLANK)):
        j += 1  # digits, or a blanked group
    if j > i:
        return j
    return i + 1 if i < n and not view[i].isspace() else i


def _is_operand(text: str, view: str, start: int, end: int) -> bool:
    """Whether the nearest non-space neighbours of ``text[start:end]`` make it an operand of an operator
    (Markdown emphasis ``**`` is not an operator)."""
    left = start - 1
    while left >= 0 and view[left].isspace():
        left -= 1
    if left >= 0 and not (left >= 1 and view.startswith(_EMPHASIS, left - 1)):
        c = view[left]
        if c in _OPERATORS_LEFT or (
            c == _BLANK
            and _OPERATOR_COMMAND_BEFORE.search(text, max(0, left - 7), left + 1)  # commands: blank
        ):
            return True
    right, n = end, len(view)
    while right < n and view[right].isspace():
        right += 1
    if right >= n or view.startswith(_EMPHASIS, right):
        return False
    c = view[right]
    if c in _OPERATORS_RIGHT or (c == _BLANK and _OPERATOR_COMMAND.match(text, right)):
        return True
    return c in "+-" and (right + 1 == n or view[right + 1].isspace())


def _words(text: str) -> list[tuple[int, int]]:
    """Where the words of ``text`` are, ``(start, end)`` in order (defined in docs/rewards.md, math)."""
    view = _prose_view(text)
    n = len(view)
    runs: list[tuple[int, int, bool]] = []  # start, end, a word (so far: single letters come below)
    for m in _LETTER_RUN.finditer(view):
        start, end = m.span()
        before = view[start - 1] if start > 0 else " "
        after = view[end] if end < n else " "
        long = end - start >= 2 and _TWO_LETTERS.search(view, start, end) is not None
        delimited = (
            before.isspace()
            or (before in _BEFORE_WORD and (before not in _OPENERS or start < 2 or view[start - 2].isspace()))
            or (start >= 2 and view.startswith(_EMPHASIS, start - 2))
        ) and (
            after.isspace()
            or after in _AFTER_WORD
            or view.startswith(_EMPHASIS, end)
            or (after == "^" and long)
        )
        if delimited and after == "^":
            end = _script_end(view, end)  # a unit with its power: cm^2
        runs.append((start, end, delimited and (long or end - start == 1)))
    words = [False] * len(runs)
    for k, (start, end, candidate) in enumerate(runs):
        if candidate and end - start > 1:
            words[k] = not _is_operand(text, view, start, end)
    for k in range(1, len(runs) - 1):  # a single letter between two words: "in a box", "let x be"
        (p_start, p_end, _), (start, end, candidate), (n_start, _, _) = runs[k - 1 : k + 2]
        if (
            candidate
            and end - start == 1
            and words[k - 1]
            and words[k + 1]
            and view[p_end:start].isspace()
            and view[end:n_start].isspace()
        ):
            words[k] = not _is_operand(text, view, start, end)
    return [(start, end) for (start, end, _), is_word in zip(runs, words) if is_word]


def strip_final_punctuation(text: str) -> str:
    """``text`` stripped, without the sentence punctuation (:data:`FINAL_PUNCTUATION`) that ends it."""
    return text.strip().rstrip(string.whitespace + FINAL_PUNCTUATION)


def final_expression(text: str) -> str:
    """The prediction in an answer's text: the final number or expression when it is written in words.

    Without words (``x = 3``, ``2\\pi``, ``\\frac{1}{2}.``) it is the whole text without final sentence
    punctuation. With words ("There are 3 apples.", "So the total is \\frac{1}{2} of the cake") it is the last
    piece of text between words that holds a letter or digit, trimmed of punctuation, unmatched brackets,
    quotes and ``*`` emphasis, together with the pieces ``and``/``or`` join to it ("x = 2 or x = 3"); LaTeX
    in it stays LaTeX (``2\\pi`` is never cut to ``2``). Words and pieces are defined in docs/rewards.md
    (math). When no piece holds a letter or digit ("two apples"), the whole text as above.
    """
    words = _words(text)
    if not words:
        return strip_final_punctuation(text)
    # piece i is text[piece_from[i]:piece_to[i]], between word i - 1 and word i
    piece_from = [0] + [end for _, end in words]
    piece_to = [start for start, _ in words] + [len(text)]

    def holds_math(i: int) -> bool:
        return _ALNUM.search(text, piece_from[i], piece_to[i]) is not None

    last = next((i for i in reversed(range(len(piece_from))) if holds_math(i)), None)
    if last is None:
        return strip_final_punctuation(text)
    first = last
    while first > 0 and text[slice(*words[first - 1])].lower() in _CONNECTIVES and holds_math(first - 1):
        first -= 1  # "x = 2 or x = 3": expressions joined by and/or stay together, as math-verify reads them
    return text[piece_from[first] : piece_to[last]].strip().lstrip(_PIECE_LEAD).rstrip(_PIECE_TRAIL)


def parse_answer(answer: str) -> str | None:
    """The prediction in an answer: the last box's content, else the whole answer (code fence removed),
    read by :func:`final_expression` (an answer written in words yields its final number or expression).

    ``None`` when that leaves nothing (an empty box or answer, punctuation only).
    """
    boxed = last_boxed(answer)
    text = boxed if boxed is not None else vgrpo.strip_code_fence(answer)
    return final_expression(text) or None


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
