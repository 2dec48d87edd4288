"""The JSONL dataset adapter: records become validated :class:`~vgrpo.task.Sample` objects.

Record: ``{"id", "image": path | [paths], "question", "solution", "image_size"?: [W, H], ...extras}``.
Image paths are relative to the JSONL file (or ``image_root``). Each record is checked field by field
(:func:`sample_from_record`) and then whole, by its task (``Task.check_record``: extras, template fields,
solution). Errors name file, line and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vgrpo.errors import DataError
from vgrpo.task import Sample, Task, TaskParams

KNOWN_FIELDS = ("id", "image", "question", "solution", "image_size", "input_size")


def _positive(v: Any) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    except OverflowError:  # an integer too large for a float
        return False


def _size(value: Any, name: str) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_positive(v) for v in value)
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
    if read_sizes:  # training start-up: every image must be there, not only the first
        for image in images:
            if not Path(image).is_file():
                raise DataError(f"image file not found: {image!r}", field="image")
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


def jsonl_lines(text: str) -> list[str]:
    """The non-blank lines of a JSONL text, split at ``"\\n"`` only.

    ``str.splitlines`` also splits at U+2028, U+2029, U+0085 and U+001C–U+001E, which the JSON strings of a
    file written with ``ensure_ascii=False`` (completions, predictions) hold as they are: a model's completion
    may contain any of them, and splitting there would cut its row in two.
    """
    return [line for line in text.split("\n") if line.strip()]


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file: its parsed value, or the error that kept it from parsing."""

    line: int
    end: int
    """Bytes of the file read up to the end of this line (for progress bars)."""
    value: Any = None
    error: DataError | None = None


