"""Generate the task reference (docs/reference/tasks.md) from the installed tasks' params models.

``python -m vgrpo.docgen docs/reference/tasks.md`` (or ``make docs-ref``); a test keeps the file in sync.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

from vgrpo.cli import task_info
from vgrpo.plugins import PluginRegistry, load_plugins

BUILTIN_TASKS = ("rec", "ovd", "count", "math")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def task_reference(registry: PluginRegistry, names: Iterable[str] = BUILTIN_TASKS) -> str:
    """Markdown for the given tasks: description, params with defaults, rewards, metric, template, example."""
    out = [
        "# Built-in task reference",
        "",
        "Generated from the tasks' params models by `make docs-ref` (`python -m vgrpo.docgen`); do not edit by hand.",
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
            out.append(f"| `{p['name']}` | {_cell(p['type'])} | `{json.dumps(p['default'])}` | {_cell(p['description'])} |")
        out += ["", "**Rewards**:", "", "| name | range | default weight | description |", "|---|---|---|---|"]
        for r in info["rewards"]:
            lo, hi = r["range"]
            out.append(f"| `{r['name']}` | [{lo:g}, {hi:g}] | {r['default_weight']:g} | {_cell(r['description'])} |")
        out += [
            "",
            f"**Metric** (dataset-level): {', '.join(f'`{m}`' for m in info['metric'])}",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = task_reference(load_plugins())
    if argv:
        Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
