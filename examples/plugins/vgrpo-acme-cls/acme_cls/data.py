"""Tiny images of one shape each, with candidate classes, to try ``acme.cls`` without downloading a dataset.

``python -m acme_cls.data OUT_DIR`` writes ``train.jsonl``, ``val.jsonl`` and ``images/``. Everything follows
from the seed: the same seed gives the same records (and, with the same Pillow, the same PNGs).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "pentagon", "hexagon", "star")
QUESTIONS = ("Which shape is in the image?", "What is the shape drawn here?", "Classify the shape.")
SIZE = 96


def draw_shape(kind: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    """One filled shape of ``kind`` in a random colour, size and place on a light background."""
    background = tuple(rng.randint(215, 255) for _ in range(3))
    colour = tuple(rng.randint(0, 150) for _ in range(3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = (rng.uniform(r + 2, size - r - 2) for _ in range(2))
    angle = rng.uniform(0, 360)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            theta = math.radians(angle + 36 * i)
            points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
        draw.polygon(points, fill=colour)
    else:
        sides = {"square": 4, "triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
        draw.regular_polygon((cx, cy, r), sides, rotation=angle, fill=colour)
    return img


def make_records(rng: random.Random, n: int, split: str) -> list[dict[str, Any]]:
    """``n`` records: the classes cycle (so every class appears), 3 to 5 shuffled candidates each."""
    records = []
    for i in range(n):
        solution = CLASSES[i % len(CLASSES)]
        others = rng.sample([c for c in CLASSES if c != solution], rng.randint(2, 4))
        classes = [solution, *others]
        rng.shuffle(classes)
        records.append(
            {
                "id": f"cls-{split}-{i:03d}",
                "image": f"images/{split}-{i:03d}.png",
                "question": rng.choice(QUESTIONS),
                "classes": classes,
                "solution": solution,
                "image_size": [SIZE, SIZE],
            }
        )
    return records


def write_dataset(
    out_dir: str | Path, *, n_train: int = 24, n_val: int = 12, seed: int = 0
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``val.jsonl`` and their images to ``out_dir``; returns the JSONL paths."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        records = make_records(rng, n, split)
        for record in records:
            draw_shape(record["solution"], rng).save(out / record["image"], optimize=True)
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acme_cls.data", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for train.jsonl, val.jsonl and images/")
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-val", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_dataset(args.out_dir, n_train=args.n_train, n_val=args.n_val, seed=args.seed)
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
