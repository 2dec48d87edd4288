"""The ``vgrpo`` command line: rich tables for people, ``--json`` for programs.

One module per command group: ``_plugins`` (plugins, tasks, env, new-plugin), ``_score``, ``_data`` (synth,
check, convert), ``_run`` (train, eval, config) and ``_sft`` (sft, plot, demo); this module holds the parser
and :func:`main`.

Exit status: 0 on success; 1 when the command failed (a vgrpo error: a plugin problem, a checkpoint that
cannot be resumed, training that cannot go on); 2 for a usage or input error (unknown task, bad ``--params``,
bad data), whose message says what was expected and where; 3 for a bug in vgrpo or a plugin (any other
exception), reported with its traceback and where to report it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from rich.text import Text

from vgrpo import __version__
from vgrpo.cli._common import console, own_stdout
from vgrpo.cli._data import cmd_data
from vgrpo.cli._plugins import cmd_env, cmd_new_plugin, cmd_plugins, cmd_tasks, example_prompt, task_info
from vgrpo.cli._run import cmd_config, cmd_eval, cmd_train
from vgrpo.cli._score import cmd_score, score_lines
from vgrpo.cli._sft import add_commands as add_sft_commands
from vgrpo.errors import DataError, Interrupted, ParamsError, UnknownNameError, VgrpoError

__all__ = [
    "BUG",
    "FAILED",
    "USAGE_ERROR",
    "build_parser",
    "example_prompt",
    "issue_page",
    "main",
    "score_lines",
    "task_info",
]

FAILED, USAGE_ERROR, BUG = 1, 2, 3
"""Exit statuses: a vgrpo error, a usage or input error, a bug (an exception not raised on purpose)."""
_USAGE_ERRORS = (ParamsError, DataError, UnknownNameError)


def _command(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, func: Callable, about: str
) -> argparse.ArgumentParser:
    """A subcommand that takes the global flags too and runs ``func(args)``."""
    p = sub.add_parser(name, parents=[common], help=about)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (also the source of docs/reference/cli.md)."""
    about = "GRPO for vision-language models; tasks are plugins."
    parser = argparse.ArgumentParser(prog="vgrpo", description=about)
    parser.add_argument("--version", action="version", version=f"vgrpo {__version__}")
    parser.add_argument("--strict-plugins", action="store_true", help="fail when any plugin has a problem")
    verbose = "more logging (-v info, -vv debug)"
    parser.add_argument("-v", "--verbose", action="count", default=0, help=verbose)
    common = argparse.ArgumentParser(add_help=False)  # the global flags work after the command too
    hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    common.add_argument("--strict-plugins", action="store_true", **hidden)
    common.add_argument("-v", "--verbose", action="count", **hidden)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    json_help = "machine-readable output"

    p = _command(sub, common, "plugins", cmd_plugins, "list installed plugins and their problems")
    p.add_argument("--json", action="store_true", help=json_help)

    p = _command(sub, common, "tasks", cmd_tasks, "list tasks, or `tasks show NAME` for one task")
    p.add_argument("action", nargs="?", choices=["show"], help="show one task")
    p.add_argument("name", nargs="?", help="task name (with show)")
    p.add_argument("--json", action="store_true", help=json_help)

    about = "score completions (JSONL) with a task's parser and rewards"
    p = _command(sub, common, "score", cmd_score, about)
    p.add_argument("task", help="task name (`vgrpo tasks` lists them)")
    cases = "JSONL of {completion, solution, image_size?, input_size?}; stdin if absent"
    p.add_argument("file", nargs="?", help=cases)
    p.add_argument("--params", help="task params as JSON, e.g. '{\"require_answer_tags\": false}'")
    weights = "reward weights as JSON (replaces the defaults), e.g. '{\"accuracy\": 1}'"
    p.add_argument("--weights", help=weights)
    formats = ["jsonl", "table"]
    p.add_argument("--format", choices=formats, default="jsonl", help="output format (default jsonl)")
    p.add_argument(
        "--workers", type=int, default=1, help="reward worker processes (default 1; 0: in this process)"
    )
    limit = "time limit of one batch's rewards in seconds (default 60): past it its lines become error rows"
    p.add_argument("--timeout-s", type=float, default=60.0, help=limit)

    p = _command(sub, common, "train", cmd_train, "train with GRPO on a task mixture from a YAML config")
    p.add_argument("config", help="YAML config, e.g. examples/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.max_steps=10 output_dir=runs/x")

    add_sft_commands(sub, common, _command)  # sft, plot, demo

    p = _command(sub, common, "config", cmd_config, "`config show CONFIG [overrides]` or `config schema`")
    p.add_argument("action", choices=["show", "schema"])
    p.add_argument("config", nargs="?", help="YAML config (show)")
    p.add_argument("overrides", nargs="*", help="dotted overrides")

    about = "`data synth OUT_DIR`, `data check --task T FILE` or "
    about += "`data convert --from vlm-r1 FILE -o OUT.jsonl`"
    p = _command(sub, common, "data", cmd_data, about)
    p.add_argument("action", choices=["synth", "check", "convert"])
    p.add_argument("path", nargs="?", help="output folder (synth) or JSONL file (check, convert)")
    task_help = "task whose records the file holds (check; convert: a task that imports VLM-R1 records, "
    p.add_argument("--task", help=task_help + "default: read from the records)")
    root_help = "folder image paths are relative to (check, convert; default: the file's)"
    p.add_argument("--image-root", help=root_help)
    p.add_argument(
        "--params",
        help='task params as JSON, as the config would set them (check), e.g. \'{"coords": "norm1000"}\'',
    )
    p.add_argument("--from", dest="source", help="format of the file to convert: vlm-r1 (convert)")
    p.add_argument("-o", "--output", help="JSONL file the converted records go to (convert)")
    p.add_argument("--n", type=int, default=200, help="train records per task (synth, default 200)")
    tasks_help = "comma-separated tasks to write (synth; default: every installed task that makes some)"
    p.add_argument("--tasks", help=tasks_help)
    p.add_argument("--seed", type=int, default=0, help="seed (synth)")
    p.add_argument("--image-size", type=int, default=224, help="image side in pixels (synth)")
    p.add_argument("--json", action="store_true", help="machine-readable output (check, convert)")

    p = _command(sub, common, "eval", cmd_eval, "evaluate a model on task splits: each task's own metric")
    config_help = "YAML config (evaluates its output_dir's latest checkpoint, else its model)"
    p.add_argument("config", nargs="?", help=config_help)
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.add_argument("--model", help="model path or hub id (without CONFIG)")
    p.add_argument("--task", help="task name (without CONFIG)")
    p.add_argument("--data", help="JSONL split (without CONFIG)")
    p.add_argument("--params", help="task params as JSON (without CONFIG)")
    p.add_argument("--image-root", help="folder image paths are relative to")
    out_help = "where predictions.jsonl and eval_metrics.json go (default eval, with --protocol eval-NAME)"
    p.add_argument("--output-dir", help=out_help)
    protocol_help = "evaluate by another codebase's rules where a task has them, e.g. vlm-r1 (see docs)"
    p.add_argument("--protocol", metavar="NAME", help=protocol_help)
    p.add_argument("--batch-size", type=int, default=8, help="completions per batch (without CONFIG)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion length limit (without CONFIG)")
    p.add_argument("--samples", type=int, metavar="N", help="completions per record (default 1: greedy)")
    p.add_argument("--k", metavar="K[,K...]", help="pass@k values, e.g. 1,4 (default: 1 and --samples)")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (default 1.0)")

    p = _command(sub, common, "env", cmd_env, "versions and plugins, for bug reports")
    p.add_argument("--json", action="store_true", help=json_help)

    about = "write a new plugin package (task, or --reward-only)"
    p = _command(sub, common, "new-plugin", cmd_new_plugin, about)
    p.add_argument("name", help="dotted task or reward name, e.g. acme.chartqa")
    p.add_argument("--reward-only", action="store_true", help="a reward plugin (vgrpo_rewards hook), no task")
    p.add_argument("--dir", default=".", help="folder to create the package folder in (default: current)")
    return parser


