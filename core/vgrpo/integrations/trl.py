"""vgrpo's tasks and rewards inside TRL's ``GRPOTrainer``, for people who train there.

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from vgrpo.integrations.trl import dataset_rows, reward_funcs

    funcs = reward_funcs("mix.yaml")  # a TrainConfig, a YAML config path, or task names: ["rec", "count"]
    rows = dataset_rows("rec.jsonl", "rec") + dataset_rows("count.jsonl", "count")
    trainer = GRPOTrainer(model=..., reward_funcs=funcs, train_dataset=Dataset.from_list(rows),
                          args=GRPOConfig(..., reward_weights=[f.weight for f in funcs]))

:func:`reward_funcs` gives one TRL reward function per (task, reward) pair, named ``<task>/<reward>``: it
returns the reward's value for the rows of its task and ``None`` for the others. TRL turns ``None`` into NaN,
sums the weighted rewards of a row with ``nansum`` and logs each function's ``nanmean``, so a row's total is
exactly vgrpo's weighted total for its task (weights from the config's ``rewards:`` or the task's defaults,
reward params from its ``{weight, params}`` entries; rewards with weight 0, like rec's ``iou``, are still
logged) and TRL logs ``rewards/<task>/<reward>/mean`` per task, as vgrpo's trainer logs
``tasks/<task>/<reward>``; each call also logs ``tasks/<task>/parse_rate``
through TRL's ``log_metric``. TRL's single weight per function could not express per-task weights with one
function per reward name, hence the pairs. A batch is parsed and scored once, however many of the functions
TRL calls on it, with vgrpo's safety net (a reward that raises scores its minimum).

Rows are routed by the ``task`` column (optional when there is one task). A row's sample is rebuilt from the
columns :func:`dataset_rows` writes: ``solution`` (the ground truth as JSON text, for structured ground truths
such as boxes; text that is not JSON, or whose JSON value the task refuses, is taken as a plain-text ground
truth, like the ``\\frac{1}{2}`` of a usual R1-V/TRL math dataset; a non-string value is taken as the ground
truth itself), and optionally ``id``, ``question``, ``image_size``, ``input_size``, ``extra``
(the record's task extras, JSON text or a mapping) and ``images`` (used as the sample's paths when they are
paths). TRL does not pass the size of the image the model saw to reward functions, so rec's ``coords: abs``
on a model that resizes images needs ``input_size`` in the records (or a normalised ``coords``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgrpo.config import TrainConfig, load_config
from vgrpo.data import load_jsonl, sample_from_record
from vgrpo.errors import DataError, ParamsError
from vgrpo.plugins import PluginRegistry, get_registry
from vgrpo.rewards import Reward, RewardWeights
from vgrpo.scoring import Score, resolve_weights, score
from vgrpo.task import Sample, Task, TaskParams

__all__ = ["TrlReward", "dataset_rows", "reward_funcs"]

log = logging.getLogger(__name__)

#: The columns a row's sample is rebuilt from (besides ``task`` and ``images``).
SAMPLE_COLUMNS = ("solution", "id", "question", "image_size", "input_size", "extra")


@dataclass(frozen=True)
class _Setup:
    task: Task
    params: TaskParams
    weights: RewardWeights  # with the validated params of the rewards configured with some


def _setups(tasks_or_config: Any, registry: PluginRegistry) -> dict[str, _Setup]:
    """Each task's params and reward weights, from a TrainConfig, a YAML path or a list of task names."""
    config = tasks_or_config
    if isinstance(config, (str, os.PathLike)):
        text = os.fspath(config)
        if not (text.endswith((".yaml", ".yml")) or Path(text).is_file()):
            raise ParamsError(
                f"expected a TrainConfig, a YAML config path or a list of task names, got {text!r}"
                f" (for one task, pass [{text!r}])"
            )
        config = load_config(text)
    if isinstance(config, TrainConfig):
        registry.require(config.required_plugins)
        entries = [(e.task, e.params, e.rewards) for e in config.tasks]
    elif (
        isinstance(config, Sequence)
        and not isinstance(config, str)
        and all(isinstance(t, str) for t in config)
    ):
        entries = [(name, {}, None) for name in config]
        if len(set(config)) != len(config):
            raise ParamsError(f"expected each task once, got {list(config)}")
    else:
        raise ParamsError(
            f"expected a TrainConfig, a YAML config path or a list of task names, got "
            f"{type(tasks_or_config).__name__}"
        )
    if not entries:
        raise ParamsError("expected at least one task, got none")
    out = {}
    for i, (name, params, weights) in enumerate(entries):
        task = registry.task(name)
        resolved = resolve_weights(task, weights, registry.rewards, key=f"tasks[{i}].rewards")
        out[name] = _Setup(task, task.params(params), resolved)
    return out


