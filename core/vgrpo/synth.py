"""Synthetic datasets (``vgrpo data synth``): drawn scenes of shapes with exact ground truth, and the records
that tasks make from them.

A scene is a canvas with a few coloured circles, squares and triangles that never touch; each shape's box is
read back from the pixels drawn, so boxes, labels and counts are exact. The core draws the scenes; each task
that implements :meth:`vgrpo.Task.synth_record` turns a :class:`SynthItem` (a scene, drawn on first use and
shared by every task, or only a random stream for a text-only task) into one of its records. Everything
follows from the seed: the same settings give byte-identical JSONL and PNG files.

Layout written by :func:`synthesize`::

    OUT_DIR/synth.json              manifest: generator version, settings, files, record counts
    OUT_DIR/scenes.jsonl            ground truth of every scene (image, size, shapes with label and box)
    OUT_DIR/images/<split>-NNNNN.png
    OUT_DIR/<task>/train.jsonl      records in vgrpo's format; images are relative to the file
    OUT_DIR/<task>/val.jsonl
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from vgrpo.errors import DataError, ParamsError, PluginError

if TYPE_CHECKING:
    from vgrpo.plugins import PluginRegistry
    from vgrpo.task import Task

log = logging.getLogger(__name__)

#: Bumped whenever the same settings would produce different files; a manifest with another version is stale.
SYNTH_VERSION = 1
MANIFEST = "synth.json"
SCENES = "scenes.jsonl"
COLOURS: Mapping[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 30),
}
KINDS = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
LABELS = tuple(f"{c} {k}" for c in COLOURS for k in KINDS)
MIN_SIDE = 64
_GAP = 3  # pixels kept free between the boxes of two shapes


# -- scenes -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """One drawn shape. ``box`` is tight around its pixels: columns ``x1 … x2-1``, rows ``y1 … y2-1``."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """A drawn canvas and its exact ground truth."""

    name: str
    width: int
    height: int
    shapes: tuple[Shape, ...]

    def count(self, *, colour: str | None = None, kind: str | None = None) -> int:
        """How many shapes have this colour and/or kind."""
        return sum(
            (colour is None or s.colour == colour) and (kind is None or s.kind == kind) for s in self.shapes
        )

    def to_json(self, image: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": image,
            "image_size": [self.width, self.height],
            "shapes": [
                {"label": s.label, "kind": s.kind, "colour": s.colour, "bbox_2d": list(s.box)}
                for s in self.shapes
            ],
        }


def _rng(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible stream per (seed, split, task, index): string seeds hash with SHA-512."""
    return random.Random(":".join(["vgrpo-synth", str(seed), *map(str, parts)]))