def issue_page() -> str:
    """Where to report a bug: the distribution's issue tracker URL when its metadata names one."""
    try:
        urls = importlib.metadata.metadata("vgrpo").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower().replace(" ", "") in {"issues", "bugtracker", "tracker"} and url.strip():
            return url.strip()
    return "the vgrpo issue tracker"


def _report_bug() -> None:
    """An exception vgrpo did not raise on purpose: its traceback, then where to report it."""
    traceback.print_exc(file=sys.stderr)
    line = (
        f"this is a bug in vgrpo (or a plugin): please report it at {issue_page()} with the traceback above "
        "and the output of `vgrpo env`"
    )
    console(stderr=True).print(Text(line, style="red"), highlight=False, soft_wrap=True)  # a URL stays whole


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vgrpo`` command; returns the exit status (see the module docstring)."""
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
    handler = RichHandler(console=console(stderr=True))
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    try:
        with own_stdout():  # plugin prints go to stderr; the command writes to out()
            return int(args.func(args) or 0)
    except VgrpoError as exc:
        console(stderr=True).print(Text.assemble(("error: ", "red"), str(exc)), highlight=False)
        return USAGE_ERROR if isinstance(exc, _USAGE_ERRORS) else FAILED
    except BrokenPipeError:  # `vgrpo score ... | head`: the reader has all it wants
        return 0
    except Interrupted as exc:  # a second Ctrl-C or SIGTERM during training
        console(stderr=True).print(Text.assemble(("stopped: ", "yellow"), str(exc)), highlight=False)
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C outside a training step (loading a model, evaluating, scoring)
        console(stderr=True).print(Text.assemble(("stopped: ", "yellow"), "interrupted"), highlight=False)
        return 130
    except Exception:  # noqa: BLE001 - not a usage error: a bug, shown with its traceback
        _report_bug()
        return BUG
