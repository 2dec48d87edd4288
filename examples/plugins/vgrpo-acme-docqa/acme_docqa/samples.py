"""Tiny rendered invoices and bar charts with questions, to try ``acme.docqa`` without downloading DocVQA.

``python -m acme_docqa.samples OUT_DIR`` writes ``train.jsonl``, ``val.jsonl`` and ``images/``. The records
come from a seeded RNG alone, so the same seed gives the same JSONL on any machine; the PNGs are drawn with
Pillow's default font and may differ by a few pixels between Pillow versions.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

SIZE = (240, 180)
VENDORS = (
    "Acme Supply Co.",
    "Northwind Traders",
    "Globex Ltd.",
    "Initech Inc.",
    "Umbrella Parts",
    "Hooli Office",
)
ITEMS = ("Paper A4", "Toner", "Stapler", "Pens (10)", "Folders", "Tape", "Labels", "Ink")
CATEGORIES = (
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    ("North", "South", "East", "West"),
    ("A", "B", "C", "D", "E"),
)
CHART_TITLES = ("Units sold", "Orders per region", "Tickets closed", "Visitors (k)")


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def invoice(rng: random.Random) -> tuple[dict[str, Any], list[tuple[str, list[str]]]]:
    """An invoice's fields and the (question, acceptable answers) pairs it supports."""
    lines = [
        (item, rng.randint(1, 4), rng.randint(150, 2500) / 100)
        for item in rng.sample(ITEMS, rng.randint(2, 3))
    ]
    total = sum(qty * price for _, qty, price in lines)
    doc = {
        "kind": "invoice",
        "vendor": rng.choice(VENDORS),
        "number": f"INV-{rng.randint(100, 9999):04d}",
        "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "lines": lines,
        "total": f"{total:.2f}",
    }
    questions = [
        ("What is the invoice number?", [doc["number"]]),
        ("What is the total amount?", [f"${doc['total']}", doc["total"]]),
        ("What is the date of the invoice?", [doc["date"]]),
        ("Which company issued the invoice?", [doc["vendor"]]),
    ]
    return doc, questions


def chart(rng: random.Random) -> tuple[dict[str, Any], list[tuple[str, list[str]]]]:
    """A bar chart's fields (distinct values, so the highest bar is unique) and its questions."""
    categories = rng.choice(CATEGORIES)
    categories = categories[: rng.randint(3, len(categories))]
    values = rng.sample(range(5, 100), len(categories))
    doc = {
        "kind": "chart",
        "title": rng.choice(CHART_TITLES),
        "bars": list(zip(categories, values, strict=True)),
    }
    label = rng.choice(categories)
    top = categories[values.index(max(values))]
    questions = [
        (f"What is the value of the bar labelled {label}?", [str(values[categories.index(label)])]),
        ("Which bar has the highest value?", [top]),
    ]
    return doc, questions


def render(doc: dict[str, Any]) -> Image.Image:
    """A small greyscale image of an invoice or a bar chart."""
    img = Image.new("L", SIZE, 255)
    draw = ImageDraw.Draw(img)
    small, large = _font(11), _font(14)
    width, height = SIZE
    if doc["kind"] == "invoice":
        draw.text((10, 8), doc["vendor"], font=large, fill=0)
        draw.text((10, 30), f"Invoice No: {doc['number']}", font=small, fill=0)
        draw.text((10, 44), f"Date: {doc['date']}", font=small, fill=0)
        draw.line((10, 62, width - 10, 62), fill=96)
        y = 68
        for item, qty, price in doc["lines"]:
            draw.text((10, y), item, font=small, fill=0)
            draw.text((130, y), f"{qty} x {price:.2f}", font=small, fill=0)
            y += 16
        draw.line((10, y + 2, width - 10, y + 2), fill=96)
        draw.text((10, y + 8), f"Total: ${doc['total']}", font=large, fill=0)
        return img
    draw.text((10, 6), doc["title"], font=large, fill=0)
    bars = doc["bars"]
    base, top = height - 22, 40
    slot = (width - 20) / len(bars)
    for i, (label, value) in enumerate(bars):
        x0 = 10 + i * slot + slot * 0.2
        x1 = 10 + (i + 1) * slot - slot * 0.2
        y0 = base - (base - top) * value / 100
        draw.rectangle((x0, y0, x1, base), fill=110)
        draw.text(((x0 + x1) / 2, y0 - 2), str(value), font=small, fill=0, anchor="mb")
        draw.text(((x0 + x1) / 2, base + 4), label, font=small, fill=0, anchor="mt")
    draw.line((10, base, width - 10, base), fill=0)
    return img


def make_split(rng: random.Random, n: int, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` (record, document) pairs: invoices and charts alternate, and so do their kinds of question."""
    out = []
    for i in range(n):
        doc, questions = (invoice if i % 2 == 0 else chart)(rng)
        question, answers = questions[(i // 2) % len(questions)]
        record = {
            "id": f"docqa-{split}-{i:03d}",
            "image": f"images/{split}-{i:03d}.png",
            "question": question,
            "solution": answers,
            "image_size": list(SIZE),
            "kind": doc["kind"],
        }
        out.append((record, doc))
    return out


def write_samples(
    out_dir: str | Path, *, n_train: int = 16, n_val: int = 8, seed: int = 0
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``val.jsonl`` and their images to ``out_dir``; returns the JSONL paths."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        pairs = make_split(rng, n, split)
        for record, doc in pairs:
            render(doc).save(out / record["image"], optimize=True)
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r, _ in pairs), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acme_docqa.samples", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for train.jsonl, val.jsonl and images/")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_samples(args.out_dir, n_train=args.n_train, n_val=args.n_val, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
