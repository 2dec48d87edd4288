"""Math: the last ``\\boxed{…}`` of the answer must equal the ground truth as math, judged by math-verify."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

import vgrpo
from vgrpo_math import sources
from vgrpo_math.answer import gold_text, parse_answer
from vgrpo_math.verifier import Outcome, default_verifier

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem


class MathParams(vgrpo.TaskParams):
    """Knobs of the math task."""

    timeout_s: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="Time limit in seconds for verifying one answer (parsing both sides and comparing them). "
        "An answer that takes longer scores 0 and is counted as a 'timeout' failure.",
    )
    max_answer_chars: int = Field(
        1000,
        gt=0,
        description="A prediction longer than this many characters scores 0 without calling math-verify: a junk "
        "answer (nested JSON, a wall of digits) would otherwise spend the whole time limit.",
    )


def verify_batch(parsed: Sequence[Any], samples: Sequence[vgrpo.Sample], params: MathParams) -> list[Outcome]:
    """math-verify's verdict for each prediction against its sample's ground truth (``None`` → False)."""
    pairs: list[tuple[str, str]] = []
    where: list[int] = []
    out: list[Outcome] = [False] * len(parsed)
    for i, (pred, sample) in enumerate(zip(parsed, samples)):
        if isinstance(pred, str) and pred and len(pred) <= params.max_answer_chars:
            pairs.append((gold_text(sample.solution), pred))
            where.append(i)
    if pairs:
        for i, outcome in zip(where, default_verifier().verify(pairs, params.timeout_s)):
            out[i] = outcome
    return out


@vgrpo.reward(range=(0.0, 1.0), batched=True)
def accuracy(parsed: Sequence[Any], samples: Sequence[vgrpo.Sample], params: MathParams) -> list[Any]:
    """1.0 when math-verify finds the answer equal to the ground truth; a timeout scores 0 and is counted."""
    outcomes = verify_batch(parsed, samples, params)
    return [o if isinstance(o, vgrpo.RewardFailure) else (1.0 if o else 0.0) for o in outcomes]


class MathTask(vgrpo.Task):
    name = "math"
    version = "0.1.0"
    description = "Solve a (visual) math problem; the answer in \\boxed{} is checked with math-verify."
    Params = MathParams
    template = vgrpo.PromptTemplate(
        user="{question} First output the thinking process in <think> </think> tags and then output the "
        "final answer in <answer> </answer> tags, with the final result inside \\boxed{{}}."
    )
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {
        "id": "math-0",
        "image": "triangle.png",
        "question": "The figure shows a right triangle with legs 3 and 4. How long is its hypotenuse?",
        "solution": "5",
    }
    example_completion = (
        "<think>By Pythagoras the hypotenuse is \\sqrt{3^2 + 4^2} = \\sqrt{25} = 5.</think> "
        "<answer>\\boxed{5}</answer>"
    )

    def parse(self, completion: str, params: vgrpo.TaskParams) -> str | None:
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        return None if answer is None else parse_answer(answer)

    def check_solution(self, solution: Any) -> str:
        return gold_text(solution)

    def correct(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> list[bool]:
        """math-verify finds the answer equal to the ground truth (a timeout counts as not equal)."""
        outcomes = verify_batch(predictions, samples, self.params(params))  # type: ignore[arg-type]
        return [o is True for o in outcomes]

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> dict[str, float]:
        """Accuracy over the dataset: the share of predictions math-verify finds equal (timeouts count 0)."""
        if not samples:
            return {"accuracy": 0.0}
        params = self.params(params)
        hits = [o is True for o in verify_batch(predictions, samples, params)]  # type: ignore[arg-type]
        return {"accuracy": sum(hits) / len(hits)}

    # -- optional methods: the SFT target, where records come from (vgrpo data synth, vgrpo data convert) --
    def reference_completion(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> str:
        """The ground truth in ``\\boxed{}``, after a one-line thought (the SFT cold start's target)."""
        return f"<think>Computing it.</think><answer>\\boxed{{{gold_text(sample.solution)}}}</answer>"

    def synth_record(self, item: SynthItem) -> dict[str, Any]:
        """A text-only sum, difference or product of small integers (no scene, no image)."""
        return sources.synth_record(item)

    def vlm_r1_match(self, record: VlmR1Record) -> tuple[float, str] | None:
        """A VLM-R1 record is math when its ``accu_reward_method`` says so."""
        return sources.vlm_r1_match(record)

    def vlm_r1_solution(self, record: VlmR1Record) -> Any:
        """The answer text (inside ``<answer>`` when there is one), or a number."""
        return sources.vlm_r1_solution(record)
