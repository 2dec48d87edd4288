"""The task ``acme.cls``: name the class of an image, choosing among the candidate classes of its record.

A record lists its candidates (``"classes": ["circle", "square", "triangle"]``) and its ``solution`` is one of
them. The model answers a class name or the class's number in the list; the parser resolves either to the
candidate as the record writes it, so rewards and the metric compare names only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

import vgrpo

# "2", "2.", "(2)", "2)" or "2. square": a candidate's number, optionally followed by its name.
_NUMBERED = re.compile(r"\(?([0-9]{1,4})[.):]?(?:\s+(.*))?", re.DOTALL)


def normalise(name: str) -> str:
    """Lower-case and collapse whitespace: how class names compare."""
    return " ".join(name.lower().split())


def resolve(answer: str, classes: Sequence[str], *, allow_number: bool = True) -> str | None:
    """The candidate that ``answer`` names, as written in ``classes``, or ``None``.

    ``answer`` is a class name (case and spacing ignored, a final "." allowed) or, with ``allow_number``,
    the class's 1-based number in ``classes``, optionally followed by the same class's name ("2. square").
    """
    text = answer.strip().rstrip(".!").strip()
    by_name = {normalise(c): c for c in classes}
    match = _NUMBERED.fullmatch(text) if allow_number else None
    if match is not None:
        index = int(match.group(1))
        if not 1 <= index <= len(classes):
            return None
        chosen = classes[index - 1]
        named = match.group(2)
        return chosen if named is None or normalise(named) == normalise(chosen) else None
    return by_name.get(normalise(text))


def macro_accuracy(predictions: Sequence[str | None], solutions: Sequence[str]) -> float:
    """The mean over ground-truth classes of each class's accuracy (0.0 for an empty split)."""
    per_class: dict[str, list[bool]] = {}
    for prediction, solution in zip(predictions, solutions, strict=True):
        hit = prediction is not None and normalise(prediction) == normalise(solution)
        per_class.setdefault(normalise(solution), []).append(hit)
    if not per_class:
        return 0.0
    return sum(sum(hits) / len(hits) for hits in per_class.values()) / len(per_class)


class ClsParams(vgrpo.TaskParams):
    allow_number: bool = Field(
        True, description="Accept the candidate's number in the list (1-based) as well as its name."
    )


@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed: str | None, sample: vgrpo.Sample) -> float:
    """Top-1 accuracy: 1.0 when the chosen candidate is the ground-truth class."""
    return 1.0 if parsed is not None and normalise(parsed) == normalise(sample.solution) else 0.0


class ClsTask(vgrpo.Task):
    name = "acme.cls"
    version = "0.1.0"
    description = "Name the class of the image, choosing among the record's candidate classes."
    Params = ClsParams
    template = vgrpo.PromptTemplate(
        user="{question} The candidate classes are:\n{classes:numbered}\nFirst output the thinking process "
        "in <think> </think> tags, then output one class name, or its number in the list, in <answer> "
        "</answer> tags."
    )
    rewards = (accuracy, vgrpo.format_reward)
    default_weights = {"accuracy": 1.0, "format": 1.0}
    metric_names = ("top1", "macro_accuracy")
    example = {
        "id": "cls-0",
        "image": "images/train-000.png",
        "question": "Which shape is in the image?",
        "classes": ["circle", "square", "triangle"],
        "solution": "square",
    }
    example_completion = (
        "<think>Four equal sides and right angles: the second candidate.</think><answer>2</answer>"
    )

    def parse(self, completion: str, params: ClsParams, sample: vgrpo.Sample | None = None) -> str | None:
        """The candidate the answer names (by name or number), as the record writes it; ``None`` when the
        answer names no candidate. Without a sample only a name can be read (lower-cased)."""
        answer = vgrpo.extract_answer(completion, require_tags=params.require_answer_tags)
        if answer is None:
            return None
        if sample is None:
            return normalise(answer) or None
        classes = sample.extra.get("classes")
        if not isinstance(classes, list):
            return None
        return resolve(answer, classes, allow_number=params.allow_number)

    def check_solution(self, solution: Any) -> str:
        if not isinstance(solution, str) or not solution.strip():
            raise ValueError(f"expected a class name (a non-empty string), got {solution!r}")
        return solution.strip()

    def check_record(self, record: Mapping[str, Any], params: vgrpo.TaskParams) -> None:
        """The candidates are a non-empty list of distinct class names and the solution is one of them."""
        classes = record.get("classes")
        if not (
            isinstance(classes, list) and classes and all(isinstance(c, str) and c.strip() for c in classes)
        ):
            raise vgrpo.DataError(
                f"expected a non-empty list of class names (strings), got {classes!r}", field="classes"
            )
        if len({normalise(c) for c in classes}) != len(classes):
            raise vgrpo.DataError(f"expected distinct class names, got {classes!r}", field="classes")
        super().check_record(record, params)  # the solution's shape, the template's fields
        solution = self.check_solution(record["solution"])
        if normalise(solution) not in {normalise(c) for c in classes}:
            raise vgrpo.DataError(
                f"expected the solution to be one of the classes {classes!r}, got {solution!r}",
                field="solution",
            )

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[vgrpo.Sample], params: vgrpo.TaskParams
    ) -> dict[str, float]:
        """Top-1 accuracy over the split, and macro accuracy: the mean of the per-class accuracies (each
        ground-truth class counts once, however many records it has). ``None`` predictions are wrong."""
        if not samples:
            return {"top1": 0.0, "macro_accuracy": 0.0}
        preds = [p if isinstance(p, str) else None for p in predictions]
        solutions = [s.solution for s in samples]
        hits = [p is not None and normalise(p) == normalise(t) for p, t in zip(preds, solutions, strict=True)]
        return {"top1": sum(hits) / len(hits), "macro_accuracy": macro_accuracy(preds, solutions)}

    def reference_completion(self, sample: vgrpo.Sample, params: vgrpo.TaskParams) -> str:
        return f"<think>The image shows a {sample.solution}.</think><answer>{sample.solution}</answer>"
