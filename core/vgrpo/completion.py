"""Reading an R1-style completion: ``<think>…</think><answer>…</answer>``.

The functions here are linear in the completion length on any input (no regex backtracking), because a
reward must never hang on a 200k-character completion.
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

#: The format the built-in tasks reward, as documented (and as a regex, for reference and for tests).
FORMAT_PATTERN = r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$"

_THINK_TO_ANSWER = re.compile(r"</think>\s*<answer>")
_FENCE_LANG = re.compile(r"[A-Za-z][\w+.-]*(?=\s)")


def is_well_formatted(completion: str) -> bool:
    """True when the whole completion matches :data:`FORMAT_PATTERN` (dot matches newline).

    Equivalent to ``re.fullmatch(FORMAT_PATTERN, completion, re.DOTALL)`` but linear-time: the earliest
    ``</think>\\s*<answer>`` after the opening tag ends soonest, so it is the only split worth checking.
    """
    text = completion.strip()
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    last_close = len(text) - len(ANSWER_CLOSE)
    match = _THINK_TO_ANSWER.search(text, len(THINK_OPEN), last_close)
    return match is not None


def extract_answer(completion: str, *, require_tags: bool = True) -> str | None:
    """The text inside the first complete ``<answer>…</answer>`` block.

    Without a complete block: ``None`` when ``require_tags`` (the default), else the whole completion.
    """
    start = completion.find(ANSWER_OPEN)
    if start >= 0:
        end = completion.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end >= 0:
            return completion[start + len(ANSWER_OPEN) : end]
    return None if require_tags else completion


def strip_code_fence(text: str) -> str:
    """The content of the first Markdown code fence (```json … ```) if there is one, else the text; stripped.

    An unterminated fence (truncated output) yields everything after its opening.
    """
    open_at = text.find("```")
    if open_at < 0:
        return text.strip()
    lang = _FENCE_LANG.match(text, open_at + 3)
    start = lang.end() if lang else open_at + 3
    close_at = text.find("```", start)
    return (text[start:close_at] if close_at >= 0 else text[start:]).strip()