def read_jsonl_lines(path: str | Path) -> Iterator[JsonLine]:
    """Every non-blank line of a JSONL file, parsed; a bad line is yielded with its error, never raised.

    Only a file that cannot be opened raises :class:`DataError`.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", file=path) from None
    end = 0
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            end += len(raw)
            if not raw.strip():
                continue
            try:
                yield JsonLine(lineno, end, value=json.loads(raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                error = DataError(
                    f"invalid UTF-8 ({exc.reason} at byte {exc.start + 1})", file=path, line=lineno
                )
                yield JsonLine(lineno, end, error=error)
            except json.JSONDecodeError as exc:
                error = DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=lineno)
                yield JsonLine(lineno, end, error=error)
            except RecursionError:
                error = DataError("invalid JSON (nested too deeply)", file=path, line=lineno)
                yield JsonLine(lineno, end, error=error)
            except ValueError as exc:  # e.g. an integer of more digits than Python converts
                yield JsonLine(lineno, end, error=DataError(f"invalid JSON ({exc})", file=path, line=lineno))


def check_record(
    task: Task, record: Mapping[str, Any], sample: Sample, params: TaskParams
) -> DataError | None:
    """The task's whole-record check (``Task.check_record``) of a record that loaded as ``sample``; the
    problem it finds as a :class:`DataError` (no file or line yet), ``None`` when the record passes.

    Plugin code: whatever it raises is reported, never raised. A task without its own ``check_record`` is
    checked as the default does, without validating the record a second time: the prompt must render.
    """
    try:
        if getattr(type(task), "check_record", Task.check_record) is Task.check_record:
            task.build_prompt(sample, params)  # the default's solution check ran when the sample was made
        else:
            task.check_record(record, params)
    except DataError as exc:
        return DataError(exc.reason, field=exc.field)
    except ValueError as exc:
        return DataError(f"{exc} (task {task.name!r})")
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported as this record's problem
        return DataError(f"task {task.name!r}: checking the record raised {type(exc).__name__}: {exc}")
    return None


@dataclass(frozen=True)
class RecordCheck:
    """The outcome for one line of a dataset: the sample, or the problems found (file, line, field).

    ``sample`` is ``None`` when the record does not load; a record that loads but that its task's
    ``check_record`` refuses keeps its sample next to that problem (the image checks still run on it).
    """

    line: int
    end: int
    """Bytes of the file read up to the end of this line."""
    record: Any = None
    sample: Sample | None = None
    problems: tuple[DataError, ...] = ()


def iter_records(
    path: str | Path,
    task: Task,
    *,
    image_root: str | Path | None = None,
    read_sizes: bool = False,
    params: TaskParams | Mapping[str, Any] | None = None,
) -> Iterator[RecordCheck]:
    """Each record of a JSONL file validated for ``task`` (its fields, then ``task.check_record`` under
    ``params``, default: the task's defaults); the per-line loop shared by load and check."""
    path = Path(path)
    base = Path(image_root) if image_root is not None else path.parent
    params = task.params(params)
    for item in read_jsonl_lines(path):
        if item.error is not None:
            yield RecordCheck(item.line, item.end, problems=(item.error,))
            continue
        try:
            sample = sample_from_record(
                item.value, task, base_dir=base, default_id=f"{path.stem}-{item.line}", read_sizes=read_sizes
            )
        except DataError as exc:
            error = DataError(exc.reason, file=path, line=item.line, field=exc.field)
            yield RecordCheck(item.line, item.end, record=item.value, problems=(error,))
            continue
        problem = check_record(task, item.value, sample, params)
        problems = (
            ()
            if problem is None
            else (DataError(problem.reason, file=path, line=item.line, field=problem.field),)
        )
        yield RecordCheck(item.line, item.end, record=item.value, sample=sample, problems=problems)


def load_jsonl(
    path: str | Path,
    task: Task,
    *,
    image_root: str | Path | None = None,
    read_sizes: bool = False,
    params: TaskParams | Mapping[str, Any] | None = None,
) -> list[Sample]:
    """All records of a JSONL file as samples for ``task``, each checked whole by ``task.check_record``
    (under ``params``, default: the task's defaults); the first bad record raises DataError."""
    samples = []
    for result in iter_records(path, task, image_root=image_root, read_sizes=read_sizes, params=params):
        if result.problems:
            raise result.problems[0]
        assert result.sample is not None
        samples.append(result.sample)
    return samples


# -- checking a dataset up front ---------------------------------------------------------------------------
def _image_paths(record: Any, base: Path) -> tuple[str, ...]:
    """The image paths of a raw record, resolved against ``base``; () when the field itself is bad."""
    image = record.get("image") if isinstance(record, Mapping) else None
    if isinstance(image, str):
        return (str(base / image),)
    if isinstance(image, list) and all(isinstance(i, str) for i in image):
        return tuple(str(base / i) for i in image)
    return ()


#: Questions longer than this many characters are reported by ``vgrpo data check`` (training cuts them).
MAX_QUESTION_CHARS = 16_384


def probe_image(path: str | Path, *, decode: bool = False) -> tuple[tuple[int, int] | None, str | None]:
    """((W, H), None) for an image file PIL can read, else (None, what is wrong).

    ``verify()`` checks the file's structure (PNG checksums, for one) without decoding the pixels;
    ``decode=True`` decodes them too, which also catches truncated JPEGs.
    """
    from PIL import Image

    path = Path(path)
    if not path.exists():
        return None, f"image not found: {path}"
    if not path.is_file():
        return None, f"image path is not a file: {path}"
    from vgrpo.prompts import MAX_ASPECT_RATIO, MAX_DECODE_PIXELS

    try:
        with Image.open(path) as img:
            size = (int(img.width), int(img.height))
            fmt = img.format
            img.verify()
        w, h = size
        if max(w, h) > MAX_ASPECT_RATIO * max(1, min(w, h)):
            return (
                None,
                f"image {path} is {w}×{h}: aspect ratio above {MAX_ASPECT_RATIO:g}, which training skips",
            )
        if w * h > MAX_DECODE_PIXELS and fmt != "JPEG":  # a JPEG is reduced while it decodes
            return None, (
                f"image {path} is {w}×{h}: more than the {MAX_DECODE_PIXELS:,} pixels training decodes "
                "at most, so training skips it; resize it"
            )
        if decode and w * h <= MAX_DECODE_PIXELS:
            with Image.open(path) as img:
                img.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        return None, f"cannot decode image {path}: {type(exc).__name__}: {exc}"
    return size, None


def check_records(
    path: str | Path,
    task: Task,
    *,
    image_root: str | Path | None = None,
    decode: bool = False,
    params: TaskParams | Mapping[str, Any] | None = None,
) -> Iterator[RecordCheck]:
    """Like :func:`iter_records`, and also: every image exists and PIL can read it, and ``image_size``
    (when given) is the real size of the first image. Never stops at a problem."""
    path = Path(path)
    base = Path(image_root) if image_root is not None else path.parent
    seen: dict[str, tuple[tuple[int, int] | None, str | None]] = {}
    for result in iter_records(path, task, image_root=image_root, params=params):
        problems = list(result.problems)
        bad_image_field = any(p.field == "image" for p in problems)
        images = result.sample.images if result.sample is not None else _image_paths(result.record, base)
        sizes = []
        for image in () if bad_image_field else images:
            if image not in seen:
                seen[image] = probe_image(image, decode=decode)
            size, error = seen[image]
            sizes.append(size)
            if error is not None:
                problems.append(DataError(error, file=path, line=result.line, field="image"))
        question = result.sample.question if result.sample is not None else ""
        if len(question) > MAX_QUESTION_CHARS:
            problems.append(
                DataError(
                    f"{len(question):,} characters: training cuts a question to its last "
                    "generation.max_prompt_length tokens (default 4096)",
                    file=path,
                    line=result.line,
                    field="question",
                )
            )
        given = result.sample.image_size if result.sample is not None else None
        if given is not None and sizes and sizes[0] is not None and tuple(sizes[0]) != given:
            w, h = sizes[0]
            problems.append(
                DataError(
                    f"expected [{w}, {h}], the size of {images[0]}, got [{given[0]:g}, {given[1]:g}]",
                    file=path,
                    line=result.line,
                    field="image_size",
                )
            )
        yield replace(result, problems=tuple(problems))


def _record_id(result: RecordCheck) -> str | None:
    """The id a line's record has (as :class:`Sample` ids are: strings), also when the record is bad."""
    if result.sample is not None:
        return result.sample.id
    rid = result.record.get("id") if isinstance(result.record, Mapping) else None
    return str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def check_jsonl(
    path: str | Path,
    task: Task,
    *,
    image_root: str | Path | None = None,
    decode: bool = False,
    on_line: Callable[[RecordCheck], None] | None = None,
    params: TaskParams | Mapping[str, Any] | None = None,
) -> list[DataError]:
    """Every problem of a dataset file for ``task``, each naming file, line and field (``[]`` = clean),
    the task's own (``check_record`` under ``params``) included.

    Unlike :func:`load_jsonl` it does not stop at the first bad line (see :func:`check_records`); a file
    without records is a problem too, and so is an id used by an earlier line (evaluation needs unique ids;
    training does not, and :func:`load_jsonl` accepts repeats). ``on_line`` sees each line's result (for
    counting and progress bars). A file that cannot be opened raises :class:`DataError`.
    """
    problems: list[DataError] = []
    lines = 0
    first_line: dict[str, int] = {}  # id -> the line that used it first
    for result in check_records(path, task, image_root=image_root, decode=decode, params=params):
        lines += 1
        rid = _record_id(result)
        if rid is not None and rid in first_line:
            repeat = DataError(
                f"id {rid!r} already used on line {first_line[rid]}", file=path, line=result.line, field="id"
            )
            result = replace(result, problems=(*result.problems, repeat))
        elif rid is not None:
            first_line[rid] = result.line
        problems += result.problems
        if on_line is not None:
            on_line(result)
    if lines == 0:
        problems.append(DataError("expected at least one record, found none", file=path))
    return problems
