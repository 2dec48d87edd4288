"""Reading think/answer completions: linear-time and equal to the documented regex."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from vgrpo.completion import FORMAT_PATTERN, extract_answer, is_well_formatted, strip_code_fence

FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", "\u2003", "<", ">", "/", "think"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join) | st.text(max_size=40))
def test_format_check_equals_the_documented_regex(text):
    assert is_well_formatted(text) == bool(re.fullmatch(FORMAT_PATTERN, text, re.DOTALL))


def test_format_cases():
    assert is_well_formatted("<think>a</think><answer>b</answer>")
    assert is_well_formatted("  \n<think>\nline\n</think>\n\n<answer>\n3\n</answer>\n ")
    assert is_well_formatted("<think></think><answer></answer>")
    assert not is_well_formatted("<think>a</think><answer>b</answer> trailing")
    assert not is_well_formatted("<answer>b</answer>")
    assert not is_well_formatted("<think>a</think>text<answer>b</answer>")
    assert not is_well_formatted("<think>a<answer>b</answer>")


def test_format_check_is_linear_on_adversarial_input():
    evil = "<think>" + "</think><answer>" * 20000 + "x"
    start = time.perf_counter()
    assert not is_well_formatted(evil)
    assert extract_answer("<answer>" * 50000) is None
    assert time.perf_counter() - start < 10  # linear: well under a second; quadratic would take minutes


def test_extract_answer_takes_the_first_complete_block():
    assert extract_answer("<think>t</think><answer> 42 </answer><answer>7</answer>") == " 42 "
    assert extract_answer("<answer>unterminated") is None
    assert extract_answer("no tags", require_tags=False) == "no tags"
    assert extract_answer("a <answer>b</answer>", require_tags=False) == "b"


def test_strip_code_fence():
    assert strip_code_fence("```json\n[1, 2]\n```") == "[1, 2]"
    assert strip_code_fence('text before ```json\n{"a": 1}``` after') == '{"a": 1}'
    assert strip_code_fence("```\n[1]\n```") == "[1]"
    assert strip_code_fence("```json\n[1, 2") == "[1, 2"  # truncated output
    assert strip_code_fence("  [1]  ") == "[1]"
