"""Generate the reference pages (docs/reference/) from the tasks' params models and the config models.

``python -m vgrpo.docgen docs/reference`` (or ``make docs-ref``); a test keeps the files in sync.
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


def config_reference() -> str:
    """Markdown for every section of the training config, from the pydantic models."""
    from pydantic import BaseModel

    from vgrpo.config import TaskEntry, TrainConfig

    out = [
        "# Configuration reference",
        "",
        "Generated from the config models (`vgrpo.config`) by `make docs-ref`; do not edit by hand. Every key can",
        "be set in the YAML file or overridden on the command line as `key.sub=value` (`tasks.0.weight=2`).",
        "",
    ]

    def section(title: str, model: type[BaseModel], prefix: str) -> None:
        out.extend([f"## `{title}`", "", (model.__doc__ or "").strip(), "", "| key | default | description |", "|---|---|---|"])
        nested = []
        for key, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((f"{prefix}{key}", annotation))
                continue
            default = "required" if field.is_required() else f"`{json.dumps(field.get_default(call_default_factory=True), default=str)}`"
            out.append(f"| `{prefix}{key}` | {_cell(default)} | {_cell(field.description or '')} |")
        out.append("")
        for name, child in nested:
            section(name, child, f"{name}.")

    section("(top level)", TrainConfig, "")
    section("tasks[]", TaskEntry, "tasks.N.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m vgrpo.docgen [DOCS_DIR]``: write reference/tasks.md and reference/config.md, or print them."""
    argv = sys.argv[1:] if argv is None else argv
    pages = {"tasks.md": task_reference(load_plugins()), "config.md": config_reference()}
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
