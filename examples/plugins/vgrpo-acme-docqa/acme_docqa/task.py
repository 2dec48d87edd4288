"""The task ``acme.docqa``: answer a question about a document or chart image with text read from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

import vgrpo
from acme_docqa.anls import THRESHOLD, anls, exact_match


class DocQAParams(vgrpo.TaskParams):
    anls_threshold: float = Field(
        THRESHOLD,
        gt=0,
        le=1,
        description="Normalised edit distance from which an answer scores 0 (DocVQA: 0.5).",
    )


@vgrpo.reward("anls", range=(0.0, 1.0))
def anls_reward(parsed: str | None, sample: vgrpo.Sample, params: DocQAParams) -> float:
    """ANLS against the acceptable answers: 1 - normalised edit distance, 0 from the threshold on."""
    return anls(parsed, sample.solution, params.anls_threshold)


@vgrpo.reward("exact_match", range=(0.0, 1.0))
def exact_match_reward(parsed: str | None, sample: vgrpo.Sample) -> float:
    """1.0 when the answer equals an acceptable answer, ignoring case and repeated whitespace."""
    return exact_match(parsed, sample.solution)


class DocQATask(vgrpo.Task):
    name = "acme.docqa"
    version = "0.1.0"
    description = "Answer a question about a document or chart with text read from it; scored with ANLS."
    Params = DocQAParams
    template = vgrpo.PromptTemplate(
        user="{question} Read the answer off the image. First output the thinking process in <think> "
        "</think> tags, then output the answer exactly as it is written in the image in <answer> </answer> "
        "tags."
    )
    rewards = (anls_reward, exact_match_reward, vgrpo.format_reward)
    default_weights = {"anls": 1.0, "format": 1.0}
    metric_names = ("anls", "exact_match")
    example = {
        "id": "docqa-0",
        "image": "invoice.png",
        "question": "What is the invoice number?",
        "solution": ["INV-0421"],
    }
    example_completion = "<think>The header reads Invoice No: INV-0421.</think><answer>INV-0421</answer>"

    def parse(self, completion: str, params: DocQAParams) -> str | None:
        """The answer block with whitespace collapsed; ``None`` when it is missing or blank."""
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        if answer is None:
            return None
        text = " ".join(answer.split())
        return text or None

    def check_solution(self, solution: Any) -> list[str]:
        answers = [solution] if isinstance(solution, str) else solution
        if not (
            isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)
        ):
            raise ValueError(
                "expected an answer string or a non-empty list of acceptable answer strings, "
                f"got {solution!r}"
            )
        return answers

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: DocQAParams
    ) -> dict[str, float]:
        """Mean ANLS and exact match over the split; an unparsable prediction scores 0 on both."""
        if not samples:
            return {"anls": 0.0, "exact_match": 0.0}
        pairs = list(zip(predictions, samples, strict=True))
        scores = [anls(p, s.solution, params.anls_threshold) for p, s in pairs]
        matches = [exact_match(p, s.solution) for p, s in pairs]
        return {"anls": sum(scores) / len(samples), "exact_match": sum(matches) / len(samples)}
