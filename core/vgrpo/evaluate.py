"""Evaluation: completions for whole splits, each task's dataset-level metric, pass@k, resumable.

Greedy decoding by default (one completion per record); with ``num_samples`` N > 1, N completions per record
are sampled and each task's metric is averaged over the N, plus pass@k from the task's per-record
``correct``. With an ``output_dir``, predictions go to ``predictions.jsonl`` as they are made and a re-run
skips the (task, id, sample) rows already there that were made with the same settings (``max_new_tokens``;
greedy, or sampled with the same temperature, top_p and seed); a row that does not record them (an older
file's) is made again. Metrics go to ``eval_metrics.json``. Without an ``output_dir`` (evaluation during
training) nothing is written. Sampled rows draw from their own seeded generators, so the torch RNG of the
caller (training's) is left as it was.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vgrpo.config import GenerationConfig, TrainConfig
from vgrpo.data import jsonl_lines, load_jsonl
from vgrpo.errors import DataError
from vgrpo.models.adapters import ModelAdapter
from vgrpo.plugins import plugin_output
from vgrpo.prompts import Prompt, encode_prompts, open_images
from vgrpo.rollout import eos_token_ids, row_seed, sample
from vgrpo.scoring import safe_parse
from vgrpo.task import Sample, Task, TaskParams

if TYPE_CHECKING:
    from vgrpo.plugins import PluginRegistry

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
METRICS = "eval_metrics.json"
#: Keys every task's result has besides its own metrics and pass@k.
COUNT_KEYS = ("parse_rate", "unparsed", "n")


@dataclass
class EvalSplit:
    """One task's evaluation data."""

    task: Task
    params: TaskParams
    samples: list[Sample]


def build_eval_splits(
    config: TrainConfig, registry: PluginRegistry, adapter: ModelAdapter | None = None
) -> list[EvalSplit]:
    """One split per task of ``config.tasks``: ``eval.data[task]`` (default: the task's training data), the
    task's params (a ``coords`` param the config does not set follows ``adapter``, as in training), at most
    ``eval.max_samples`` records. Missing plugins, unknown tasks, bad records, duplicate ids and missing images
    fail here, before any generation."""
    from vgrpo.mixture import task_params

    registry.require(config.required_plugins)
    splits = []
    for entry in config.tasks:
        task = registry.task(entry.task)
        params = task_params(task, entry.params, adapter)
        files = config.eval.data.get(entry.task, entry.data)
        samples = [s for f in files for s in load_jsonl(f, task, image_root=entry.image_root, params=params)]
        split = EvalSplit(task, params, samples[: config.eval.max_samples])
        unique_samples(split)
        _check_images(split.task.name, split.samples)
        splits.append(split)
        log.info("eval %s: %d records from %s", entry.task, len(split.samples), ", ".join(files))
    return splits


