"""``vgrpo data synth|check|convert``: synthetic datasets, checking a JSONL file, importing VLM-R1 data."""

from __future__ import annotations

import argparse
import json

from rich.table import Table
from rich.text import Text

from vgrpo.cli._common import cells, console, json_arg, out, registry_of
from vgrpo.errors import ParamsError


def cmd_data(args: argparse.Namespace) -> int:
    if args.action == "synth":
        return _data_synth(args)
    if args.action == "convert":
        return _data_convert(args)
    return _data_check(args)


def _data_synth(args: argparse.Namespace) -> int:
    from vgrpo.synth import synthesize

    if not args.path:
        raise ParamsError("data synth: expected an output folder, e.g. `vgrpo data synth data/tiny`")
    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    paths = synthesize(
        args.path,
        n_per_task=args.n,
        tasks=tasks,
        seed=args.seed,
        image_size=args.image_size,
        registry=registry_of(args),
    )
    table = Table(title=f"synthetic dataset in {args.path}", title_justify="left")
    for col in ("task", "file", "records"):
        table.add_column(col)
    for task, path in paths.items():
        for split in sorted(path.parent.glob("*.jsonl")):
            n = sum(1 for line in split.open(encoding="utf-8") if line.strip())
            table.add_row(*cells(task, str(split), str(n)))
    console().print(table)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from vgrpo.data import check_jsonl

    if not args.task or not args.path:
        raise ParamsError(
            "data check: expected --task TASK and a JSONL file, e.g. `vgrpo data check --task TASK d.jsonl`"
        )
    task = registry_of(args).task(args.task)
    params = task.params(json_arg(args.params, "--params"))  # a bad --params is reported with its key
    with Progress(console=console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"checking {args.path}", total=None)
        problems = check_jsonl(
            args.path,
            task,
            image_root=args.image_root,
            decode=True,
            params=params,
            on_line=lambda _: progress.advance(bar),
        )
    if args.json:
        rows = [{"file": p.file, "line": p.line, "field": p.field, "problem": p.reason} for p in problems]
        print(json.dumps({"file": args.path, "task": args.task, "problems": rows}, indent=2), file=out())
        return 1 if problems else 0
    con = console()
    if not problems:
        con.print(Text(f"{args.path}: no problems for task {args.task}", style="green"))
        return 0
    table = Table(title=f"{len(problems)} problem(s) in {args.path} (task {args.task})", title_justify="left")
    for col in ("line", "field", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(*cells(str(p.line or ""), p.field or "", p.reason))
    con.print(table)
    return 1


def _data_convert(args: argparse.Namespace) -> int:
    from vgrpo.convert import convert_file

    if not (args.source and args.path and args.output):
        raise ParamsError(
            "data convert: expected --from FORMAT, a file and -o OUT.jsonl, e.g. `vgrpo data convert --from "
            "vlm-r1 train.jsonl --image-root coco -o out.jsonl`"
        )
    report = convert_file(
        args.path,
        args.output,
        source_format=args.source,
        task=args.task,
        image_root=args.image_root,
        registry=registry_of(args),
    )
    if args.json:
        doc = {
            "file": args.path,
            "output": args.output,
            "task": report.task,
            "unit": report.unit,
            "records": report.records,
            "converted": report.converted,
            "problems": [{"line": p.line, "field": p.field, "problem": p.reason} for p in report.problems],
        }
        print(json.dumps(doc, indent=2), file=out())
        return 1 if report.failed else 0
    con = console(stderr=True)
    if report.problems:
        title = f"{report.failed} {report.unit}(s) of {args.path} not converted"
        table = Table(title=title, title_justify="left")
        for col in (report.unit, "field", "problem"):
            table.add_column(col, overflow="fold")
        for p in report.problems:
            table.add_row(*cells(str(p.line or ""), p.field or "", p.reason))
        con.print(table)
    done = f"converted {report.converted} of {report.records} {report.unit}s of {args.path}"
    style = "yellow" if report.failed else "green"
    con.print(Text(f"{done} (task {report.task}) to {args.output}", style=style))
    return 1 if report.failed else 0
