"""Adversarial completions for contract checks: edge cases, random text, and mutations of real answers.

A seeded :class:`random.Random` drives everything, so a failing completion is reproduced by the same seed.
The generator knows the shape of R1-style output (``<think>…</think><answer>…</answer>``) and the things
parsers trip over: truncated tags, huge or non-finite numbers, deep JSON nesting, unusual unicode digits.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

_THINK = "<think>a few thoughts</think>"


def _answer(text: str) -> str:
    return f"{_THINK}<answer>{text}</answer>"


#: Always checked, whatever the seed: each one has broken a real parser somewhere.
EDGE_CASES: tuple[str, ...] = (
    "",
    " ",
    "\n\t\n",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<answer></answer>",
    "<answer> </answer>",
    "<think></think><answer></answer>",
    "</answer><answer>",
    "<answer><answer>1</answer></answer>",
    "<answer>" * 50,
    "<think>" + "x" * 100_000 + "</think><answer>1</answer>",
    _answer("1" * 10_000),
    _answer("-" + "9" * 400),
    _answer("1e309"),
    _answer("-1e400"),
    _answer("NaN"),
    _answer("Infinity"),
    _answer("-0.0"),
    _answer("0x1F"),
    _answer("1_000"),
    _answer("1,000,000.5"),
    _answer("3/0"),
    _answer("[" * 5_000 + "]" * 5_000),
    _answer("{" * 3_000),
    _answer('{"a": ' * 2_000 + "1" + "}" * 2_000),
    _answer("null"),
    _answer("true"),
    _answer("[]"),
    _answer("{}"),
    _answer('""'),
    _answer("[1, 2, 3, 4]"),
    _answer("[1e999, 0, 1, 1]"),
    _answer("[0, 0, 0, 0]"),
    _answer('{"bbox_2d": [0, 0, "a", 1]}'),
    _answer('[{"label": null, "bbox_2d": null}, 7, "x", []]'),
    _answer("```json\n[1, 2, 3, 4]\n```"),
    _answer("```"),
    _answer("\\boxed{"),
    _answer("\\boxed{}"),
    _answer("\\boxed{\\frac{1}{0}}"),
    _answer("\\boxed{" + "{" * 100 + "}"),
    _answer("yes"),
    _answer("no"),
    _answer("٣"),  # Arabic-Indic digit three: int() accepts it
    _answer("\uff13"),  # fullwidth digit
    _answer("Ⅻ"),
    _answer("😀 " * 100),
    _answer("\u200b1\u200b"),
    _answer("\x00"),
    _answer("\ud800"),  # a lone surrogate: not encodable as UTF-8
    _answer("e\u0301"),
    _answer("\u202e321"),
)

_TOKENS = (
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<answer",
    "</ans",
    "<",
    ">",
    "/",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    '"',
    "'",
    "\\",
    ",",
    ".",
    ":",
    "-",
    "+",
    "e",
    "E",
    "\n",
    " ",
    "  ",
    "\t",
    "```",
    "```json",
    "\\boxed{",
    "null",
    "true",
    "NaN",
    "inf",
    "bbox_2d",
    "label",
    "yes",
    "no",
    "é",
    "٣",
    "\uff13",
    "😀",
    "中",
    "∞",
    "\u2212",
    "\u200b",
    "\x00",
)
_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,;:!?-+*/=()[]{}<>\"'\\_#$%&\n"


def _number(rng: random.Random) -> str:
    """A number as text: ordinary, negative, huge, tiny, non-finite, or exotic."""
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randint(0, 20))
    if kind == 1:
        return str(rng.randint(-(10**6), 10**6))
    if kind == 2:
        return "9" * rng.randint(20, 2_000)
    if kind == 3:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 4:
        return f"{rng.choice(['', '-'])}1e{rng.randint(300, 5000)}"
    if kind == 5:
        return rng.choice(["NaN", "nan", "inf", "-inf", "Infinity", "-Infinity", "1e-400"])
    if kind == 6:
        return rng.choice(["٣", "\uff13", "½", "²", "0x10", "1_000", "1,024", "007", "+5", "5.", ".5"])
    if kind == 7:
        return f"{rng.randint(0, 99)}/{rng.randint(0, 9)}"
    return str(rng.randint(0, 2**64))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, 3, 2**70, 1.5, -0.0, 1e308])
    if kind == 2:
        return _text(rng, 12)
    if kind == 3:
        return [rng.randint(-5, 500) for _ in range(4)]
    if kind == 4:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 5:
        keys = ["bbox_2d", "bbox", "label", "answer", "value", _text(rng, 5)]
        return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {"bbox_2d": [rng.randint(-5, 500) for _ in range(4)], "label": _text(rng, 8)}


def _text(rng: random.Random, max_len: int = 80) -> str:
    out = []
    for _ in range(rng.randint(0, max_len)):
        out.append(rng.choice(_TOKENS) if rng.random() < 0.2 else rng.choice(_CHARS))
    return "".join(out)


def _answer_body(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return _number(rng)
    if kind == 1:
        return json.dumps(_json_value(rng), ensure_ascii=rng.random() < 0.5)
    if kind == 2:
        return f"\\boxed{{{_number(rng)}}}"
    return _text(rng)


def _mutate(rng: random.Random, text: str) -> str:
    """One random edit: cut, delete, duplicate, insert, swap a number or the answer, change case."""
    n = len(text)
    kind = rng.randrange(8)
    i, j = sorted((rng.randint(0, n), rng.randint(0, n)))
    if kind == 0:
        return text[:i]  # truncated mid-way (a generation cut off by the length limit)
    if kind == 1:
        return text[:i] + text[j:]
    if kind == 2:
        return text[:j] + text[i:j] + text[j:]
    if kind == 3:
        return text[:i] + rng.choice(_TOKENS) + text[i:]
    if kind == 4:
        digits = [k for k, c in enumerate(text) if c.isdigit()]
        if digits:
            k = rng.choice(digits)
            end = k
            while end < n and text[end].isdigit():
                end += 1
            return text[:k] + _number(rng) + text[end:]
        return text + _number(rng)
    if kind == 5:
        start, end = text.find("<answer>"), text.rfind("</answer>")
        if 0 <= start < end:
            return text[: start + len("<answer>")] + _answer_body(rng) + text[end:]
        return text + _answer_body(rng)
    if kind == 6:
        return text.upper() if rng.random() < 0.5 else text.replace("<", "< ")
    return text[i:j] * rng.randint(2, 5)


def fuzz_completions(n: int = 200, *, seed: int = 0, seeds: Iterable[str] = ()) -> list[str]:
    """Adversarial completions: :data:`EDGE_CASES`, then ``n`` random ones from ``seed``.

    The random ones are random text with tag fragments, well-formed completions with random answers (numbers
    huge and non-finite, random JSON, ``\\boxed{}``), and mutations of ``seeds`` (e.g. a task's correct
    example completion: truncated, spliced, numbers swapped, answer replaced). Deterministic for a seed.
    """
    rng = random.Random(seed)
    seeds = [s for s in seeds if isinstance(s, str)]
    out = list(EDGE_CASES) + list(seeds)
    for _ in range(max(0, n)):
        kind = rng.randrange(4 if seeds else 2)
        if kind == 0:
            text = _text(rng, 200)
        elif kind == 1:
            gap = rng.choice(["", " ", "\n"])
            text = f"<think>{_text(rng, 40)}</think>{gap}<answer>{_answer_body(rng)}</answer>"
        else:
            text = rng.choice(seeds)
            for _ in range(rng.randint(1, 3)):
                text = _mutate(rng, text)
        out.append(text)
    return out