def _text(completion: Any) -> str:
    """A completion's text: a string as it is; a conversational completion, its last message's text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            return "".join(
                p.get("text") or "" for p in content if isinstance(p, Mapping) and p.get("type") == "text"
            )
    return ""


def _json_or_text(solution: Any) -> Any:
    """A ``solution`` cell: JSON text as its value, other text as it is, a non-string value as it is."""
    if not isinstance(solution, str):
        return solution
    try:
        return json.loads(solution)
    except json.JSONDecodeError:
        return solution


class _BatchScorer:
    """Parses and scores a TRL batch once for all the reward functions made together."""

    def __init__(self, setups: dict[str, _Setup], plugin_rewards: Mapping[str, Reward]) -> None:
        self.setups = setups
        self.plugin_rewards = plugin_rewards
        self._key: Any = None
        self._result: tuple[list[str], list[Score]] = ([], [])

    def __call__(
        self, completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> tuple[list[str], list[Score]]:
        texts = [_text(c) for c in completions]
        names = self._task_names(columns, len(texts))
        key = (texts, names, json.dumps([columns.get(c) for c in (*SAMPLE_COLUMNS, "images")], default=repr))
        if key == self._key:
            return self._result
        samples = [self._sample(columns, i, names[i]) for i in range(len(texts))]
        scores: list[Any] = [None] * len(texts)
        log_metric = columns.get("log_metric")
        for name in dict.fromkeys(names):
            rows = [i for i, n in enumerate(names) if n == name]
            setup = self.setups[name]
            batch = score(
                setup.task,
                [texts[i] for i in rows],
                [samples[i] for i in rows],
                setup.params,
                setup.weights,
                plugin_rewards=self.plugin_rewards,
            )
            for i, s in zip(rows, batch):
                scores[i] = s
            if callable(log_metric):
                log_metric(f"tasks/{name}/parse_rate", sum(s.parsed is not None for s in batch) / len(batch))
        self._key, self._result = key, (names, scores)
        return self._result

    def _task_names(self, columns: Mapping[str, Any], n: int) -> list[str]:
        configured = list(self.setups)
        if "task" not in columns:
            if len(configured) == 1:
                return configured * n
            raise DataError(
                f"expected a 'task' column naming each row's task (one of {configured})", field="task"
            )
        names = list(columns["task"])
        for i, name in enumerate(names):
            if name not in self.setups:
                raise DataError(
                    f"row {i}: expected one of the configured tasks {configured}, got {name!r}", field="task"
                )
        return names

    def _sample(self, columns: Mapping[str, Any], i: int, name: str) -> Sample:
        """A row's sample from its columns, validated by its task like a JSONL record."""
        if "solution" not in columns:
            raise DataError("expected a 'solution' column with each row's ground truth", field="solution")
        record: dict[str, Any] = {}
        extra = columns["extra"][i] if "extra" in columns else None
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"row {i} (task {name}): expected JSON text ({exc.msg} at column {exc.colno})",
                    field="extra",
                ) from None
        # JSON text (what dataset_rows writes), else plain text, e.g. an R1-V/TRL math answer `\frac{1}{2}`
        raw = columns["solution"][i]
        record["solution"] = _json_or_text(raw)
        if isinstance(extra, Mapping):
            record.update(extra)
        for key in ("id", "question", "image_size", "input_size"):
            if key in columns and columns[key][i] is not None:
                record[key] = columns[key][i]
        images = columns["images"][i] if "images" in columns else None
        if isinstance(images, list) and images and all(isinstance(p, str) for p in images):
            record["image"] = images
        task = self.setups[name].task
        try:
            return sample_from_record(record, task, default_id=str(i))
        except DataError as exc:
            if exc.field == "solution" and isinstance(raw, str) and record["solution"] is not raw:
                try:  # plain text that happens to be JSON, e.g. a math interval `[1, 2]`: the text itself
                    return sample_from_record({**record, "solution": raw}, task, default_id=str(i))
                except DataError:
                    pass  # the JSON value's problem is the one to report
            raise DataError(f"row {i} (task {name}): {exc.reason}", field=exc.field) from None


