"""Where math records come from besides hand-written JSONL: synthetic arithmetic and VLM-R1's math data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem


def synth_record(item: SynthItem) -> dict[str, Any]:
    """A text-only sum, difference (possibly negative) or product with its integer result as a string."""
    rng = item.rng
    op = rng.choice("+-×")
    if op == "×":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        result = a * b
    else:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        result = a + b if op == "+" else a - b
    return {"id": f"math-{item.name}", "question": f"What is {a} {op} {b}?", "solution": str(result)}


def vlm_r1_match(record: VlmR1Record) -> tuple[float, str] | None:
    """Only VLM-R1's ``accu_reward_method: math`` says a record is math: any answer could be one."""
    return (1.0, "accu_reward_method 'math'") if record.method == "math" else None


def vlm_r1_solution(record: VlmR1Record) -> Any:
    """The answer text (LaTeX or plain), or a number as it is."""
    answer = record.answer
    if isinstance(answer, str) and answer.strip():
        return answer.strip()
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return answer
    raise ValueError(f"expected the answer as text or a number, got {record.quoted_answer}")
