"""An example third-party vgrpo plugin: yes/no questions about an image.

It shows the whole contract in one file: params, template, parser, rewards, metric, and the hook.
Third-party task and reward names are dotted (``acme.yesno``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

import vgrpo

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class YesNoParams(vgrpo.TaskParams):
    first_word_only: bool = Field(
        False, description="Read only the answer's first word instead of its first yes/no."
    )


@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed: Any, sample: vgrpo.Sample) -> float:
    """1.0 when the answer's yes/no equals the ground truth."""
    return 1.0 if parsed is not None and parsed == sample.solution else 0.0


@vgrpo.reward("acme.brevity", range=(0.0, 1.0))
def brevity(completion: str) -> float:
    """1.0 for completions up to 400 characters, falling linearly to 0 at 2,000."""
    return min(1.0, max(0.0, (2000 - len(completion)) / 1600))


class YesNoTask(vgrpo.Task):
    name = "acme.yesno"
    version = "0.1.0"
    description = "Answer a yes/no question about the image."
    Params = YesNoParams
    template = vgrpo.PromptTemplate(
        user="{question} Think in <think> </think> tags, then answer yes or no in <answer> </answer> tags."
    )
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {"id": "yn-0", "image": "cat.png", "question": "Is there a cat?", "solution": "yes"}
    example_completion = "<think>I see whiskers and ears.</think><answer>Yes</answer>"

    def parse(self, completion: str, params: YesNoParams) -> str | None:
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        if answer is None:
            return None
        if params.first_word_only:
            words = answer.split()
            word = words[0].strip(".,!").lower() if words else ""
            return word if word in ("yes", "no") else None
        match = _YES_NO.search(answer)
        return match.group(1).lower() if match else None

    def check_solution(self, solution: Any) -> str:
        if not isinstance(solution, str) or solution.strip().lower() not in ("yes", "no"):
            raise ValueError(f'expected "yes" or "no", got {solution!r}')
        return solution.strip().lower()

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: YesNoParams
    ) -> dict[str, float]:
        hits = [p == s.solution for p, s in zip(predictions, samples)]
        return {"accuracy": sum(hits) / len(hits) if hits else 0.0}


@vgrpo.hookimpl
def vgrpo_tasks() -> list[vgrpo.Task]:
    return [YesNoTask()]


@vgrpo.hookimpl
def vgrpo_rewards() -> list[vgrpo.Reward]:
    return [brevity]
