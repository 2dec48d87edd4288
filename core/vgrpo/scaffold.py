"""``vgrpo new-plugin``: write a complete plugin package that installs with pip and passes its own tests.

A task plugin gets a params model, prompt template, parser, rewards and metric; a reward-only plugin gets one
reward registered through ``vgrpo_rewards``. Both get pyproject.toml with the ``vgrpo`` entry point, sample
JSONL records with PNG images, tests built on :mod:`vgrpo.testing`, and a README. The templates live in
``vgrpo/templates/`` (``$name`` placeholders, :class:`string.Template`).
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import keyword
import logging
import re
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vgrpo import __version__
from vgrpo.errors import ParamsError

log = logging.getLogger(__name__)

_PART = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME_LENGTH = 64
#: The rule every plugin name follows, quoted in every refusal.
NAME_RULE = (
    "a dotted lowercase name namespace.name such as 'acme.chartqa': two or more parts, each a letter a-z "
    "followed by a-z, 0-9 or '_', none a Python keyword, at most 64 characters; bare names are reserved for "
    "vgrpo's built-ins and the namespace 'vgrpo' for vgrpo itself ('acme.chartqa' gives the distribution "
    "vgrpo-acme-chartqa and the package acme_chartqa)"
)
# Names the generated modules (rewards.py, __init__.py, the tests) use themselves: a reward function called
# like one of them would shadow it, and one called test_* would be taken for a test.
_MODULE_NAMES = frozenset(
    {
        "vgrpo",
        "annotations",
        "SOFT_LIMIT",
        "HARD_LIMIT",
        "json",
        "pytest",
        "check_reward",
        "vgrpo_rewards",
    }
)


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin package derives from its dotted task or reward name."""

    name: str
    """The task or reward name, e.g. ``acme.chartqa``."""
    distribution: str
    """The distribution (what ``pip install`` takes), e.g. ``vgrpo-acme-chartqa``; also the folder name."""
    package: str
    """The import package, e.g. ``acme_chartqa``."""
    entry_point: str
    """The entry-point name in the ``vgrpo`` group, e.g. ``acme-chartqa``."""
    cls: str
    """The class-name stem of a task, e.g. ``Chartqa`` (``ChartqaTask``, ``ChartqaParams``)."""
    func: str
    """The function name of a reward, e.g. ``chartqa``."""


def plugin_names(name: str) -> PluginNames:
    """Validate a plugin name and derive the others; :class:`ParamsError` quoting :data:`NAME_RULE` if bad."""

    def refuse(why: str) -> ParamsError:
        return ParamsError(f"invalid plugin name {name!r}: {why}. The rule: {NAME_RULE}")

    if not isinstance(name, str) or not name:
        raise refuse("it is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise refuse(f"it has {len(name)} characters")
    if name != name.lower():
        raise refuse("it has uppercase letters")
    if "-" in name and "." not in name:
        raise refuse("it looks like a distribution name; give the dotted task name instead")
    parts = name.split(".")
    if len(parts) < 2:
        raise refuse("it is not dotted (bare names are reserved for vgrpo's built-in tasks)")
    for part in parts:
        if not part:
            raise refuse("it has an empty part (a leading, trailing or doubled dot)")
        if part[0].isdigit():
            raise refuse(f"part {part!r} starts with a digit")
        if not _PART.match(part):
            bad = sorted({c for c in part if not (c.isascii() and (c.islower() or c.isdigit() or c == "_"))})
            raise refuse(
                f"part {part!r} has characters other than a-z, 0-9 and '_': {bad}"
                if bad
                else f"part {part!r} does not start with a letter"
            )
        if keyword.iskeyword(part):
            raise refuse(f"part {part!r} is a Python keyword")
    if parts[0] == "vgrpo":
        raise refuse("the namespace 'vgrpo' is reserved for the project's own plugins")
    package = "_".join(parts)
    if package in sys.stdlib_module_names:
        raise refuse(f"its package name {package!r} would shadow the standard library module")
    last = parts[-1]
    if importlib.util.find_spec(package) is not None:
        raise refuse(f"its package name {package!r} is already taken by an installed module")
    if last.startswith("test"):
        func = f"reward_{last}"
    elif last in _MODULE_NAMES or hasattr(builtins, last):
        func = f"{last}_reward"
    else:
        func = last
    return PluginNames(
        name=name,
        distribution="vgrpo-" + package.replace("_", "-"),
        package=package,
        entry_point=package.replace("_", "-"),
        cls="".join(w.capitalize() for w in last.split("_") if w) or "Plugin",
        func=func,
    )


# (template under vgrpo/templates/, output path with {package} placeholders)
_TASK_FILES = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("task/README.md.tmpl", "README.md"),
    ("task/__init__.py.tmpl", "{package}/__init__.py"),
    ("task/task.py.tmpl", "{package}/task.py"),
    ("task/test_plugin.py.tmpl", "tests/test_{package}.py"),
)
_REWARD_FILES = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("reward/README.md.tmpl", "README.md"),
    ("reward/__init__.py.tmpl", "{package}/__init__.py"),
    ("reward/rewards.py.tmpl", "{package}/rewards.py"),
    ("reward/test_plugin.py.tmpl", "tests/test_{package}.py"),
)
# The sample data: simple shapes whose colour the question asks for.
_SHAPES = (
    ("square", "red", (220, 40, 40)),
    ("circle", "blue", (40, 80, 220)),
    ("triangle", "green", (40, 170, 70)),
)
IMAGE_SIZE = 64


