"""The JSONL dataset adapter: records become validated :class:`~vgrpo.task.Sample` objects.

Record: ``{"id", "image": path | [paths], "question", "solution", "image_size"?: [W, H], ...extras}``.
Image paths are relative to the JSONL file (or ``image_root``). Errors name file, line and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vgrpo.errors import DataError
from vgrpo.task import Sample, Task

KNOWN_FIELDS = ("id", "image", "question", "solution", "image_size", "input_size")


def _size(value: Any, name: str) -> tuple[float, float]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value)
    )
    if not ok:
        raise DataError(f"expected [width, height] as two positive numbers, got {value!r}", field=name)
    return float(value[0]), float(value[1])


def read_image_size(path: str | Path) -> tuple[float, float]:
    """(W, H) of an image file, reading only its header."""
    from PIL import Image

    with Image.open(path) as img:
        return float(img.width), float(img.height)


def sample_from_record(
    record: Any,
    task: Task,
    *,
    base_dir: Path | None = None,
    default_id: str = "",
    read_sizes: bool = False,
) -> Sample:
    """Validate one record for ``task``. Raises :class:`DataError` naming the field (not yet the line)."""
    if not isinstance(record, Mapping):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    rid = record.get("id", default_id)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise DataError(f"expected a string or integer id, got {rid!r}", field="id")
    question = record.get("question", "")
    if not isinstance(question, str):
        raise DataError(f"expected a string, got {type(question).__name__}", field="question")

    image = record.get("image")
    if image is None:
        images: tuple[str, ...] = ()
    elif isinstance(image, str):
        images = (image,)
    elif isinstance(image, list) and all(isinstance(i, str) for i in image):
        images = tuple(image)
    else:
        raise DataError(f"expected a path or a list of paths, got {image!r}", field="image")
    if base_dir is not None:
        images = tuple(str(base_dir / p) for p in images)

    if "solution" not in record:
        raise DataError("missing; expected the task's ground truth", field="solution")
    try:
        solution = task.check_solution(record["solution"])
    except DataError:
        raise
    except (ValueError, TypeError) as exc:
        raise DataError(f"{exc} (task {task.name!r})", field="solution") from None

    image_size = _size(record["image_size"], "image_size") if record.get("image_size") is not None else None
    input_size = _size(record["input_size"], "input_size") if record.get("input_size") is not None else None
    if image_size is None and read_sizes and images:
        try:
            image_size = read_image_size(images[0])
        except Exception as exc:  # noqa: BLE001 - any decode error is a data problem
            raise DataError(f"cannot read image {images[0]!r}: {exc}", field="image") from None

    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Sample(
        id=str(rid),
        question=question,
        solution=solution,
        images=images,
        image_size=image_size,
        input_size=input_size,
        extra=extra,
    )


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line; bad JSON raises DataError with the line."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", file=path) from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=lineno) from None


def load_jsonl(
    path: str | Path,
    task: Task,
    *,
    image_root: str | Path | None = None,
    read_sizes: bool = False,
) -> list[Sample]:
    """All records of a JSONL file as samples for ``task``; the first bad record raises DataError."""
    path = Path(path)
    base = Path(image_root) if image_root is not None else path.parent
    samples = []
    for lineno, record in iter_jsonl(path):
        try:
            samples.append(
                sample_from_record(
                    record, task, base_dir=base, default_id=f"{path.stem}-{lineno}", read_sizes=read_sizes
                )
            )
        except DataError as exc:
            raise DataError(exc.reason, file=path, line=lineno, field=exc.field) from None
    return samples