def _outline(kind: str, x: int, y: int, s: int) -> tuple[str, Any]:
    if kind == "circle":
        return "ellipse", (x, y, x + s, y + s)
    if kind == "square":
        return "rectangle", (x, y, x + s, y + s)
    return "polygon", [(x + s // 2, y), (x + s, y + s), (x, y + s)]


def _draw(draw: ImageDraw.ImageDraw, kind: str, xy: Any, fill: Any) -> None:
    getattr(draw, kind)(xy, fill=fill)


def _disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def draw_scene(
    seed: int, split: str, index: int, size: tuple[int, int] = (224, 224), *, max_shapes: int = 6
) -> tuple[Image.Image, Scene]:
    """Draw scene ``index`` of ``split``: 1 to ``max_shapes`` non-touching shapes on a white canvas.

    Each scene draws its colours and kinds from a small palette, so repeated labels (two red circles) are
    common; a scene is redrawn until at least one shape can be named unambiguously (for ``rec``).
    """
    width, height = size
    rng = _rng(seed, split, "scene", index)
    side = min(width, height)
    smin, smax = max(8, side * 10 // 100), max(10, side * 22 // 100)
    while True:
        colours = rng.sample(sorted(COLOURS), rng.randint(1, 3))
        kinds = rng.sample(KINDS, rng.randint(1, 3))
        image = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        shapes: list[Shape] = []
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(min(2, max_shapes), max_shapes)):
            kind, colour = rng.choice(kinds), rng.choice(colours)
            for _attempt in range(40):
                s = rng.randint(smin, smax)
                x, y = rng.randint(1, width - s - 2), rng.randint(1, height - s - 2)
                nominal = (x, y, x + s + 1, y + s + 1)  # PIL fills both end points
                if all(_disjoint(nominal, t, _GAP) for t in taken):
                    break
            else:
                continue
            method, xy = _outline(kind, x, y, s)
            mask = Image.new("1", (width, height), 0)
            _draw(ImageDraw.Draw(mask), method, xy, 1)
            box = mask.getbbox()
            if box is None:  # pragma: no cover - every shape is at least 8 pixels wide
                continue
            _draw(draw, method, xy, COLOURS[colour])
            taken.append(nominal)
            shapes.append(Shape(kind, colour, (box[0], box[1], box[2], box[3])))
        scene = Scene(f"{split}-{index:05d}", width, height, tuple(shapes))
        if shapes and referring_expressions(scene):
            return image, scene


def referring_expressions(scene: Scene) -> list[tuple[int, str]]:
    """(shape index, phrase) for each shape a phrase picks out alone: "the blue square" when its label is
    unique, else by position among shapes of its label, when its box lies wholly beyond all theirs
    ("the red circle on the left" for two, "the leftmost red circle" for more)."""
    out = []
    for i, shape in enumerate(scene.shapes):
        others = [o.box for j, o in enumerate(scene.shapes) if j != i and o.label == shape.label]
        if not others:
            out.append((i, f"the {shape.label}"))
            continue
        x1, y1, x2, y2 = shape.box
        two = len(others) == 1
        sides = (
            (all(x2 <= o[0] for o in others), "on the left", "leftmost"),
            (all(x1 >= o[2] for o in others), "on the right", "rightmost"),
            (all(y2 <= o[1] for o in others), "at the top", "topmost"),
            (all(y1 >= o[3] for o in others), "at the bottom", "bottommost"),
        )
        for holds, pair, superlative in sides:
            if holds:
                out.append((i, f"the {shape.label} {pair}" if two else f"the {superlative} {shape.label}"))
    return out


# -- what a task makes a record from ------------------------------------------------------------------------
@dataclass
class SynthItem:
    """One record slot of a synthetic dataset, handed to :meth:`vgrpo.Task.synth_record`.

    ``rng`` is the task's own stream for this slot (seeded by seed, split, task and index), so one task's
    records never change when another task is added. ``scene`` and ``image`` draw the slot's scene on first
    use; every task of the slot shares it (one image per scene), and a text-only task that never asks for it
    writes no image.
    """

    split: str
    index: int
    rng: random.Random
    _draw: Callable[[], tuple[Scene, str]] = field(repr=False)

    @property
    def name(self) -> str:
        """``<split>-<index>``, e.g. ``train-00007``: the scene's name, for record ids."""
        return f"{self.split}-{self.index:05d}"

    @property
    def scene(self) -> Scene:
        """The slot's scene of shapes with exact boxes (drawn and saved on first use)."""
        return self._draw()[0]

    @property
    def image(self) -> str:
        """The scene's image path relative to the task's JSONL file (``../images/<name>.png``)."""
        return self._draw()[1]


def synth_tasks(registry: PluginRegistry) -> dict[str, Task]:
    """The installed tasks that make synthetic records (they implement ``synth_record``), by name."""
    from vgrpo.task import Task

    return {n: t for n, t in registry.tasks.items() if type(t).synth_record is not Task.synth_record}


# -- the dataset --------------------------------------------------------------------------------------------
def _settings(
    n_per_task: int, n_val: int, tasks: Sequence[str], seed: int, size: tuple[int, int], max_shapes: int
) -> dict[str, Any]:
    return {
        "seed": seed,
        "n_per_task": n_per_task,
        "n_val": n_val,
        "tasks": list(tasks),
        "image_size": list(size),
        "max_shapes": max_shapes,
    }


def _check_args(
    n_per_task: Any, n_val: Any, tasks: Any, seed: Any, image_size: Any, max_shapes: Any, known: Sequence[str]
) -> tuple[list[str], tuple[int, int]]:
    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(n_per_task) or n_per_task < 1:
        raise ParamsError(f"n_per_task: expected a positive integer, got {n_per_task!r}")
    if not integer(n_val) or n_val < 0:
        raise ParamsError(f"n_val: expected a non-negative integer, got {n_val!r}")
    if not integer(seed):
        raise ParamsError(f"seed: expected an integer, got {seed!r}")
    if not integer(max_shapes) or not 1 <= max_shapes <= 12:
        raise ParamsError(f"max_shapes: expected an integer from 1 to 12, got {max_shapes!r}")
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names = [t.strip() for t in tasks if isinstance(t, str) and t.strip()]
    unknown = [t for t in tasks if not isinstance(t, str) or t.strip() not in known]
    if unknown or not names:
        raise ParamsError(
            f"tasks: expected some of the tasks that make synthetic data, {list(known)}, got {list(tasks)!r}"
        )
    names = list(dict.fromkeys(names))
    size = (image_size, image_size) if integer(image_size) else image_size
    pair = isinstance(size, (tuple, list)) and len(size) == 2
    if not (pair and all(integer(v) and v >= MIN_SIDE for v in size)):
        raise ParamsError(
            f"image_size: expected an integer ≥ {MIN_SIDE} or [width, height], got {image_size!r}"
        )
    return names, (int(size[0]), int(size[1]))


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a synthesized folder, or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reusable(out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Path] | None:
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("version") != SYNTH_VERSION or manifest.get("settings") != settings:
        return None
    try:
        files = {t: [out_dir / f for f in info["files"].values()] for t, info in manifest["tasks"].items()}
    except (KeyError, TypeError, AttributeError):
        return None
    if not all(f.is_file() for fs in files.values() for f in fs):
        return None
    return {task: out_dir / task / "train.jsonl" for task in settings["tasks"]}


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def synthesize(
    out_dir: str | Path,
    *,
    n_per_task: int = 200,
    n_val: int | None = None,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] = 224,
    max_shapes: int = 6,
    reuse: bool = False,
    registry: PluginRegistry | None = None,
) -> dict[str, Path]:
    """Write a synthetic dataset to ``out_dir``; returns each task's ``train.jsonl`` (``val.jsonl`` by it).

    ``tasks``: names of installed tasks that make synthetic records (default: all of them, by name).
    ``n_per_task`` train records per task and ``n_val`` (default a tenth, at least 1; 0 = no val file)
    validation records, from disjoint scenes. The scene tasks share one image per scene. With ``reuse``, a
    folder whose manifest records the same generator version and settings is returned as it is.
    """
    from vgrpo.plugins import get_registry

    makers = synth_tasks(registry or get_registry())
    if n_val is None:
        n_val = max(1, n_per_task // 10) if isinstance(n_per_task, int) else 0
    tasks = list(makers) if tasks is None else tasks
    names, size = _check_args(n_per_task, n_val, tasks, seed, image_size, max_shapes, list(makers))
    settings = _settings(n_per_task, n_val, names, seed, size, max_shapes)
    out = Path(out_dir)
    if reuse and (paths := _reusable(out, settings)) is not None:
        log.info("reusing the synthetic dataset in %s", out)
        return paths
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # a folder without a manifest is never reused
        return _write_dataset(out, settings, {n: makers[n] for n in names}, size, seed, max_shapes)
    except OSError as exc:
        reason = f"cannot write the synthetic dataset: {exc.strerror or exc}"
        raise DataError(reason, file=exc.filename or out) from None


def _write_dataset(
    out: Path,
    settings: dict[str, Any],
    tasks: dict[str, Task],
    size: tuple[int, int],
    seed: int,
    max_shapes: int,
) -> dict[str, Path]:
    splits = {"train": settings["n_per_task"], "val": settings["n_val"]}
    records: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {s: [] for s in splits if splits[s]} for t in tasks
    }
    scenes: list[dict[str, Any]] = []

    def drawer(split: str, index: int) -> Callable[[], tuple[Scene, str]]:
        drawn: list[tuple[Scene, str]] = []

        def draw() -> tuple[Scene, str]:
            if not drawn:
                image, scene = draw_scene(seed, split, index, size, max_shapes=max_shapes)
                rel = f"images/{scene.name}.png"
                (out / "images").mkdir(exist_ok=True)
                image.save(out / rel, format="PNG")
                scenes.append(scene.to_json(rel))
                drawn.append((scene, f"../{rel}"))
            return drawn[0]

        return draw

    with contextlib.redirect_stdout(sys.stderr):  # plugin code: whatever it prints, stdout stays ours
        for split, n in splits.items():
            for index in range(n):
                draw = drawer(split, index)
                for name, task in tasks.items():
                    record = task.synth_record(SynthItem(split, index, _rng(seed, split, name, index), draw))
                    if not isinstance(record, Mapping):
                        raise PluginError(
                            f"task {name!r}: synth_record returned {type(record).__name__} for {split} item "
                            f"{index}; expected a JSONL record (a dict)"
                        )
                    records[name][split].append(dict(record))
    manifest_tasks = {}
    for task in tasks:
        files, counts = {}, {}
        for split, rows in records[task].items():
            rel = f"{task}/{split}.jsonl"
            counts[split] = _write_jsonl(out / rel, rows)
            files[split] = rel
        manifest_tasks[task] = {"files": files, "records": counts}
    if scenes:
        _write_jsonl(out / SCENES, scenes)
    manifest = {
        "generator": "vgrpo.synth",
        "version": SYNTH_VERSION,
        "settings": settings,
        "tasks": manifest_tasks,
        "images": len(scenes),
        "scenes": SCENES if scenes else None,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {task: out / task / "train.jsonl" for task in tasks}
