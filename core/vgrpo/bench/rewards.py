"""Reward throughput: completions scored per second (parse + every reward), per task, on one core.

Completions are realistic: a paragraph of thinking followed by an answer in the task's format, a mix of
right, near and wrong answers, in groups of G completions sharing one sample as in GRPO.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from rich.console import Console
from rich.table import Table

from vgrpo.plugins import load_plugins
from vgrpo.scoring import score
from vgrpo.task import Sample

#: Completions per second the built-in tasks must reach on one core of the 2-core development machine.
TARGETS = {"rec": 20_000, "count": 20_000, "ovd": 1_000, "math": 500}
GROUP = 8
WORDS = (
    "the image shows a red circle near the top left corner and two blue squares below it so I need to look "
    "carefully at each object count them and compare their positions before I answer the question about "
    "which one matches the description given in the prompt while ignoring the background texture"
).split()
LABELS = ("cat", "dog", "person", "car", "traffic light")


def thinking(rng: random.Random, words: int = 100) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _box(rng: random.Random, w: float = 640, h: float = 480) -> list[float]:
    x1, y1 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
    return [
        round(x1),
        round(y1),
        round(min(w, x1 + rng.uniform(10, w * 0.3))),
        round(min(h, y1 + rng.uniform(10, h * 0.3))),
    ]


def _jitter(rng: random.Random, box: list[float], px: float = 12) -> list[float]:
    out = [round(v + rng.uniform(-px, px)) for v in box]
    if out[2] <= out[0]:
        out[2] = out[0] + 1
    if out[3] <= out[1]:
        out[3] = out[1] + 1
    return out


def _rec(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    gt = _box(rng)
    record = {"solution": gt, "image_size": [640, 480]}
    outs = []
    for _ in range(GROUP):
        pred = _jitter(rng, gt) if rng.random() < 0.7 else _box(rng)
        style = rng.random()
        if style < 0.5:
            answer = json.dumps({"bbox_2d": pred, "label": "the red circle"})
        elif style < 0.8:
            answer = "```json\n" + json.dumps([{"bbox_2d": pred, "label": "the red circle"}]) + "\n```"
        else:
            answer = str(pred)
        outs.append(f"<think>{thinking(rng)}</think>\n<answer>{answer}</answer>")
    return record, outs


def _ovd(rng: random.Random, n_gt: int = 10, n_pred: int = 10) -> tuple[dict[str, Any], list[str]]:
    gt = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS[:3])} for _ in range(n_gt)]
    outs = []
    for _ in range(GROUP):
        preds = []
        for i in range(n_pred):
            if i < len(gt) and rng.random() < 0.8:
                label = gt[i]["label"] if rng.random() < 0.9 else rng.choice(LABELS)
                preds.append({"bbox_2d": _jitter(rng, gt[i]["bbox_2d"]), "label": label})
            else:
                preds.append({"bbox_2d": _box(rng), "label": rng.choice(LABELS)})
        rng.shuffle(preds)
        answer = "```json\n" + json.dumps(preds) + "\n```"
        outs.append(f"<think>{thinking(rng)}</think>\n<answer>{answer}</answer>")
    return {"solution": gt, "image_size": [640, 480]}, outs


def _count(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    n = rng.randint(0, 15)
    outs = []
    for _ in range(GROUP):
        guess = n if rng.random() < 0.6 else max(0, n + rng.choice([-2, -1, 1, 2]))
        answer = str(guess) if rng.random() < 0.7 else f"There are {guess} objects."
        outs.append(
            f"<think>{thinking(rng)} I count {rng.randint(0, 20)} so far.</think>\n<answer>{answer}</answer>"
        )
    return {"solution": n}, outs


def _math(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    gold = a * b if rng.random() < 0.5 else a + b
    outs = []
    for _ in range(GROUP):
        guess = gold if rng.random() < 0.6 else gold + rng.choice([-10, -1, 1, 2])
        answer = f"\\boxed{{{guess}}}" if rng.random() < 0.8 else f"The result is {guess}"
        outs.append(f"<think>{thinking(rng)} So {a} and {b} give {guess}.</think>\n<answer>{answer}</answer>")
    return {"solution": str(gold)}, outs


GENERATORS: dict[str, Callable[[random.Random], tuple[dict[str, Any], list[str]]]] = {
    "rec": _rec,
    "ovd": _ovd,
    "count": _count,
    "math": _math,
}


def make_batch(task_name: str, n: int, seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    """``n`` realistic completions (in groups of :data:`GROUP`) and their records for a built-in task."""
    rng = random.Random(seed)
    completions, records = [], []
    while len(completions) < n:
        record, outs = GENERATORS[task_name](rng)
        completions += outs
        records += [record] * len(outs)
    return completions[:n], records[:n]


def measure(task_name: str, n: int, min_seconds: float, seed: int = 0) -> dict[str, Any]:
    """Throughput of ``vgrpo.score`` for one task over passes of ``n`` completions.

    Every pass scores a freshly generated batch (a new seed), so no cache inside a plugin (parsed ground
    truths, memoised APs) carries over from one timed pass to the next.
    """
    from vgrpo.data import sample_from_record

    task = load_plugins().task(task_name)

    def batch(s: int) -> tuple[list[str], list[Sample]]:
        completions, records = make_batch(task_name, n, s)
        return completions, [sample_from_record({**r, "id": str(i)}, task) for i, r in enumerate(records)]

    warm_c, warm_s = batch(seed + 10_000)
    score(task, warm_c[:GROUP], warm_s[:GROUP])  # warm-up (imports, worker start-up)
    rates, total, passes = [], 0.0, 0
    while total < min_seconds or passes < 3:
        completions, samples = batch(seed + passes)
        start = time.perf_counter()
        results = score(task, completions, samples)
        elapsed = time.perf_counter() - start
        rates.append(n / elapsed)
        total += elapsed
        passes += 1
    mean_reward = sum(r.reward for r in results) / len(results)
    failures = sum(bool(r.errors) for r in results)
    best = max(rates)
    target = TARGETS.get(task_name)
    return {
        "task": task_name,
        "completions": n,
        "passes": passes,
        "per_second": round(best, 1),
        "median_per_second": round(sorted(rates)[len(rates) // 2], 1),
        "target": target,
        "meets_target": None if target is None else best >= target,
        "mean_reward": round(mean_reward, 4),
        "items_with_failures": failures,
    }


def pin_one_core() -> str:
    """Restrict this process (and children it starts) to one CPU core, so the figure is per core."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def run(args: argparse.Namespace) -> int:
    pinned = pin_one_core()
    rows = [measure(t, args.n, args.seconds) for t in args.tasks.split(",")]
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": date.today().isoformat(),
        "cpu": pinned,
    }
    if args.json:
        print(json.dumps({"benchmark": "rewards", **meta, "results": rows}, indent=2))
        return 0
    table = Table(title=f"reward throughput, one core ({pinned}, {meta['date']})", title_justify="left")
    for col in ("task", "completions/s (best)", "median", "target", "meets", "mean reward", "failures"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for r in rows:
        meets = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "[red]NO[/red]")
        table.add_row(
            r["task"],
            f"{r['per_second']:,.0f}",
            f"{r['median_per_second']:,.0f}",
            f"{r['target']:,}" if r["target"] else "",
            meets,
            f"{r['mean_reward']:.3f}",
            str(r["items_with_failures"]),
        )
    Console().print(table)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="rec,ovd,count,math", help="comma-separated built-in tasks")
    parser.add_argument("-n", type=int, default=1024, help="completions per batch (default 1024)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="minimum timed seconds per task (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)