def _render(template: str, names: PluginNames, reward_only: bool) -> str:
    text = resources.files("vgrpo").joinpath("templates", *template.split("/")).read_text(encoding="utf-8")
    kind = "reward" if reward_only else "task"
    major, minor = __version__.split(".")[:2]
    values = {
        **{k: getattr(names, k) for k in ("name", "distribution", "package", "entry_point", "cls", "func")},
        "summary": f"vgrpo plugin: the {kind} {names.name}",
        "vgrpo_requirement": f"vgrpo>={major}.{minor}",
    }
    return string.Template(text).substitute(values)


def _draw(shape: str, rgb: tuple[int, int, int], path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (12, 12, IMAGE_SIZE - 12, IMAGE_SIZE - 12)
    if shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "circle":
        draw.ellipse(box, fill=rgb)
    else:
        draw.polygon(
            [(IMAGE_SIZE // 2, 12), (IMAGE_SIZE - 12, IMAGE_SIZE - 12), (12, IMAGE_SIZE - 12)], fill=rgb
        )
    image.save(path, format="PNG")


def _write_sample_data(folder: Path) -> list[Path]:
    """data/sample.jsonl and its PNG images (the first record is the task's ``example``)."""
    images = folder / "data" / "images"
    images.mkdir(parents=True)
    written, lines = [], []
    for i, (shape, color, rgb) in enumerate(_SHAPES):
        path = images / f"shape-{i}.png"
        _draw(shape, rgb, path)
        written.append(path)
        record = {
            "id": f"shape-{i}",
            "image": f"images/{path.name}",
            "question": f"What color is the {shape}?",
            "solution": color,
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        }
        lines.append(json.dumps(record))
    jsonl = folder / "data" / "sample.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [jsonl, *written]


def new_plugin(name: str, parent: str | Path = ".", *, reward_only: bool = False) -> list[Path]:
    """Write the plugin package for ``name`` into ``parent/vgrpo-<...>/``; returns the files written.

    Refuses (:class:`ParamsError`) a name that breaks :data:`NAME_RULE` and a folder that already exists.
    """
    names = plugin_names(name)
    folder = Path(parent) / names.distribution
    if folder.exists():
        raise ParamsError(f"new-plugin: {folder} already exists; choose another --dir or remove it first")
    files = _REWARD_FILES if reward_only else _TASK_FILES
    rendered = [(out.format(package=names.package), _render(tmpl, names, reward_only)) for tmpl, out in files]
    folder.mkdir(parents=True)
    written = []
    for rel, text in rendered:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    written += _write_sample_data(folder)
    log.info("new-plugin: wrote %d files to %s", len(written), folder)
    return written
