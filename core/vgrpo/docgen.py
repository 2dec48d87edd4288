"""Generate the reference pages (docs/reference/) from the tasks' params models, the config models and the
command-line parser. The task page covers the tasks of the built-in distributions (``BUILTIN_DISTRIBUTIONS``
of :mod:`vgrpo.plugins`), whatever they are called.

``python -m vgrpo.docgen docs/reference`` (or ``make docs-ref``); a test keeps the files in sync.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.utils import canonicalize_name

from vgrpo.cli import task_info
from vgrpo.plugins import BUILTIN_DISTRIBUTIONS, PluginRegistry, load_plugins
from vgrpo.task import Task


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def correctness(task: Task) -> str:
    """What makes one record correct for ``task`` (its ``correct``), in a sentence."""
    method = type(task).correct
    if method is Task.correct:
        metric = f"`{task.metric_names[0]}`" if task.metric_names else "its first metric"
        return f"{metric} computed on the record alone is 1.0 (the default rule)."
    doc = inspect.getdoc(method) or ""
    return " ".join(doc.split("\n\n")[0].split())


def builtin_tasks(registry: PluginRegistry) -> list[str]:
    """Names of the tasks the built-in distributions provide, sorted: the page must not depend on which
    third-party plugins happen to be installed."""
    dists = {n: canonicalize_name(registry.owner("task", n)[0]) for n in registry.tasks}
    return [n for n, dist in dists.items() if dist in BUILTIN_DISTRIBUTIONS]


def task_reference(registry: PluginRegistry, names: Iterable[str] | None = None) -> str:
    """Markdown for the given tasks (default: :func:`builtin_tasks`): description, params with defaults,
    rewards, metric, template, example."""
    names = builtin_tasks(registry) if names is None else names
    out = [
        "# Built-in task reference",
        "",
        "Generated from the tasks' params models by `make docs-ref` (`python -m vgrpo.docgen`); "
        "do not edit by hand.",
        "The exact reward semantics are in [Reward semantics](../rewards.md).",
        "",
    ]
    for name in names:
        info = task_info(registry, name)
        out += [
            f"## `{info['name']}`",
            "",
            f"{info['description']} Distribution `{info['distribution']}`, task version {info['version']}.",
            "",
            "**Params** (`params:` in a config, `--params` for `vgrpo score`):",
            "",
            "| name | type | default | description |",
            "|---|---|---|---|",
        ]
        for p in info["params"]:
            default = json.dumps(p["default"])
            out.append(f"| `{p['name']}` | {_cell(p['type'])} | `{default}` | {_cell(p['description'])} |")
        out += ["", "**Rewards**:", "", "| name | range | default weight | description |"]
        out += ["|---|---|---|---|"]
        for r in info["rewards"]:
            lo, hi = r["range"]
            weight, text = r["default_weight"], _cell(r["description"])
            out.append(f"| `{r['name']}` | [{lo:g}, {hi:g}] | {weight:g} | {text} |")
        out += [
            "",
            f"**Metric** (dataset-level): {', '.join(f'`{m}`' for m in info['metric'])}",
            "",
            f"**Correct** (one record, what pass@k counts): {correctness(registry.task(name))}",
            "",
            "**Prompt** for the example record, default params (user message):",
            "",
            "```text",
            info["example_prompt"],
            "```",
            "",
            "**Example record and completion**:",
            "",
            "```json",
            json.dumps(info["example"], ensure_ascii=False),
            "```",
            "",
            "```text",
            info["example_completion"],
            "```",
            "",
        ]
    return "\n".join(out)


def config_reference() -> str:
    """Markdown for every section of the training config, from the pydantic models."""
    from pydantic import BaseModel

    from vgrpo.config import TaskEntry, TrainConfig

    out = [
        "# Configuration reference",
        "",
        "Generated from the config models (`vgrpo.config`) by `make docs-ref`; do not edit by hand. "
        "Every key can",
        "be set in the YAML file or overridden on the command line as `key.sub=value` (`tasks.0.weight=2`).",
        "",
    ]

    def section(title: str, model: type[BaseModel], prefix: str) -> None:
        doc = (model.__doc__ or "").strip()
        out.extend([f"## `{title}`", "", doc, "", "| key | default | description |", "|---|---|---|"])
        nested = []
        for key, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((f"{prefix}{key}", annotation))
                continue
            if field.is_required():
                default = "required"
            else:
                default = f"`{json.dumps(field.get_default(call_default_factory=True), default=str)}`"
            out.append(f"| `{prefix}{key}` | {_cell(default)} | {_cell(field.description or '')} |")
        out.append("")
        for name, child in nested:
            section(name, child, f"{name}.")

    section("(top level)", TrainConfig, "")
    section("tasks[]", TaskEntry, "tasks.N.")
    return "\n".join(out)


_FLAG_ACTIONS = (argparse._VersionAction, argparse._CountAction, argparse._StoreTrueAction)


def _shown(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._CountAction, argparse._VersionAction))


def _flag(action: argparse.Action) -> str:
    """The argument as written on the command line: ``--params PARAMS``, ``[file]``, ``[overrides ...]``."""
    if action.option_strings:
        return max(action.option_strings, key=len) + (f" {_metavar(action)}" if _takes_value(action) else "")
    name = _metavar(action)
    forms = {"?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}
    forms[argparse.PARSER] = f"{name} ..."
    return forms.get(str(action.nargs), name)


def _usage(parser: argparse.ArgumentParser) -> str:
    """A one-line usage: options (bracketed) then positionals, independent of the terminal's width."""
    actions = [a for a in parser._actions if _shown(a)]
    options = [f"[{_flag(a)}]" for a in actions if a.option_strings]
    positionals = [_flag(a) for a in actions if not a.option_strings]
    return " ".join([parser.prog, *options, *positionals])


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | description |", "|---|---|---|"]
    for action in parser._actions:
        if not _shown(action) or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            value = f" {_metavar(action)}" if _takes_value(action) else ""
            names = ", ".join(action.option_strings) + value
        else:
            names = action.dest
        unset = isinstance(action, _FLAG_ACTIONS) or action.default in (None, argparse.SUPPRESS, [])
        default = "" if unset else f"`{json.dumps(action.default)}`"
        text = action.help or ""
        if action.choices is not None:
            text = f"{text} (one of: {', '.join(str(c) for c in action.choices)})".strip()
        rows.append(f"| `{names}` | {default} | {_cell(text)} |")
    return rows if len(rows) > 2 else []


