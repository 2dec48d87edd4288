"""``vgrpo score``: completions (JSONL) scored with a task's parser and rewards, one output row per line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from rich import box
from rich.table import Table

from vgrpo.cli._common import cells, console, dumps, json_arg, out, registry_of
from vgrpo.errors import DataError

SCORE_CHUNK = 256
"""Lines scored per call: rewards run on whole batches, and output flows while stdin is still being read."""


def _read_cases(stream: IO[str]) -> Iterator[tuple[int, str]]:
    for lineno, line in enumerate(stream, start=1):
        if line.strip():
            yield lineno, line


def _chunks(items: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_lines(
    task: Any,
    lines: Sequence[tuple[int, str]],
    params: Any,
    weights: Any,
    plugin_rewards: Any,
    pool: Any = None,
) -> list[dict[str, Any]]:
    """Score ``vgrpo score`` input lines; a bad line gives an error row, never an exception. With a
    :class:`~vgrpo.reward_pool.RewardPool` the rewards run in its worker, under its time limit (a hanging or
    crashing reward gives error rows, as in training)."""
    from vgrpo.data import sample_from_record
    from vgrpo.scoring import resolve_weights, score

    rows: list[dict[str, Any] | None] = [None] * len(lines)
    good: list[int] = []
    completions, samples = [], []
    for i, (lineno, line) in enumerate(lines):
        try:
            case = json.loads(line)
            if not isinstance(case, dict):
                raise DataError(f"expected a JSON object, got {type(case).__name__}")
            completion = case.get("completion")
            if not isinstance(completion, str):
                raise DataError(f"expected a string, got {type(completion).__name__}", field="completion")
            record = {k: v for k, v in case.items() if k != "completion"}
            record.setdefault("id", str(lineno))
            sample = sample_from_record(record, task)
        except json.JSONDecodeError as exc:
            rows[i] = _error_row(f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except DataError as exc:
            rows[i] = _error_row(f"line {lineno}: {exc}")
            continue
        except RecursionError:
            rows[i] = _error_row(f"line {lineno}: invalid input (nested too deeply)")
            continue
        except Exception as exc:  # noqa: BLE001 - a bad line yields an error row, never an aborted run
            rows[i] = _error_row(f"line {lineno}: invalid input ({type(exc).__name__}: {exc})")
            continue
        good.append(i)
        completions.append(completion)
        samples.append(sample)
    if good and pool is not None:
        weighed = weights if weights is not None else resolve_weights(task, None, plugin_rewards)
        scores = pool.score(task, completions, samples, params, weighed, plugin_rewards=plugin_rewards)
    else:
        scores = (
            score(task, completions, samples, params, weights, plugin_rewards=plugin_rewards) if good else []
        )
    for i, s in zip(good, scores):
        rows[i] = {
            "parsed": s.parsed,
            "rewards": s.rewards,
            "reward": s.reward,
            "error": f"line {lines[i][0]}: " + "; ".join(s.errors) if s.errors else None,
        }
    return [r for r in rows if r is not None]


def _error_row(message: str) -> dict[str, Any]:
    return {"parsed": None, "rewards": {}, "reward": None, "error": message}


def cmd_score(args: argparse.Namespace) -> int:
    from vgrpo.scoring import resolve_weights

    registry = registry_of(args)
    task = registry.task(args.task)
    params = task.params(json_arg(args.params, "--params"))
    weights = json_arg(args.weights, "--weights")
    if weights is not None:  # fail early on a bad --weights (numbers, or {weight, params} per reward)
        weights = resolve_weights(task, weights, registry.rewards, key="--weights")
    try:
        if args.file and args.file != "-":
            stream = open(args.file, encoding="utf-8", errors="replace")  # noqa: SIM115
        elif hasattr(sys.stdin, "buffer"):  # undecodable bytes become U+FFFD instead of aborting the run
            stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        else:
            stream = sys.stdin
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", file=args.file) from None
    table_rows: list[dict[str, Any]] = []
    from vgrpo.reward_pool import RewardPool

    pool = RewardPool(args.workers, args.timeout_s) if args.workers > 0 else None
    with stream, contextlib.closing(pool) if pool is not None else contextlib.nullcontext():
        for chunk in _chunks(_read_cases(stream), SCORE_CHUNK):
            rows = score_lines(task, chunk, params, weights, registry.rewards, pool)
            if args.format == "table":
                table_rows += rows
            else:
                out().write("".join(dumps(r) + "\n" for r in rows))
                out().flush()
    if args.format == "table":
        _print_scores(task, table_rows, args.file or "stdin")
    return 0


def _short(value: Any, width: int = 48) -> str:
    text = dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_scores(task: Any, rows: list[dict[str, Any]], source: str) -> None:
    names = [r.name for r in task.rewards]
    errors = any(r["error"] for r in rows)
    table = Table(title=f"{task.name}: {source}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("parsed", no_wrap=True, overflow="ellipsis", max_width=24)
    for n in names:
        table.add_column(n, justify="right", no_wrap=True, min_width=5)
    table.add_column("reward", justify="right", style="bold", no_wrap=True, min_width=5)
    if errors:
        table.add_column("error", overflow="fold", style="red")
    for i, r in enumerate(rows, start=1):
        values = [f"{r['rewards'][n]:.3f}" if n in r["rewards"] else "" for n in names]
        total = "" if r["reward"] is None else f"{r['reward']:.3f}"
        error = [r["error"] or ""] if errors else []
        table.add_row(*cells(str(i), _short(r["parsed"]), *values, total, *error))
    con = console()
    con.width = max(con.width, 110)  # one row per completion beats a squeezed table in an 80-column log
    con.print(table)