class TrlReward:
    """One reward of one task as a TRL reward function, ``(prompts, completions, **kwargs) -> list``.

    ``__name__`` is ``<task>/<reward>`` (TRL's log name); ``weight`` goes to ``GRPOConfig.reward_weights``.
    """

    def __init__(self, scorer: _BatchScorer, task: str, reward: str, weight: float) -> None:
        self.task = task
        self.reward = reward
        self.weight = weight
        self.__name__ = f"{task}/{reward}"
        self._scorer = scorer

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        names, scores = self._scorer(completions, kwargs)
        return [s.rewards[self.reward] if n == self.task else None for n, s in zip(names, scores)]

    def __repr__(self) -> str:
        return f"<TrlReward {self.__name__} weight={self.weight:g}>"


def reward_funcs(tasks_or_config: Any, *, registry: PluginRegistry | None = None) -> list[TrlReward]:
    """TRL reward functions for the tasks of a TrainConfig, a YAML config path or a list of task names.

    One per (task, reward): every reward of each task plus the plugin rewards its weights name, in that
    order. Pass ``[f.weight for f in funcs]`` as ``GRPOConfig.reward_weights``. Unknown tasks, rewards or
    params raise here, not during training.
    """
    registry = registry or get_registry()
    setups = _setups(tasks_or_config, registry)
    scorer = _BatchScorer(setups, registry.rewards)
    funcs = []
    for name, setup in setups.items():
        rewards = [r.name for r in setup.task.rewards]
        rewards += [r for r in setup.weights if r not in rewards]
        funcs += [TrlReward(scorer, name, r, setup.weights.get(r, 0.0)) for r in rewards]
    log.info("TRL reward functions: %s", ", ".join(f"{f.__name__} ({f.weight:g})" for f in funcs))
    return funcs


def _placeholder_prompt(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as TRL wants them in a dataset: image parts become ``{"type": "image"}`` placeholders."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                for p in content
            ]
        out.append({"role": m["role"], "content": content})
    return out


def dataset_rows(
    path: str | Path,
    task: str | Task,
    *,
    params: Mapping[str, Any] | TaskParams | None = None,
    image_root: str | Path | None = None,
    registry: PluginRegistry | None = None,
    load_images: bool = True,
) -> list[dict[str, Any]]:
    """A task's JSONL records as TRL dataset rows (``datasets.Dataset.from_list(rows)``).

    Columns: ``prompt`` (the task's chat prompt with image placeholders), ``images`` (PIL images, or their
    paths with ``load_images=False``, e.g. to cast to ``datasets.Image`` for lazy decoding), ``task``, and
    :data:`SAMPLE_COLUMNS` for :func:`reward_funcs`: ``solution`` and ``extra`` as JSON text, so rows of
    different tasks share one column type.
    """
    registry = registry or get_registry()
    task = task if isinstance(task, Task) else registry.task(task)
    params = task.params(params)
    rows = []
    for s in load_jsonl(path, task, image_root=image_root, read_sizes=True):
        if load_images:
            from PIL import Image

            images: list[Any] = []
            for p in s.images:
                with Image.open(p) as img:
                    images.append(img.convert("RGB"))
        else:
            images = list(s.images)
        rows.append(
            {
                "prompt": _placeholder_prompt(task.build_prompt(s, params)),
                "images": images,
                "task": task.name,
                "id": s.id,
                "question": s.question,
                "solution": json.dumps(s.solution, ensure_ascii=False),
                "image_size": list(s.image_size) if s.image_size else None,
                "input_size": list(s.input_size) if s.input_size else None,
                "extra": json.dumps(dict(s.extra), ensure_ascii=False, default=repr),
            }
        )
    return rows
