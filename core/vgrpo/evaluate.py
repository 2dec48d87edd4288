"""Evaluation: greedy completions for a split, each task's dataset-level metric, resumable.

Predictions go to ``predictions.jsonl`` as they are made; a re-run skips (task, id) pairs already there, so
an interrupted evaluation continues where it stopped. Metrics go to ``eval_metrics.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vgrpo.config import GenerationConfig
from vgrpo.models.adapters import ModelAdapter
from vgrpo.rollout import eos_token_ids, sample
from vgrpo.scoring import safe_parse
from vgrpo.task import Sample, Task, TaskParams

log = logging.getLogger(__name__)


@dataclass
class EvalSplit:
    """One task's evaluation data."""

    task: Task
    params: TaskParams
    samples: list[Sample]


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.exists():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption: predicted again
                continue
            done[(row["task"], row["id"])] = row
    return done


def evaluate(
    model: Any,
    processor: Any,
    adapter: ModelAdapter,
    splits: Sequence[EvalSplit],
    output_dir: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    progress: Any = None,
) -> dict[str, dict[str, float]]:
    """Greedy predictions for every sample of every split, then each task's metric over its whole split."""
    from PIL import Image

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / "predictions.jsonl"
    done = _done(pred_path)
    gen = GenerationConfig(max_completion_length=max_new_tokens)
    eos = eos_token_ids(model, processor)
    model.eval()
    todo = [(s, x) for s in splits for x in unique_samples(s) if (s.task.name, x.id) not in done]
    bar = progress.add_task("eval", total=len(todo)) if progress is not None else None
    with pred_path.open("a", encoding="utf-8") as f:
        if not _ends_with_newline(pred_path):
            f.write("\n")  # a line cut by an interruption stays alone (and is skipped when read)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [[Image.open(p).convert("RGB") for p in x.images] for _, x in chunk]
            messages = [s.task.build_prompt(x, s.params) for s, x in chunk]
            inputs = adapter.encode(processor, messages, images)
            sizes = adapter.input_sizes(processor, inputs, images)
            rollout = sample(model, processor, dict(inputs), gen, eos, greedy=True)
            for (s, x), text, size in zip(chunk, rollout.texts, sizes):
                parsed, error = safe_parse(s.task, text, s.params)
                row = {"task": s.task.name, "id": x.id, "completion": text, "parsed": parsed,
                       "input_size": list(size) if size else None, "error": error}  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                done[(s.task.name, x.id)] = row
            f.flush()
            if bar is not None:
                progress.advance(bar, len(chunk))
    metrics: dict[str, dict[str, float]] = {}
    for s in splits:
        rows = [done[(s.task.name, x.id)] for x in s.samples]
        samples = [replace(x, input_size=tuple(r["input_size"])) if r.get("input_size") else x
                   for x, r in zip(s.samples, rows)]  # fmt: skip
        predictions = [r["parsed"] for r in rows]
        result = dict(s.task.metric(predictions, samples, s.params))
        result["parse_rate"] = sum(p is not None for p in predictions) / max(1, len(predictions))
        result["n"] = float(len(predictions))
        metrics[s.task.name] = result
    (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def unique_samples(split: EvalSplit) -> list[Sample]:
    """The split's samples with unique ids (duplicates would be skipped on resume)."""
    seen: set[str] = set()
    for x in split.samples:
        if x.id in seen:
            raise ValueError(f"task {split.task.name}: sample id {x.id!r} appears twice; ids must be unique to resume")
        seen.add(x.id)
    return split.samples
