"""The ``vgrpo`` command line: rich tables for people, ``--json`` for programs.

Exit status: 0 on success, 1 when the command failed, 2 for a usage or input error (unknown task, bad
``--params``); the message says what was expected and where.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vgrpo import __version__
from vgrpo.errors import DataError, ParamsError, VgrpoError
from vgrpo.plugins import PluginRegistry, load_plugins

if TYPE_CHECKING:
    from vgrpo.config import TrainConfig

log = logging.getLogger("vgrpo.cli")
SCORE_CHUNK = 256


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, soft_wrap=False)


def _registry(args: argparse.Namespace, *, quiet: bool = False) -> PluginRegistry:
    level = logging.getLogger("vgrpo.plugins").level
    if quiet:  # the command shows plugin problems itself
        logging.getLogger("vgrpo.plugins").setLevel(logging.ERROR)
    try:
        return load_plugins(strict=True if args.strict_plugins else None)
    finally:
        logging.getLogger("vgrpo.plugins").setLevel(level)


def _cells(*values: str) -> list[Text]:
    """Table cells as plain text: plugin and user strings are never parsed as rich markup."""
    return [Text(v) for v in values]


def _json_arg(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{flag}: expected a JSON object, got invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ParamsError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(obj, ensure_ascii=False, default=repr)


# -- vgrpo plugins ------------------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args, quiet=True)
    if args.json:
        print(json.dumps(registry.to_json(), indent=2))
        return 0
    con = _console()
    table = Table(title="vgrpo plugins", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("plugin", "distribution", "version"):  # never cut: a bug report needs them whole
        table.add_column(col, no_wrap=True, overflow="fold")
    table.add_column("provides", overflow="fold")  # one name a line
    for p in registry.plugins:
        provides = [f"task {n}" for n in p.tasks] + [f"reward {n}" for n in p.rewards]
        provides += [f"model adapter {n}" for n in p.model_adapters]
        table.add_row(*_cells(p.name, p.distribution, p.version, "\n".join(provides)))
    con.print(table)
    if registry.disabled:
        con.print(Text(f"disabled: {', '.join(registry.disabled)}"))
    if registry.errors:
        errors = Table(title="plugin problems", title_justify="left", style="red")
        for col in ("entry point", "distribution", "version", "error"):
            errors.add_column(col, overflow="fold")
        for e in registry.errors:
            errors.add_row(*_cells(e.entry_point, e.distribution, e.version, e.error))
        con.print(errors)
    return 0


# -- vgrpo tasks ---------------------------------------------------------------------------------------------
def task_info(registry: PluginRegistry, name: str) -> dict[str, Any]:
    """Everything ``vgrpo tasks show`` tells about a task, as JSON-ready data."""
    task = registry.task(name)
    dist, version = registry.owner("task", name)
    schema = task.Params.model_json_schema()
    params = [
        {
            "name": key,
            "type": _type_name(schema["properties"].get(key, {})),
            "default": field.default,
            "description": field.description or "",
        }
        for key, field in task.Params.model_fields.items()
    ]
    return {
        "name": task.name,
        "version": task.version,
        "distribution": dist,
        "distribution_version": version,
        "description": task.description,
        "template": {"system": task.template.system, "user": task.template.user},
        "params": params,
        "params_schema": schema,
        "rewards": [
            {
                "name": r.name,
                "range": list(r.range),
                "default_weight": float(task.default_weights.get(r.name, 0.0)),
                "description": r.description,
            }
            for r in task.rewards
        ],
        "metric": list(task.metric_names),
        "example": dict(task.example),
        "example_prompt": example_prompt(task),
        "example_completion": task.example_completion,
    }


def example_prompt(task: Any) -> str:
    """The user-message text the task builds for its example record with default params."""
    from vgrpo.data import sample_from_record

    sample = sample_from_record(task.example, task, default_id="example")
    user = [m for m in task.build_prompt(sample, task.params()) if m.get("role") == "user"][-1]
    return "\n".join(part["text"] for part in user["content"] if part.get("type") == "text")


def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type_name(p) for p in prop["anyOf"])
    if "const" in prop:
        return json.dumps(prop["const"])
    return str(prop.get("type", "any"))


def cmd_tasks(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.action == "show":
        if not args.name:
            raise ParamsError("tasks show: expected a task name, e.g. `vgrpo tasks show rec`")
        info = task_info(registry, args.name)
        if args.json:
            print(json.dumps(info, indent=2, default=repr))
            return 0
        _print_task(info)
        return 0
    if args.action is not None:
        raise ParamsError(f"tasks: unknown action {args.action!r}; expected `vgrpo tasks` or `vgrpo tasks show NAME`")
    rows = [task_info(registry, name) for name in registry.tasks]
    if args.json:
        print(json.dumps({"tasks": rows}, indent=2, default=repr))
        return 0
    table = Table(title="vgrpo tasks", title_justify="left")
    for col in ("task", "version", "distribution", "rewards", "metric", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            *_cells(r["name"], r["version"], r["distribution"], ", ".join(x["name"] for x in r["rewards"]),
                    ", ".join(r["metric"]), r["description"])
        )  # fmt: skip
    _console().print(table)
    return 0


def _print_task(info: dict[str, Any]) -> None:
    con = _console()
    con.print(Text.assemble((info["name"], "bold"), f" {info['version']} ({info['distribution']}) — {info['description']}"))
    con.print("\n[bold]template[/bold]")
    if info["template"]["system"]:
        con.print(f"  system: {info['template']['system']}", markup=False)
    con.print(f"  user: {info['template']['user']}", markup=False)
    con.print(Text.assemble(("prompt for the example record: ", "bold"), info["example_prompt"]))
    params = Table(title="params", title_justify="left")
    for col in ("name", "type", "default", "description"):
        params.add_column(col, overflow="fold")
    for p in info["params"]:
        params.add_row(*_cells(p["name"], p["type"], json.dumps(p["default"]), p["description"]))
    con.print(params)
    rewards = Table(title="rewards", title_justify="left")
    for col in ("name", "range", "default weight", "description"):
        rewards.add_column(col, overflow="fold")
    for r in info["rewards"]:
        rewards.add_row(
            *_cells(r["name"], f"[{r['range'][0]:g}, {r['range'][1]:g}]", f"{r['default_weight']:g}", r["description"])
        )
    con.print(rewards)
    con.print(Text.assemble(("metric", "bold"), f": {', '.join(info['metric'])}"))
    con.print(Text.assemble(("example record: ", "bold"), _dumps(info["example"])))
    con.print(Text.assemble(("example completion: ", "bold"), info["example_completion"]))


# -- vgrpo score ---------------------------------------------------------------------------------------------
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
    task: Any, lines: Sequence[tuple[int, str]], params: Any, weights: Any, plugin_rewards: Any
) -> list[dict[str, Any]]:
    """Score ``vgrpo score`` input lines; a bad line gives an error row, never an exception."""
    from vgrpo.data import sample_from_record
    from vgrpo.scoring import score

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
    if good:
        scores = score(task, completions, samples, params, weights, plugin_rewards=plugin_rewards)
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

    registry = _registry(args)
    task = registry.task(args.task)
    params = task.params(_json_arg(args.params, "--params"))
    weights = _json_arg(args.weights, "--weights")
    resolve_weights(task, weights, registry.rewards)  # fail early on a bad --weights
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
    with stream:
        for chunk in _chunks(_read_cases(stream), SCORE_CHUNK):
            rows = score_lines(task, chunk, params, weights, registry.rewards)
            if args.format == "table":
                table_rows += rows
            else:
                sys.stdout.write("".join(_dumps(r) + "\n" for r in rows))
                sys.stdout.flush()
    if args.format == "table":
        _print_scores(task, table_rows, args.file or "stdin")
    return 0


def _short(value: Any, width: int = 48) -> str:
    text = _dumps(value)
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
        table.add_row(*_cells(str(i), _short(r["parsed"]), *values, total, *([r["error"] or ""] if errors else [])))
    con = _console()
    con.width = max(con.width, 110)  # one row per completion beats a squeezed table in an 80-column log
    con.print(table)


# -- vgrpo env -----------------------------------------------------------------------------------------------
def cmd_env(args: argparse.Namespace) -> int:
    from vgrpo.env import collect_env, format_env

    info = collect_env(_registry(args, quiet=True))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    sys.stdout.write(format_env(info))  # plain Markdown, so it pastes into an issue as it is
    return 0


# -- vgrpo data ------------------------------------------------------------------------------------------------
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
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    paths = synthesize(args.path, n_per_task=args.n, tasks=tasks, seed=args.seed, image_size=args.image_size)
    table = Table(title=f"synthetic dataset in {args.path}", title_justify="left")
    for col in ("task", "file", "records"):
        table.add_column(col)
    for task, path in paths.items():
        for split in sorted(path.parent.glob("*.jsonl")):
            n = sum(1 for line in split.open(encoding="utf-8") if line.strip())
            table.add_row(*_cells(task, str(split), str(n)))
    _console().print(table)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from vgrpo.data import check_jsonl

    if not args.task or not args.path:
        raise ParamsError("data check: expected --task TASK and a JSONL file, e.g. `vgrpo data check --task rec d.jsonl`")
    task = _registry(args).task(args.task)
    with Progress(console=_console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"checking {args.path}", total=None)
        problems = check_jsonl(args.path, task, image_root=args.image_root, decode=True,
                               on_line=lambda _: progress.advance(bar))  # fmt: skip
    if args.json:
        rows = [{"file": p.file, "line": p.line, "field": p.field, "problem": p.reason} for p in problems]
        print(json.dumps({"file": args.path, "task": args.task, "problems": rows}, indent=2))
        return 1 if problems else 0
    con = _console()
    if not problems:
        con.print(Text(f"{args.path}: no problems for task {args.task}", style="green"))
        return 0
    table = Table(title=f"{len(problems)} problem(s) in {args.path} (task {args.task})", title_justify="left")
    for col in ("line", "field", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(*_cells(str(p.line or ""), p.field or "", p.reason))
    con.print(table)
    return 1


def _data_convert(args: argparse.Namespace) -> int:
    from vgrpo.convert import convert_file

    if not (args.source and args.path and args.output):
        raise ParamsError("data convert: expected --from FORMAT, a file and -o OUT.jsonl, e.g. `vgrpo data "
                          "convert --from vlm-r1 train.jsonl --image-root coco -o rec.jsonl`")  # fmt: skip
    report = convert_file(args.path, args.output, source_format=args.source, task=args.task,
                          image_root=args.image_root, registry=_registry(args))  # fmt: skip
    if args.json:
        rows = [{"line": p.line, "field": p.field, "problem": p.reason} for p in report.problems]
        doc = {"file": args.path, "output": args.output, "task": report.task, "unit": report.unit,
               "records": report.records, "converted": report.converted, "problems": rows}  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 1 if report.failed else 0
    con = _console(stderr=True)
    if report.problems:
        title = f"{report.failed} {report.unit}(s) of {args.path} not converted"
        table = Table(title=title, title_justify="left")
        for col in (report.unit, "field", "problem"):
            table.add_column(col, overflow="fold")
        for p in report.problems:
            table.add_row(*_cells(str(p.line or ""), p.field or "", p.reason))
        con.print(table)
    con.print(Text(f"converted {report.converted} of {report.records} {report.unit}s of {args.path} "
                   f"(task {report.task}) to {args.output}", style="yellow" if report.failed else "green"))
    return 1 if report.failed else 0


# -- vgrpo eval ------------------------------------------------------------------------------------------------
#: The eval section's fields that `vgrpo eval` options set.
EVAL_FLAGS = {"--samples": "num_samples", "--k": "pass_k", "--temperature": "temperature",
              "--batch-size": "batch_size", "--max-new-tokens": "max_new_tokens"}  # fmt: skip


def _with_eval_flags(config: TrainConfig, flags: dict[str, Any]) -> TrainConfig:
    """``config`` with the eval options given on the command line (``None``: not given); a bad value is
    reported under its option's name with what is allowed, e.g. ``--samples: must be >= 1, got 0``."""
    from pydantic import ValidationError

    from vgrpo.config import EvalConfig

    given = {EVAL_FLAGS[flag]: value for flag, value in flags.items() if value is not None}
    try:
        section = EvalConfig.model_validate({**config.eval.model_dump(), **given})
    except ValidationError as exc:
        names = {field: flag for flag, field in EVAL_FLAGS.items() if field in given}
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            name = names.get(field, f"eval.{field}")
            problems.append(f"{name}: {_allowed(err)}")
        raise ParamsError("; ".join(problems)) from None
    return config.model_copy(update={"eval": section})


