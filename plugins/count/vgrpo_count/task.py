"""Counting: the answer's last integer must equal the ground-truth count."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import vgrpo
from vgrpo_count import sources

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
_WORD_VALUE = {w: i for i, w in enumerate(NUMBER_WORDS)}
# A number written in digits: 12, 1,024 (thousands separators) or a decimal 3.5 (which is not a count).
_NUMBER = re.compile(r"(?<![\w.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?![0-9])")
_WORD = re.compile(r"(?<![\w-])(" + "|".join(NUMBER_WORDS) + r")(?![\w-])", re.IGNORECASE)
MAX_DIGITS = 30  # longer digit strings are no plausible count (and int() of huge strings is slow)


def parse_count(answer: str) -> int | float | None:
    """The last number written in digits (a float when it is a decimal), else the last number word."""
    last = None
    for last in _NUMBER.finditer(answer):  # noqa: B007 - we want the last match
        pass
    if last is not None:
        token = last.group(0).replace(",", "")
        digits = token.lstrip("-")
        if "." in digits:
            whole, frac = digits.split(".", 1)
            if len(whole) > MAX_DIGITS:
                return None
            value = float(f"{whole}.{frac[:MAX_DIGITS]}")
            return -value if token.startswith("-") else value
        if len(digits) > MAX_DIGITS:
            return None
        return int(token)
    word = None
    for word in _WORD.finditer(answer):  # noqa: B007
        pass
    return _WORD_VALUE[word.group(1).lower()] if word is not None else None


@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed: Any, sample: vgrpo.Sample) -> float:
    """1.0 when the predicted count equals the ground truth exactly (a decimal never does)."""
    return 1.0 if isinstance(parsed, int) and parsed == sample.solution else 0.0


class CountTask(vgrpo.Task):
    name = "count"
    version = "0.1.0"
    description = "Count the objects the question asks about; the answer is one integer."
    Params = vgrpo.TaskParams
    template = vgrpo.PromptTemplate(
        user="{question} First output the thinking process in <think> </think> tags and then output the final "
        "answer as a single integer in <answer> </answer> tags."
    )
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {
        "id": "count-0",
        "image": "scene.png",
        "question": "How many red circles are there?",
        "solution": 3,
    }
    example_completion = "<think>I see one, two, three red circles.</think> <answer>3</answer>"

    def parse(self, completion: str, params: vgrpo.TaskParams) -> int | float | None:
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        return None if answer is None else parse_count(answer)

    def check_solution(self, solution: Any) -> int:
        if isinstance(solution, bool) or not isinstance(solution, int) or solution < 0:
            raise ValueError(f"expected a non-negative integer count, got {solution!r}")
        return solution

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> dict[str, float]:
        hits = [
            1.0 if isinstance(p, int) and not isinstance(p, bool) and p == s.solution else 0.0
            for p, s in zip(predictions, samples)
        ]
        return {"accuracy": sum(hits) / len(hits) if hits else 0.0}

    # -- optional methods: the SFT target, where records come from (vgrpo data synth, vgrpo data convert) --
    def reference_completion(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> str:
        """The count in digits, after a one-line thought (the SFT cold start's target)."""
        return f"<think>Counting them.</think><answer>{sample.solution}</answer>"

    def synth_record(self, item: SynthItem) -> dict[str, Any]:
        """How many shapes of a colour and/or kind the scene holds; sometimes one that is absent (0)."""
        return sources.synth_record(item)

    def vlm_r1_match(self, record: VlmR1Record) -> tuple[float, str] | None:
        """A VLM-R1 record whose answer is a whole number looks like count."""
        return sources.vlm_r1_match(record)

    def vlm_r1_solution(self, record: VlmR1Record) -> int:
        """The answer as a whole number >= 0 (``3``, ``"3"``, ``"3.0"``)."""
        return sources.vlm_r1_solution(record)
