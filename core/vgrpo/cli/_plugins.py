"""``vgrpo plugins``, ``tasks``, ``env`` and ``new-plugin``: what is installed, and a new plugin package."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from vgrpo.cli._common import cells, console, dumps, out, registry_of
from vgrpo.errors import ParamsError
from vgrpo.plugins import PluginRegistry
from vgrpo.rewards import Reward


# -- vgrpo plugins -------------------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    registry = registry_of(args, quiet=True)
    if args.json:
        doc = registry.to_json()  # plus (additive) each usable plugin reward: range, params with defaults
        doc["rewards"] = [
            {**reward_info(registry.rewards[n]), "plugin": p["name"], "distribution": p["distribution"]}
            for p in doc["plugins"]
            for n in p["rewards"]
            if n in registry.rewards
        ]
        print(json.dumps(doc, indent=2, default=repr), file=out())
        return 0
    con = console()
    table = Table(title="vgrpo plugins", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("plugin", "distribution", "version"):  # never cut: a bug report needs them whole
        table.add_column(col, no_wrap=True, overflow="fold")
    table.add_column("provides", overflow="fold")  # one name a line
    for p in registry.plugins:
        provides = [f"task {n}" for n in p.tasks] + [_reward_line(registry, n) for n in p.rewards]
        provides += [f"model adapter {n}" for n in p.model_adapters]
        table.add_row(*cells(p.name, p.distribution, p.version, "\n".join(provides)))
    con.print(table)
    if registry.disabled:
        con.print(Text(f"disabled: {', '.join(registry.disabled)}"))
    if registry.errors:
        errors = Table(title="plugin problems", title_justify="left", style="red")
        for col in ("entry point", "distribution", "version", "error"):
            errors.add_column(col, overflow="fold")
        for e in registry.errors:
            errors.add_row(*cells(e.entry_point, e.distribution, e.version, e.error))
        con.print(errors)
    return 0


def _reward_line(registry: PluginRegistry, name: str) -> str:
    """``reward NAME``, with its params and their defaults when it has some: ``(params: max_words=200)``."""
    reward = registry.rewards.get(name)
    rows = params_rows(reward.params) if reward is not None and reward.params is not None else []
    shown = ", ".join(f"{r['name']}={json.dumps(r['default'], default=repr)}" for r in rows)
    return f"reward {name}" + (f" (params: {shown})" if rows else "")


def params_rows(model: Any) -> list[dict[str, Any]]:
    """A params model's fields as rows: name, type, default, description (``vgrpo tasks show``'s table)."""
    schema = model.model_json_schema()
    return [
        {
            "name": key,
            "type": _type_name(schema.get("properties", {}).get(key, {})),
            "default": field.get_default(call_default_factory=True),
            "description": field.description or "",
        }
        for key, field in model.model_fields.items()
    ]


def reward_info(reward: Reward, default_weight: float | None = None) -> dict[str, Any]:
    """A reward as JSON-ready data: name, range, description, and its params (rows and JSON schema; ``[]``
    and ``None`` for a reward without a params model), set per task as ``{weight, params}``."""
    info: dict[str, Any] = {"name": reward.name, "range": list(reward.range)}
    if default_weight is not None:
        info["default_weight"] = default_weight
    info["description"] = reward.description
    info["params"] = params_rows(reward.params) if reward.params is not None else []
    info["params_schema"] = reward.params.model_json_schema() if reward.params is not None else None
    return info


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
        "rewards": [reward_info(r, float(task.default_weights.get(r.name, 0.0))) for r in task.rewards],
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
    registry = registry_of(args)
    if args.action == "show":
        if not args.name:
            raise ParamsError("tasks show: expected a task name, one of those `vgrpo tasks` lists")
        info = task_info(registry, args.name)
        own = {r["name"] for r in info["rewards"]}
        # additive: the plugin rewards any task may weight, with their params
        info["plugin_rewards"] = [reward_info(r) for n, r in registry.rewards.items() if n not in own]
        if args.json:
            print(json.dumps(info, indent=2, default=repr), file=out())
            return 0
        _print_task(info)
        return 0
    if args.action is not None:
        raise ParamsError(
            f"tasks: unknown action {args.action!r}; expected `vgrpo tasks` or `vgrpo tasks show NAME`"
        )
    rows = [task_info(registry, name) for name in registry.tasks]
    if args.json:
        print(json.dumps({"tasks": rows}, indent=2, default=repr), file=out())
        return 0
    table = Table(title="vgrpo tasks", title_justify="left")
    for col in ("task", "version", "distribution", "rewards", "metric", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        rewards, metric = ", ".join(x["name"] for x in r["rewards"]), ", ".join(r["metric"])
        table.add_row(*cells(r["name"], r["version"], r["distribution"], rewards, metric, r["description"]))
    console().print(table)
    return 0


def _print_task(info: dict[str, Any]) -> None:
    con = console()
    about = f" {info['version']} ({info['distribution']}) — {info['description']}"
    con.print(Text.assemble((info["name"], "bold"), about))
    con.print("\n[bold]template[/bold]")
    if info["template"]["system"]:
        con.print(f"  system: {info['template']['system']}", markup=False)
    con.print(f"  user: {info['template']['user']}", markup=False)
    con.print(Text.assemble(("prompt for the example record: ", "bold"), info["example_prompt"]))
    params = Table(title="params", title_justify="left")
    for col in ("name", "type", "default", "description"):
        params.add_column(col, overflow="fold")
    for p in info["params"]:
        params.add_row(*cells(p["name"], p["type"], json.dumps(p["default"]), p["description"]))
    con.print(params)
    rewards = Table(title="rewards", title_justify="left")
    for col in ("name", "range", "default weight", "description"):
        rewards.add_column(col, overflow="fold")
    for r in info["rewards"]:
        span = f"[{r['range'][0]:g}, {r['range'][1]:g}]"
        rewards.add_row(*cells(r["name"], span, f"{r['default_weight']:g}", r["description"]))
    con.print(rewards)
    plugin_rewards = info.get("plugin_rewards", [])
    if plugin_rewards:
        shared = Table(title="plugin rewards (weight them in `rewards:`)", title_justify="left")
        for col in ("name", "range", "description"):
            shared.add_column(col, overflow="fold")
        for r in plugin_rewards:
            shared.add_row(*cells(r["name"], f"[{r['range'][0]:g}, {r['range'][1]:g}]", r["description"]))
        con.print(shared)
    for r in [*info["rewards"], *plugin_rewards]:
        if r.get("params"):
            _print_reward_params(con, r)
    con.print(Text.assemble(("metric", "bold"), f": {', '.join(info['metric'])}"))
    con.print(Text.assemble(("example record: ", "bold"), dumps(info["example"])))
    con.print(Text.assemble(("example completion: ", "bold"), info["example_completion"]))


def _print_reward_params(con: Any, reward: dict[str, Any]) -> None:
    name = reward["name"]
    title = f"params of reward {name} (set as rewards: {{{name}: {{weight: w, params: {{...}}}}}})"
    table = Table(title=title, title_justify="left")
    for col in ("name", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for p in reward["params"]:
        table.add_row(*cells(p["name"], p["type"], json.dumps(p["default"], default=repr), p["description"]))
    con.print(table)


# -- vgrpo env -----------------------------------------------------------------------------------------------
def cmd_env(args: argparse.Namespace) -> int:
    from vgrpo.env import collect_env, format_env

    info = collect_env(registry_of(args, quiet=True))
    if args.json:
        print(json.dumps(info, indent=2), file=out())
        return 0
    out().write(format_env(info))  # plain Markdown, so it pastes into an issue as it is
    return 0


# -- vgrpo new-plugin ----------------------------------------------------------------------------------------
def cmd_new_plugin(args: argparse.Namespace) -> int:
    from vgrpo.scaffold import new_plugin

    written = new_plugin(args.name, args.dir, reward_only=args.reward_only)
    folder = written[0].parent  # pyproject.toml's folder
    con = console()
    con.print(Text.assemble(("created ", "bold green"), str(folder)))
    for path in written:
        con.print(Text(f"  {path.relative_to(folder)}"))
    # The scaffold's `test` extra brings pytest; `.'[test]'` is quoted for zsh, which globs brackets.
    con.print(Text(f"next: cd {folder} && pip install -e .'[test]' && pytest tests"))
    return 0