def eval_settings(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate` that a training config sets (its ``eval:`` section)."""
    ev = config.eval
    return {
        "batch_size": ev.batch_size,
        "max_new_tokens": ev.max_new_tokens or config.generation.max_completion_length,
        "num_samples": ev.num_samples,
        "temperature": ev.temperature,
        "top_p": ev.top_p,
        "pass_k": tuple(ev.pass_k),
        "seed": config.seed,
    }


def flat_metrics(metrics: dict[str, dict[str, float]], prefix: str = "eval") -> dict[str, float]:
    """``{"eval/<task>/<metric>": value}``: the per-task result of :func:`evaluate` as one metrics row."""
    return {f"{prefix}/{task}/{key}": v for task, values in metrics.items() for key, v in values.items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one record with ``c`` correct among ``n`` samples: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# -- predictions.jsonl ---------------------------------------------------------------------------------------
def _mode(temperature: float | None, top_p: float, seed: int) -> dict[str, float] | None:
    """How rows were sampled (``None``: greedy); rows of another mode are never reused."""
    return None if temperature is None else {"temperature": temperature, "top_p": top_p, "seed": seed}


_Key = tuple[str, str, int, str, Any]


def _key(task: str, sample_id: str, index: int, mode: dict[str, float] | None, max_new_tokens: Any) -> _Key:
    """What a row is reused by: the record, the sample index and every setting that makes its completion."""
    return task, sample_id, index, json.dumps(mode, sort_keys=True), max_new_tokens


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _done(path: Path | None) -> dict[_Key, dict[str, Any]]:
    """The rows already predicted, by (task, id, sample index, mode, max_new_tokens); rows without a sample
    index or mode: sample 0, greedy. A row without ``max_new_tokens`` (or a sampled one without ``seed``)
    matches no run: its settings are unknown, so it is predicted again."""
    if path is None or not path.exists():
        return {}
    done = {}
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption: predicted again
                continue
            index, mode = row.get("sample", 0), row.get("sampling")
            done[_key(row["task"], row["id"], index, mode, row.get("max_new_tokens"))] = row
    return done


# -- generation and scoring ----------------------------------------------------------------------------------
def evaluate(
    model: Any,
    processor: Any,
    adapter: ModelAdapter,
    splits: Sequence[EvalSplit],
    output_dir: str | Path | None = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    pass_k: Iterable[int] = (),
    seed: int = 0,
    generate_kwargs: dict[str, Any] | None = None,
    progress: Any = None,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Completions for every record of every split, then each task's metrics over its whole split.

    ``{task: {<task metrics>, "pass@k"..., "parse_rate", "unparsed", "n"}}``. ``num_samples`` 1 is greedy;
    N > 1 samples N completions per record at ``temperature``/``top_p``, each row from its own random
    stream (:func:`vgrpo.rollout.row_seed` of ``seed``, task, id, sample index), and reports pass@k for each k of
    ``pass_k`` (default 1 and N). An unparsable prediction counts as wrong. ``output_dir=None`` writes
    nothing; with an ``output_dir``, rows already there are reused only when made with the same
    ``max_new_tokens`` (and, sampled, the same ``temperature``, ``top_p`` and ``seed``). Inputs go to the
    model's device; ``generate_kwargs`` are passed to ``generate``.
    ``progress``: a rich Progress, for a bar with ETA.

    ``shard=(rank, world)`` with ``gather`` (an all-gather of one picklable object per process, in rank order)
    splits the generation over processes: each generates a contiguous share of the rows, the rows are
    gathered, and every process computes the same metrics over the whole splits (in memory only).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    ks = sorted(set(pass_k) or {1, num_samples}) if num_samples > 1 else []
    if any(not 1 <= k <= num_samples for k in ks):
        raise ValueError(f"pass@k needs 1 <= k <= num_samples ({num_samples}), got {ks}")
    rank, world = shard
    if world > 1 and (gather is None or output_dir is not None):
        raise ValueError("a sharded evaluation needs `gather` and writes no files (output_dir=None)")
    greedy = num_samples == 1
    mode = _mode(None if greedy else temperature, top_p, seed)
    pred_path = None
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        pred_path = Path(output_dir) / PREDICTIONS
    done = _done(pred_path)
    todo = [
        (s, x, i)
        for s in splits
        for x in unique_samples(s)
        for i in range(num_samples)
        if _key(s.task.name, x.id, i, mode, max_new_tokens) not in done
    ]
    for s in splits:
        _check_images(s.task.name, [x for s_, x, _ in todo if s_ is s])
    share = -(-len(todo) // world)  # contiguous shares keep a record's rows and a task's records together
    mine = todo[rank * share : (rank + 1) * share]
    made: list[tuple[Any, dict[str, Any]]] = []
    if mine:
        gen = GenerationConfig(max_completion_length=max_new_tokens, temperature=temperature, top_p=top_p)
        eos = eos_token_ids(model, processor)
        devices = _cuda_devices(model)
        was_training = model.training
        model.eval()
        bar = progress.add_task("eval", total=len(mine)) if progress is not None else None
        f = pred_path.open("a", encoding="utf-8") if pred_path is not None else None
        try:
            if f is not None and not _ends_with_newline(pred_path):  # type: ignore[arg-type]
                f.write("\n")  # a line cut by an interruption stays alone (and is skipped when read)
            with torch.random.fork_rng(devices=devices):  # the caller's RNG state is kept
                for start in range(0, len(mine), batch_size):
                    chunk = mine[start : start + batch_size]
                    rows = _generate(model, processor, adapter, chunk, gen, eos, mode, seed, generate_kwargs)
                    for (s, x, i), row in zip(chunk, rows):
                        made.append((_key(s.task.name, x.id, i, mode, max_new_tokens), row))
                        if f is not None:
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    if f is not None:
                        f.flush()
                    if bar is not None:
                        progress.advance(bar, len(chunk))
        finally:
            if f is not None:
                f.close()
            model.train(was_training)
    for part in gather(made) if world > 1 and gather is not None else [made]:
        done.update(part)
    metrics = {s.task.name: _split_metrics(s, done, num_samples, mode, max_new_tokens, ks) for s in splits}
    for name, values in metrics.items():
        log.info("eval %s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    if output_dir is not None:
        (Path(output_dir) / METRICS).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _device(model: Any) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _cuda_devices(model: Any) -> list[int]:
    devices = {p.device.index for p in model.parameters() if p.device.type == "cuda"}
    return sorted(d if d is not None else torch.cuda.current_device() for d in devices)


def _generate(
    model: Any,
    processor: Any,
    adapter: ModelAdapter,
    chunk: Sequence[tuple[EvalSplit, Sample, int]],
    gen: GenerationConfig,
    eos: Sequence[int],
    mode: dict[str, float] | None,
    seed: int,
    generate_kwargs: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """One generation batch; the rows of a record next to each other are encoded from one prompt."""
    prompts: list[Prompt] = []
    counts: list[int] = []
    for k, (s, x, _) in enumerate(chunk):
        if k and chunk[k - 1][0] is s and chunk[k - 1][1].id == x.id:
            counts[-1] += 1
        else:
            prompts.append(Prompt(s.task, s.params, x, open_images(x, s.task.name)))
            counts.append(1)
    encoded = encode_prompts(adapter, processor, prompts, _device(model), group_size=counts)
    sizes = [x.input_size for x in encoded.samples]
    inputs = encoded.inputs
    if mode is None:
        rollout = sample(model, processor, inputs, gen, eos, greedy=True, generate_kwargs=generate_kwargs)
    else:
        seeds = [row_seed(seed, s.task.name, x.id, i) for s, x, i in chunk]
        rollout = sample(model, processor, inputs, gen, eos, seeds=seeds, generate_kwargs=generate_kwargs)
    rows = []
    for (s, x, i), text, size in zip(chunk, rollout.texts, sizes):
        parsed, error = safe_parse(s.task, text, s.params, replace(x, input_size=size) if size else x)
        rows.append(
            {
                "task": s.task.name,
                "id": x.id,
                "sample": i,
                "sampling": mode,
                "max_new_tokens": gen.max_completion_length,
                "completion": text,
                "parsed": parsed,
                "input_size": list(size) if size else None,
                "error": error,
            }
        )
    return rows


def _split_metrics(
    split: EvalSplit,
    done: dict[_Key, dict[str, Any]],
    num_samples: int,
    mode: dict[str, float] | None,
    max_new_tokens: int,
    ks: Sequence[int],
) -> dict[str, float]:
    """The task's metric for each sample index, averaged; pass@k; parse counts (over all completions)."""
    task, name = split.task, split.task.name
    per_index: list[dict[str, float]] = []
    predictions: list[Any] = []
    samples: list[Sample] = []
    errors: list[str] = []
    for i in range(num_samples):
        rows = [done[_key(name, x.id, i, mode, max_new_tokens)] for x in split.samples]
        index_samples = [
            replace(x, input_size=tuple(r["input_size"])) if r.get("input_size") else x
            for x, r in zip(split.samples, rows)
        ]
        index_predictions = [r["parsed"] for r in rows]
        errors += [r["error"] for r in rows if r.get("error")]
        per_index.append(_safe_metric(task, index_predictions, index_samples, split.params))
        predictions += index_predictions
        samples += index_samples
    if errors:  # never silent: the parser raised on some completions (they count as unparsed)
        log.warning(
            "eval %s: the parser raised on %d of %d completions, e.g. %s",
            name,
            len(errors),
            len(predictions),
            errors[0],
        )
    keys = list(dict.fromkeys(k for m in per_index for k in m))  # a failed index lacks keys: they read NaN
    result = {key: sum(float(m.get(key, float("nan"))) for m in per_index) / num_samples for key in keys}
    if ks:
        try:
            with plugin_output():
                correct = task.correct(predictions, samples, split.params)
        except Exception as exc:  # noqa: BLE001 - plugin code: reported, pass@k reads 0
            log.warning("eval %s: correct() raised %s: %s; pass@k reads 0", name, type(exc).__name__, exc)
            correct = [False] * len(predictions)
        n_records = len(split.samples)
        counts = [sum(bool(correct[i * n_records + r]) for i in range(num_samples)) for r in range(n_records)]
        for k in ks:
            result[f"pass@{k}"] = sum(pass_at_k(num_samples, c, k) for c in counts) / max(1, n_records)
    unparsed = sum(p is None for p in predictions)
    result["parse_rate"] = (len(predictions) - unparsed) / max(1, len(predictions))
    result["unparsed"] = float(unparsed)
    result["n"] = float(len(split.samples))
    return result


def _safe_metric(
    task: Task, predictions: list[Any], samples: list[Sample], params: TaskParams
) -> dict[str, float]:
    """The task's metric over a split; a metric that raises or gives a non-finite value is reported (with the
    exception) and reads NaN, so the other tasks' evaluation goes on."""
    try:
        with plugin_output():
            values = {str(k): float(v) for k, v in dict(task.metric(predictions, samples, params)).items()}
    except Exception as exc:  # noqa: BLE001 - plugin code: reported, never fatal
        log.warning(
            "eval %s: the metric raised %s: %s; its values read NaN", task.name, type(exc).__name__, exc
        )
        return {m: float("nan") for m in task.metric_names}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        log.warning(
            "eval %s: the metric gave non-finite %s", task.name, ", ".join(f"{k}={values[k]}" for k in bad)
        )
    return values


def _check_images(task: str, samples: Iterable[Sample]) -> None:
    """:class:`DataError` naming the record when an image is missing, does not open, or is one that training
    would skip (too large to decode, too thin) — before any generation, so evaluation never stops halfway (during
    training, on one process)."""
    from vgrpo.data import probe_image

    for x in samples:
        for path in x.images:
            if not Path(path).is_file():
                raise DataError(f"task {task}, record {x.id!r}: image not found: {path}", field="image")
            _, error = probe_image(path)
            if error is not None:
                raise DataError(f"task {task}, record {x.id!r}: {error}", field="image")


def unique_samples(split: EvalSplit) -> list[Sample]:
    """The split's samples with unique ids (duplicates would be skipped on resume)."""
    seen: set[str] = set()
    for x in split.samples:
        if x.id in seen:
            raise DataError(f"task {split.task.name}: id {x.id!r} appears twice; ids must be unique (resume)")
        seen.add(x.id)
    return split.samples