def _allowed(err: Any) -> str:
    """One pydantic error as what is allowed and what was given."""
    ctx, got = err.get("ctx") or {}, err.get("input")
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
              "less_than": ("<", "lt")}  # fmt: skip
    if err["type"] in bounds:
        op, key = bounds[err["type"]]
        return f"must be {op} {ctx[key]}, got {got!r}"
    if err["type"] == "value_error":  # our validators' messages say what they got
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def cmd_eval(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vgrpo.config import load_config
    from vgrpo.data import load_jsonl
    from vgrpo.evaluate import COUNT_KEYS, METRICS, EvalSplit, build_eval_splits, eval_settings, evaluate
    from vgrpo.models.adapters import TINY, select_adapter
    from vgrpo.trainer import latest_checkpoint

    registry = _registry(args)
    flags = {"--samples": args.samples, "--k": args.k, "--temperature": args.temperature}
    if args.config is not None:
        config = _with_eval_flags(load_config(args.config, args.overrides), flags)
        out = Path(config.output_dir)
        checkpoint = latest_checkpoint(out) if out.exists() else None
        model_path = str(checkpoint or config.model.name_or_path)
        splits = build_eval_splits(config, registry)
        eval_dir = out / "eval"
    else:
        if not (args.model and args.task and args.data):
            raise ParamsError("eval: expected CONFIG, or --model PATH --task TASK --data FILE")
        flags |= {"--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens}
        config = _with_eval_flags(load_config(None), flags)
        task = registry.task(args.task)
        samples = load_jsonl(args.data, task, image_root=args.image_root)
        splits = [EvalSplit(task, task.params(_json_arg(args.params, "--params")), samples)]
        model_path, eval_dir = args.model, Path(args.output_dir)
    if model_path == TINY:
        model_type = "qwen2_5_vl"
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(model_path).model_type
        except (OSError, ValueError) as exc:
            raise ParamsError(f"eval: cannot load the model config from {model_path!r}: {exc}") from None
    mcfg = config.model
    adapter = select_adapter(registry.model_adapters, mcfg.adapter, model_type)
    model, processor = adapter.load(model_path, dtype=getattr(torch, mcfg.dtype),
                                    attn_implementation=mcfg.attn_implementation, min_pixels=mcfg.min_pixels,
                                    max_pixels=mcfg.max_pixels, seed=config.seed)  # fmt: skip
    if torch.cuda.is_available():
        model.to("cuda")
    settings = eval_settings(config)
    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=_console(stderr=True)) as progress:  # fmt: skip
        metrics = evaluate(model, processor, adapter, splits, eval_dir, progress=progress, **settings)
    n = settings["num_samples"]
    how = "greedy" if n == 1 else f"{n} samples per record at temperature {settings['temperature']:g}"
    table = Table(title=f"eval of {model_path} ({how}) → {eval_dir / METRICS}", title_justify="left",
                  caption="parsed, unparsed: of all completions; one that does not parse counts as wrong")
    for col in ("task", "records", "parsed", "unparsed", "metric", "value"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task_name, values in metrics.items():
        shown = [(k, f"{v:.4f}") for k, v in values.items() if k not in COUNT_KEYS] or [("", "")]
        counts = (task_name, f"{values['n']:.0f}", f"{values['parse_rate']:.1%}", f"{values['unparsed']:.0f}")
        for i, (key, value) in enumerate(shown):
            table.add_row(*_cells(*(counts if i == 0 else ("",) * 4), key, value))
    _console().print(table)
    return 0


# -- vgrpo train / config ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from vgrpo.config import load_config
    from vgrpo.trainer import Trainer

    config = load_config(args.config, args.overrides)
    registry = _registry(args)
    if int(os.environ.get("RANK", "0")) == 0 and not args.verbose:  # with -v the trainer logs the same lines
        from vgrpo.env import plugin_summary_lines, version_summary

        err = _console(stderr=True)
        for line in [version_summary(), *plugin_summary_lines(registry)]:
            err.print(Text(line, style="dim"))
    out = Trainer(config, registry).train()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate/torchrun the first process reports for all
    con = _console()
    con.print(Text.assemble(("done: ", "bold green"), f"metrics in {out / 'metrics.jsonl'}, checkpoints in {out}/checkpoint-*"))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from vgrpo.config import TrainConfig, dump_config, load_config

    if args.action == "schema":
        print(json.dumps(TrainConfig.model_json_schema(), indent=2))
        return 0
    sys.stdout.write(dump_config(load_config(args.config, args.overrides)))
    return 0


# -- vgrpo new-plugin -----------------------------------------------------------------------------------------
def cmd_new_plugin(args: argparse.Namespace) -> int:
    from vgrpo.scaffold import new_plugin

    written = new_plugin(args.name, args.dir, reward_only=args.reward_only)
    folder = written[0].parent  # pyproject.toml's folder
    con = _console()
    con.print(Text.assemble(("created ", "bold green"), str(folder)))
    for path in written:
        con.print(Text(f"  {path.relative_to(folder)}"))
    con.print(Text(f"next: cd {folder} && pip install -e . && pytest tests"))
    return 0


# -- entry point ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgrpo", description="GRPO for vision-language models; tasks are plugins.")
    parser.add_argument("--version", action="version", version=f"vgrpo {__version__}")
    parser.add_argument("--strict-plugins", action="store_true", help="fail when any plugin has a problem")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    common = argparse.ArgumentParser(add_help=False)  # the global flags work after the command too
    common.add_argument("--strict-plugins", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("plugins", parents=[common], help="list installed plugins and their problems")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("tasks", parents=[common], help="list tasks, or `tasks show NAME` for one task")
    p.add_argument("action", nargs="?", choices=["show"], help="show one task")
    p.add_argument("name", nargs="?", help="task name (with show)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("score", parents=[common], help="score completions (JSONL) with a task's parser and rewards")
    p.add_argument("task", help="task name, e.g. rec")
    p.add_argument("file", nargs="?", help="JSONL of {completion, solution, image_size?, input_size?}; stdin if absent")
    p.add_argument("--params", help='task params as JSON, e.g. \'{"coords": "norm1000"}\'')
    p.add_argument("--weights", help='reward weights as JSON (replaces the defaults), e.g. \'{"accuracy": 1}\'')
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl", help="output format (default jsonl)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("train", parents=[common], help="train with GRPO on a task mixture from a YAML config")
    p.add_argument("config", help="YAML config, e.g. examples/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.max_steps=10 output_dir=runs/x")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("config", parents=[common], help="`config show CONFIG [overrides]` or `config schema`")
    p.add_argument("action", choices=["show", "schema"])
    p.add_argument("config", nargs="?", help="YAML config (show)")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("data", parents=[common], help="`data synth OUT_DIR`, `data check --task T FILE` or "
                       "`data convert --from vlm-r1 FILE -o OUT.jsonl`")  # fmt: skip
    p.add_argument("action", choices=["synth", "check", "convert"])
    p.add_argument("path", nargs="?", help="output folder (synth) or JSONL file (check, convert)")
    p.add_argument("--task", help="task whose records the file holds (check; convert: rec|ovd|count|math, "
                   "default: read from the records)")  # fmt: skip
    p.add_argument("--image-root", help="folder image paths are relative to (check, convert; default: the "
                   "file's)")  # fmt: skip
    p.add_argument("--from", dest="source", help="format of the file to convert: vlm-r1 (convert)")
    p.add_argument("-o", "--output", help="JSONL file the converted records go to (convert)")
    p.add_argument("--n", type=int, default=200, help="train records per task (synth, default 200)")
    p.add_argument("--tasks", default="rec,ovd,count,math", help="tasks to write (synth)")
    p.add_argument("--seed", type=int, default=0, help="seed (synth)")
    p.add_argument("--image-size", type=int, default=224, help="image side in pixels (synth)")
    p.add_argument("--json", action="store_true", help="machine-readable output (check, convert)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("eval", parents=[common], help="evaluate a model on task splits: each task's own metric")
    p.add_argument("config", nargs="?", help="YAML config (evaluates its output_dir's latest checkpoint, else its model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.add_argument("--model", help="model path or hub id (without CONFIG)")
    p.add_argument("--task", help="task name (without CONFIG)")
    p.add_argument("--data", help="JSONL split (without CONFIG)")
    p.add_argument("--params", help="task params as JSON (without CONFIG)")
    p.add_argument("--image-root", help="folder image paths are relative to")
    p.add_argument("--output-dir", default="eval", help="where predictions.jsonl and eval_metrics.json go")
    p.add_argument("--batch-size", type=int, default=8, help="completions per batch (without CONFIG)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion length limit (without CONFIG)")
    p.add_argument("--samples", type=int, metavar="N", help="completions per record (default 1: greedy)")
    p.add_argument("--k", metavar="K[,K...]", help="pass@k values, e.g. 1,4 (default: 1 and --samples)")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (default 1.0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("env", parents=[common], help="versions and plugins, for bug reports")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("new-plugin", parents=[common], help="write a new plugin package (task, or --reward-only)")
    p.add_argument("name", help="dotted task or reward name, e.g. acme.chartqa")
    p.add_argument("--reward-only", action="store_true", help="a reward plugin (vgrpo_rewards hook), no task")
    p.add_argument("--dir", default=".", help="folder to create the package folder in (default: current)")
    p.set_defaults(func=cmd_new_plugin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse consumes positionals in contiguous runs, so `score TASK --params X FILE` (or
    # `data check --task T FILE`) leaves FILE over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        slot = next((n for n in ("file", "path") if getattr(args, n, "") is None), None)
        if slot and len(extra) == 1 and (extra[0] == "-" or not extra[0].startswith("-")):
            setattr(args, slot, extra[0])
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from rich.logging import RichHandler

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_console(stderr=True))])
    try:
        return int(args.func(args) or 0)
    except (ParamsError, DataError, KeyError) as exc:
        _console(stderr=True).print(Text.assemble(("error: ", "red"), str(exc)), highlight=False)
        return 2
    except VgrpoError as exc:
        _console(stderr=True).print(Text.assemble(("error: ", "red"), str(exc)), highlight=False)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
