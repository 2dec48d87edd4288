"""``python -m vgrpo.bench step --sweep``: the shared prefix against the repeated path over a grid of group sizes
G and image sizes N (visual tokens per image), each cell one pair of child processes of the step benchmark; the
measured speedups beside the expected saving of token positions, (P + C)·G / (P + G·C)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The grid of the issue: G ∈ {4, 8, 16} × N ∈ {64, 256, 1024}.
GROUPS, IMAGE_TOKENS = (4, 8, 16), (64, 256, 1024)


def _parse(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def sweep_rows(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """One row per (G, N): step, training-pass and generation times of both paths, the speedups, peak memory."""
    from vgrpo.bench.step import _run_child, expected_saving, prepare, shared_speedups

    with contextlib.redirect_stdout(sys.stderr):
        prepare(workdir, args.seed, args.task)  # once: every cell loads the same weights and records
    rows = []
    for g in _parse(args.sweep_groups):
        for n in _parse(args.sweep_image_tokens):
            cell = copy.copy(args)
            cell.num_generations, cell.image_tokens = g, n
            results = [_run_child(impl, workdir, cell) for impl in ("vgrpo", "vgrpo-repeated")]
            row: dict[str, Any] = {"num_generations": g, "image_tokens": n}
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                rows.append({**row, "error": errors[0]})
                continue
            shared, repeated = results
            row.update(
                prompt_tokens=shared["prompt_tokens"],
                expected=expected_saving(shared["prompt_tokens"], args.max_new_tokens, g),
                shared=shared,
                repeated=repeated,
                speedups=shared_speedups(results),
            )
            rows.append(row)
            log.info("sweep cell %s", json.dumps(row))
    return rows


def print_sweep(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"shared prefix vs repeated prompts, one GRPO step on CPU: task {args.task}, {args.prompts} prompts, "
        f"C = {args.max_new_tokens} new tokens (fixed); {platform.machine()} {os.cpu_count()} cores, "
        f"{date.today().isoformat()}"
    )
    table = Table(title=title, title_justify="left")
    cols = ("G", "N", "P", "expected", "step s shared", "step s repeated", "step x", "train s shared")
    cols += ("train s repeated", "train x", "generate x", "peak MiB shared", "peak MiB repeated")
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(str(r["num_generations"]), str(r["image_tokens"]), f"[red]{r['error']}[/red]")
            continue
        sh, rp, sp = r["shared"], r["repeated"], r["speedups"]
        table.add_row(
            str(r["num_generations"]),
            str(r["image_tokens"]),
            f"{r['prompt_tokens']:.0f}",
            f"{r['expected']:.2f}x",
            f"{sh['step_s']:.2f}",
            f"{rp['step_s']:.2f}",
            f"{sp['step_s']:.2f}x",
            f"{sh['train_s']:.2f}",
            f"{rp['train_s']:.2f}",
            f"{sp.get('train_s', 0):.2f}x",
            f"{sp.get('generate_s', 0):.2f}x",
            f"{sh['peak_rss_mib']:,.0f}",
            f"{rp['peak_rss_mib']:,.0f}",
        )
    Console(width=max(Console().width, 160)).print(table)


def run_sweep(args: argparse.Namespace, workdir: Path) -> int:
    if not logging.getLogger().handlers:  # the cells as they finish, so a long sweep shows its progress
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    rows = sweep_rows(args, workdir)
    if args.json:
        print(
            json.dumps(
                {"benchmark": "step --sweep", "date": date.today().isoformat(), "rows": rows}, indent=2
            )
        )
    else:
        print_sweep(rows, args)
    return 0 if all("error" not in r for r in rows) else 1