def cli_reference() -> str:
    """Markdown for every ``vgrpo`` command: usage and arguments, from :func:`vgrpo.cli.build_parser`."""
    from vgrpo.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in commands._choices_actions}
    out = [
        "# CLI reference",
        "",
        "Generated from the argument parser (`vgrpo.cli.build_parser`) by `make docs-ref`; do not edit by",
        "hand. Every command also takes `-h`/`--help`, and the global flags `--strict-plugins` and `-v` may",
        "follow the command. Exit status: 0 on success, 1 when the command failed, 2 for a usage or input",
        "error (unknown name, bad params, bad data), 3 for a bug in vgrpo or a plugin (it prints a",
        "traceback: please report it with the output of `vgrpo env`).",
        "",
        "## `vgrpo`",
        "",
        parser.description or "",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        *_argument_rows(parser),
        "",
        "| command | what it does |",
        "|---|---|",
        *[f"| [`{name}`](#vgrpo-{name}) | {_cell(helps.get(name, ''))} |" for name in commands.choices],
        "",
    ]
    for name, sub in commands.choices.items():
        rows = _argument_rows(sub)
        out += [f"## `vgrpo {name}`", "", _cell(helps.get(name, "")), "", "```text", _usage(sub), "```", ""]
        out += [*rows, ""] if rows else []
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m vgrpo.docgen [DOCS_DIR]``: write reference/{tasks,config,cli}.md, or print them."""
    argv = sys.argv[1:] if argv is None else argv
    pages = {"tasks.md": task_reference(load_plugins()), "config.md": config_reference()}
    pages["cli.md"] = cli_reference()
    if not argv:
        sys.stdout.write("\n\n".join(pages.values()))
        return 0
    root = Path(argv[0])
    root.mkdir(parents=True, exist_ok=True)
    for name, text in pages.items():
        (root / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
