"""What ``vgrpo env`` reports: versions, hardware and plugins, for bug reports."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

from vgrpo import __version__
from vgrpo.plugins import DISABLE_ENV, STRICT_ENV, PluginRegistry

PACKAGES = (
    "torch", "transformers", "accelerate", "deepspeed", "peft", "trl", "triton", "flash-attn", "liger-kernel",
    "pluggy", "pydantic", "numpy", "pillow", "shapely", "pycocotools", "math-verify", "rich",
)  # fmt: skip


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _accelerator() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"CUDA {torch.version.cuda}: " + ", ".join(names)
    return "none (CPU)"


def collect_env(registry: PluginRegistry) -> dict[str, Any]:
    """A flat, JSON-ready description of this installation."""
    return {
        "vgrpo": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "accelerator": _accelerator(),
        "packages": {name: v for name in PACKAGES if (v := _version(name))},
        "env": {k: v for k, v in os.environ.items() if k in (STRICT_ENV, DISABLE_ENV) or k.startswith("VGRPO_")},
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version} for p in registry.plugins
        ],
        "plugin_errors": [
            {"entry_point": e.entry_point, "distribution": e.distribution, "error": e.error} for e in registry.errors
        ],
    }
