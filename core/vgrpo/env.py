"""What ``vgrpo env`` reports for bug reports, and the plugin lines of the training log's header.

Versions of the interpreter, torch and its CUDA build, the packages a GRPO run depends on (named even when
missing: "deepspeed: not installed" answers a question too), every plugin with its distribution and version,
and the plugins that failed to load or were disabled.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

from vgrpo import __version__
from vgrpo.plugins import DISABLE_ENV, STRICT_ENV, PluginRegistry

#: Reported always, ``None`` when not installed: the stack a training run depends on.
KEY_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "deepspeed",
    "peft",
    "trl",
    "triton",
    "flash-attn",
    "liger-kernel",
)
#: Reported when installed.
OTHER_PACKAGES = ("pluggy", "pydantic", "numpy", "pillow", "shapely", "pycocotools", "math-verify", "rich")
PACKAGES = KEY_PACKAGES + OTHER_PACKAGES
_ENV_NAMES = (STRICT_ENV, DISABLE_ENV)


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def torch_info() -> dict[str, Any]:
    """torch's version, the CUDA and cuDNN it was built with, and the GPUs it sees."""
    try:
        import torch
    except ImportError:
        return {"version": None, "cuda_build": None, "cudnn": None, "cuda_available": False, "devices": []}
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if available else None,
        "cuda_available": available,
        "devices": [torch.cuda.get_device_name(i) for i in range(count)],
    }


def _accelerator(torch: dict[str, Any]) -> str:
    if torch["version"] is None:
        return "torch not installed"
    if torch["cuda_available"]:
        return f"CUDA {torch['cuda_build']}: " + ", ".join(torch["devices"])
    return "none (CPU)"


def collect_env(registry: PluginRegistry) -> dict[str, Any]:
    """A JSON-ready description of this installation (``vgrpo env --json``)."""
    torch, listing = torch_info(), registry.to_json()
    return {
        "vgrpo": __version__,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch,
        "accelerator": _accelerator(torch),
        "packages": {name: _version(name) for name in KEY_PACKAGES}
        | {name: v for name in OTHER_PACKAGES if (v := _version(name))},
        "env": {k: v for k, v in os.environ.items() if k.startswith("VGRPO_") or k in _ENV_NAMES},
        "plugins": listing["plugins"],  # name, distribution, version, tasks, rewards, model_adapters
        "plugin_errors": listing["errors"],  # entry_point, distribution, version, error
        "disabled_plugins": list(registry.disabled),
    }


def _provides(tasks: list[str], rewards: list[str], adapters: list[str]) -> str:
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("tasks", tasks), ("rewards", rewards), ("model adapters", adapters))
        if names
    ]
    return "; ".join(parts) or "registers nothing"


def plugin_summary_lines(registry: PluginRegistry) -> list[str]:
    """One line per plugin (distribution, version, what it provides), then one per problem and the disabled.

    For the header of the training log, so a run's log says exactly which plugin code scored it.
    """
    lines = [
        f"plugin {p.name}: {p.distribution} {p.version} — {_provides(p.tasks, p.rewards, p.model_adapters)}"
        for p in registry.plugins
    ]
    lines += [
        f"plugin problem {e.entry_point} ({e.distribution} {e.version}): {e.error}" for e in registry.errors
    ]
    if registry.disabled:
        lines.append(f"plugins disabled by {DISABLE_ENV}: {', '.join(registry.disabled)}")
    return lines


def version_summary() -> str:
    """One line with the versions that matter for reproducing a run (for the training log's header)."""
    torch = torch_info()
    cuda = f"CUDA {torch['cuda_build']}" if torch["cuda_available"] else "CPU"
    names = ("transformers", "accelerate", "trl", "deepspeed")
    others = "".join(f", {n} {v}" for n in names if (v := _version(n)))
    python, torch_version = sys.version.split()[0], torch["version"] or "not installed"
    return f"vgrpo {__version__}, python {python}, torch {torch_version} ({cuda}){others}"


def format_env(info: dict[str, Any]) -> str:
    """The ``vgrpo env`` block: a Markdown list to paste into a bug report as it is."""
    torch = info["torch"]
    lines = [
        "vgrpo env (paste this into bug reports)",
        "",
        f"- vgrpo: {info['vgrpo']}",
        f"- python: {info['python']} ({info['python_executable']})",
        f"- platform: {info['platform']}, {info['cpu_count']} CPUs",
        f"- torch: {torch['version'] or 'not installed'} (CUDA build: {torch['cuda_build'] or 'none'}, "
        f"cuDNN: {torch['cudnn'] or 'n/a'}, CUDA available: {'yes' if torch['cuda_available'] else 'no'})",
        f"- accelerator: {info['accelerator']}",
    ]
    packages = info["packages"]
    lines += [f"- {n}: {packages.get(n) or 'not installed'}" for n in KEY_PACKAGES if n != "torch"]
    others = ", ".join(f"{n} {v}" for n, v in packages.items() if n not in KEY_PACKAGES and v)
    lines.append(f"- other packages: {others or 'none'}")
    variables = ", ".join(f"{k}={v}" for k, v in info["env"].items())
    lines.append(f"- environment: {variables or 'no VGRPO_* variables'}")
    lines.append("- plugins:" if info["plugins"] else "- plugins: none")
    lines += [
        f"  - {p['distribution']} {p['version']} (entry point {p['name']}): "
        + _provides(p["tasks"], p["rewards"], p["model_adapters"])
        for p in info["plugins"]
    ]
    lines.append("- plugin problems:" if info["plugin_errors"] else "- plugin problems: none")
    lines += [
        f"  - {e['entry_point']} ({e['distribution']} {e['version']}): {e['error']}"
        for e in info["plugin_errors"]
    ]
    if info["disabled_plugins"]:
        lines.append(f"- disabled plugins ({DISABLE_ENV}): {', '.join(info['disabled_plugins'])}")
    return "\n".join(lines) + "\n"
