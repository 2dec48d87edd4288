"""Importing other projects' datasets as vgrpo records (``vgrpo data convert --from vlm-r1``).

VLM-R1 (om-ai-lab/VLM-R1) keeps two shapes of data, both read here, one record per JSONL line or per item of
a JSON array:

* the JSONL of ``grpo_jsonl.py``: ``{"id", "image": path | [paths], "conversations": [{"from": "human",
  "value": "<image>question"}, {"from": "gpt", "value": answer}], "accu_reward_method"?}``; the answer may sit
  inside ``<answer>…</answer>``; image paths are relative to an image folder (``--image-root``);
* the REC annotation files (``rec_jsons_processed/*.json``): ``{"image", "problem", "normal_caption",
  "solution": [x1, y1, x2, y2], "width", "height", ...}``.

The ground truth each task gets: ``rec`` a box in original-image pixels (a JSON list, ``{"bbox_2d": [...]}``
or a one-item list of such dicts), ``ovd`` a JSON list of ``{"bbox_2d", "label"}`` (```json fences allowed;
``None`` = no objects), ``count`` a whole number, ``math`` the answer text. Without ``task`` it is read per
record from ``accu_reward_method`` (``od_*``/``odLength``/``map``/``weighted_sum`` → ovd, ``math`` → math) or
else from the answer's shape (a box → rec, labelled boxes or ``None`` → ovd, a whole number → count); the file
converts as the most common one. Every converted record is validated by the task itself (its
``check_solution``) and its images must exist and decode. A line that cannot be converted is reported
with why; the others are written.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgrpo.completion import extract_answer, strip_code_fence
from vgrpo.data import probe_image, read_jsonl_lines, sample_from_record
from vgrpo.errors import DataError, ParamsError
from vgrpo.plugins import PluginRegistry, get_registry

log = logging.getLogger(__name__)

#: Formats ``convert_file`` reads.
FORMATS = ("vlm-r1",)
#: Tasks a VLM-R1 record converts to.
VLM_R1_TASKS = ("rec", "ovd", "count", "math")

_OVD_METHODS = {"od_ap", "od_ap50", "odlength", "map", "weighted_sum"}
_IMAGE = "<image>"
_REC_PREFIX = re.compile(
    r"^\s*please provide the bounding box coordinates? of the region this sentence describes:\s*",
    re.IGNORECASE,
)
#: VLM-R1's question template appends this instruction to the question; our templates add their own.
_R1_INSTRUCTION = "First output the thinking process"
_HUMAN, _GPT = ("human", "user"), ("gpt", "assistant")


@dataclass
class ConvertReport:
    """What :func:`convert_file` did: records read and written, the task, and every problem with its line."""

    source: Path
    output: Path
    task: str | None
    """The task the file converted as (``None`` when no record showed one)."""
    records: int = 0
    """Records read: non-blank JSONL lines (or items of a JSON array), good or bad."""
    converted: int = 0
    problems: list[DataError] = field(default_factory=list)
    unit: str = "line"
    """What ``DataError.line`` counts: ``line`` (JSONL) or ``item`` (a JSON array, 1-based)."""

    @property
    def failed(self) -> int:
        """Records that were not converted."""
        return self.records - self.converted


@dataclass
class _Item:
    """A VLM-R1 record taken apart; fields name where each value came from."""

    number: int
    id: Any
    images: tuple[str, ...]
    question: str
    question_field: str
    answer: Any
    answer_field: str
    placeholders: int = 0
    caption: str | None = None
    size: tuple[float, float] | None = None
    method: str | None = None


# -- reading -------------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[str, Iterator[tuple[int, Any, DataError | None]]]:
    """('line' | 'item', (number, value, parse error) per record): JSONL, or one JSON array of records."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip()
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror}", file=path) from None
    if head.startswith(b"["):
        try:
            items = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError):  # not one JSON document (UnicodeDecodeError is a ValueError)
            items = None  # JSONL whose first line is a list: read line by line below
        if isinstance(items, list):
            return "item", ((i, value, None) for i, value in enumerate(items, start=1))
    return "line", ((r.line, r.value, r.error) for r in read_jsonl_lines(path))


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _answer_text(value: Any) -> Any:
    """The answer inside ``<answer>…</answer>`` when there is one; a non-string value as it is."""
    if not isinstance(value, str):
        return value
    inner = extract_answer(value)
    text = inner if inner is not None else value.replace("<answer>", "").replace("</answer>", "")
    return text.strip()


def _take_apart(number: int, value: Any) -> _Item:
    """The parts of one VLM-R1 record; DataError (with the field) when it has neither known shape."""
    if not isinstance(value, Mapping):
        raise DataError(f"expected a JSON object, got {type(value).__name__}")
    rid = value.get("id")
    image = value.get("image")
    if image is None:
        images: tuple[str, ...] = ()
    elif isinstance(image, str):
        images = (image,)
    elif isinstance(image, list) and image and all(isinstance(i, str) for i in image):
        images = tuple(image)
    else:
        raise DataError(
            f"expected an image path or a non-empty list of paths, got {_short(image)}", field="image"
        )
    size = None
    if value.get("width") is not None or value.get("height") is not None:
        w, h = value.get("width"), value.get("height")
        if not (_positive(w) and _positive(h)):
            raise DataError(f"expected positive numbers, got width {w!r} and height {h!r}", field="width")
        size = (float(w), float(h))
    method = value.get("accu_reward_method")
    method = method if isinstance(method, str) else None
    caption = value.get("normal_caption") if isinstance(value.get("normal_caption"), str) else None

    if "conversations" in value:
        turns = value["conversations"]
        if not isinstance(turns, list):
            raise DataError(
                f"expected a list of {{from, value}} turns, got {_short(turns)}", field="conversations"
            )
        if len(turns) != 2:
            extra = " (multi-turn conversations are not supported)" if len(turns) > 2 else ""
            raise DataError(
                f"expected a human turn then a gpt turn, got {len(turns)} turn(s){extra}",
                field="conversations",
            )
        for i, (turn, roles) in enumerate(zip(turns, (_HUMAN, _GPT))):
            where = f"conversations[{i}]"
            if not isinstance(turn, Mapping) or "value" not in turn:
                raise DataError(
                    f'expected {{"from": {roles[0]!r}, "value": ...}}, got {_short(turn)}', field=where
                )
            role = turn.get("from", turn.get("role"))
            if role not in roles:
                raise DataError(f"expected from {roles[0]!r}, got {role!r}", field=f"{where}.from")
        question = turns[0]["value"]
        if not isinstance(question, str):
            raise DataError(f"expected text, got {_short(question)}", field="conversations[0].value")
        return _Item(
            number,
            rid,
            images,
            question.replace(_IMAGE, "").strip(),
            "conversations[0].value",
            _answer_text(turns[1]["value"]),
            "conversations[1].value",
            question.count(_IMAGE),
            caption,
            size,
            method,
        )
    if "solution" in value and ("problem" in value or caption is not None):
        problem = value.get("problem", "")
        if not isinstance(problem, str):
            raise DataError(f"expected text, got {_short(problem)}", field="problem")
        return _Item(
            number,
            rid,
            images,
            problem.replace(_IMAGE, "").strip(),
            "problem",
            _answer_text(value["solution"]),
            "solution",
            problem.count(_IMAGE),
            caption,
            size,
            method,
        )
    keys = sorted(value)[:12]
    raise DataError(
        "unknown format: expected VLM-R1's 'conversations' (a human and a gpt turn) or its REC annotation "
        f"fields 'problem' and 'solution'; the record has {keys}"
    )


# -- answers -------------------------------------------------------------------------------------------------
def _structured(answer: Any) -> Any:
    """A string answer read as JSON (or a Python literal), ```json fences allowed; other values as is."""
    if not isinstance(answer, str):
        return answer
    text = strip_code_fence(answer)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return answer


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    """A finite number > 0 (a huge JSON integer included, which ``math.isfinite`` cannot take)."""
    return _is_number(v) and v > 0 and (isinstance(v, int) or math.isfinite(v))


def _box(value: Any) -> Any:
    """``[x1, y1, x2, y2]`` from a bare list, ``{"bbox_2d"|"bbox": ...}`` or a one-item list of such dicts."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        value = value[0]
    if isinstance(value, Mapping):
        value = value.get("bbox_2d", value.get("bbox"))
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        return value
    return None


def _detections(value: Any, *, strict: bool) -> list[Any] | None:
    """A list of detections; ``None``/``"None"`` is no objects. ``strict``: every item is a labelled box."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
        return []
    if not isinstance(value, list):
        return None
    if strict and not all(isinstance(d, Mapping) and "bbox_2d" in d and "label" in d for d in value):
        return None
    return value


def _count(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.0*)?\s*", value):
        try:
            value = int(value.strip().split(".")[0])
        except ValueError:  # more digits than Python converts
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def _guess_task(item: _Item) -> tuple[str | None, str]:
    """(task, why) for a record without ``--task``; (None, why not) when the record does not tell."""
    if item.method is not None and item.method.lower() in _OVD_METHODS:
        return "ovd", f"accu_reward_method {item.method!r}"
    if item.method == "math":
        return "math", "accu_reward_method 'math'"
    value = _structured(item.answer)
    if item.answer == "None" or (
        isinstance(value, list) and value and _detections(value, strict=True) is not None
    ):
        return "ovd", "an answer of labelled boxes"
    if _box(value) is not None:
        return "rec", "a box answer"
    if _count(value) is not None:
        return "count", "a whole-number answer"
    return None, f"the answer {_short(item.answer)} is no box, detection list or count"


def _solution(task: str, item: _Item) -> Any:
    """The task's ground truth from the record's answer; DataError naming the answer field if it has none."""
    value = _structured(item.answer)
    where = item.answer_field
    if task == "rec":
        box = _box(value)
        if box is not None:
            return box
        if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
            return value  # a polygon [[x, y], ...]; the task checks it
        raise DataError(
            f'expected a box [x1, y1, x2, y2] or {{"bbox_2d": [x1, y1, x2, y2]}}, got {_short(item.answer)}',
            field=where,
        )
    if task == "ovd":
        found = _detections(value, strict=False)
        if found is None:
            raise DataError(
                'expected "None" or a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label": ...}, got '
                f"{_short(item.answer)}",
                field=where,
            )
        return found
    if task == "count":
        n = _count(item.answer)
        if n is None:
            raise DataError(f"expected a whole number >= 0, got {_short(item.answer)}", field=where)
        return n
    if isinstance(item.answer, str) and item.answer.strip():
        return item.answer.strip()
    if _is_number(item.answer):
        return item.answer
    raise DataError(f"expected the answer as text or a number, got {_short(item.answer)}", field=where)


def _question(task: str, item: _Item) -> str:
    """The question our template wraps: for REC the referring expression alone (VLM-R1's prefix removed)."""
    text = item.question
    cut = text.find(_R1_INSTRUCTION)
    if cut >= 0:
        text = text[:cut].rstrip()
    if task == "rec":
        if item.caption and item.caption.strip():
            return item.caption.strip()
        text = _REC_PREFIX.sub("", text).strip().rstrip(".").strip()
    if not text:
        raise DataError(
            "expected a question (a referring expression for rec), got empty text", field=item.question_field
        )
    return text


# -- one record ----------------------------------------------------------------------------------------------
def _convert(
    item: _Item, task: Any, image_root: Path, out_dir: Path
) -> tuple[dict[str, Any] | None, list[DataError]]:
    """(our record, []) or (None, every problem found)."""
    problems: list[DataError] = []
    parts: dict[str, Any] = {}
    for key, read in (("question", _question), ("solution", _solution)):
        try:
            parts[key] = read(task.name, item)
        except DataError as exc:
            problems.append(exc)

    if item.placeholders and item.placeholders != len(item.images):
        problems.append(
            DataError(
                f"expected {len(item.images)} {_IMAGE} placeholder(s), one per image, got "
                f"{item.placeholders}",
                field=item.question_field,
            )
        )
    paths, first_size = [], None
    for i, rel in enumerate(item.images):
        full = Path(rel) if Path(rel).is_absolute() else image_root / rel
        size, error = probe_image(full)
        if error is not None:
            problems.append(DataError(error, field="image"))
        elif i == 0:
            first_size = size
        paths.append(os.path.relpath(os.path.abspath(full), os.path.abspath(out_dir)))
    if item.size is not None and first_size is not None and tuple(map(float, first_size)) != item.size:
        problems.append(
            DataError(
                f"expected the size of the image, {first_size[0]} x {first_size[1]}, got width "
                f"{item.size[0]:g} and height {item.size[1]:g}",
                field="width",
            )
        )
    if problems:
        return None, problems
    record: dict[str, Any] = {} if item.id is None else {"id": item.id}
    if paths:
        record["image"] = paths[0] if len(paths) == 1 else paths
    record.update(parts)
    size = item.size or first_size
    if size is not None:
        record["image_size"] = [float(size[0]), float(size[1])]
    try:  # the task's own validation of the ground truth
        sample = sample_from_record(record, task, default_id=f"item-{item.number}")
    except DataError as exc:
        where = item.answer_field if exc.field == "solution" else exc.field
        return None, [DataError(exc.reason, field=where)]
    record["solution"] = sample.solution
    return record, []


def _unexpected(exc: Exception, path: Path, number: int) -> DataError:
    log.debug("data convert: %s record %d raised", path, number, exc_info=exc)
    return DataError(f"cannot convert: {type(exc).__name__}: {exc}", file=path, line=number)


def convert_file(
    path: str | Path,
    output: str | Path,
    *,
    source_format: str = "vlm-r1",
    task: str | None = None,
    image_root: str | Path | None = None,
    registry: PluginRegistry | None = None,
) -> ConvertReport:
    """Convert a VLM-R1 dataset file into vgrpo JSONL records at ``output``; never stops at a bad record.

    ``task`` (``rec``, ``ovd``, ``count`` or ``math``; default: read from the records) picks the ground truth;
    ``image_root`` is VLM-R1's image folder (default: the file's folder). Written image paths are relative to
    ``output``'s folder. Returns the counts and every problem (file, line, field, reason); only a file that
    cannot be read, or a bad argument, raises.
    """
    if source_format not in FORMATS:
        raise ParamsError(f"data convert: unknown format {source_format!r}; expected one of {list(FORMATS)}")
    if task is not None and task not in VLM_R1_TASKS:
        raise ParamsError(f"data convert: VLM-R1 records convert to tasks {list(VLM_R1_TASKS)}, not {task!r}")
    path, output = Path(path), Path(output)
    if output.exists() and output.resolve() == path.resolve():
        raise ParamsError(f"data convert: the output {output} is the input file; write to another file")
    registry = registry or get_registry()
    root = Path(image_root) if image_root is not None else path.parent

    unit, records = _read(path)
    report = ConvertReport(source=path, output=output, task=task, unit=unit)
    items: list[_Item] = []
    for number, value, error in records:
        report.records += 1
        if error is not None:
            report.problems.append(error)
            continue
        try:
            items.append(_take_apart(number, value))
        except DataError as exc:
            report.problems.append(DataError(exc.reason, file=path, line=number, field=exc.field))
        except Exception as exc:  # noqa: BLE001 - a record nobody foresaw is reported, never fatal
            report.problems.append(_unexpected(exc, path, number))

    guesses = {it.number: _guess_task(it) for it in items} if task is None else {}
    if task is None:
        votes = Counter(t for t, _ in guesses.values() if t is not None)
        report.task = votes.most_common(1)[0][0] if votes else None
        log.info(
            "data convert: %s converts as task %s (records per guessed task: %s)",
            path,
            report.task,
            dict(votes),
        )
    task_obj = registry.task(report.task) if report.task is not None else None

    output.parent.mkdir(parents=True, exist_ok=True)
    first_of: dict[str, int] = {}  # id -> the record number that used it first
    with output.open("w", encoding="utf-8") as out:
        for item in items:
            problems: list[DataError]
            guess, why = guesses.get(item.number, (task, ""))
            if task_obj is None or guess != report.task:
                reason = (
                    f"cannot tell the task: {why}; pass --task (one of {list(VLM_R1_TASKS)})"
                    if guess is None
                    else f"looks like a {guess} record ({why}) but the file converts as {report.task}; "
                    "pass --task or split the file"
                )
                problems = [DataError(reason)]
            else:
                try:
                    record, problems = _convert(item, task_obj, root, output.parent)
                except Exception as exc:  # noqa: BLE001 - a record nobody foresaw is reported, never fatal
                    record, problems = None, [_unexpected(exc, path, item.number)]
                if record is not None and "id" in record and str(record["id"]) in first_of:
                    first = first_of[str(record["id"])]
                    problems = [DataError(f"id {record['id']!r} is already used by {unit} {first}; ids must be "
                                          "unique (vgrpo eval resumes by id)", field="id")]  # fmt: skip
                    record = None
                if record is not None:
                    if "id" in record:
                        first_of[str(record["id"])] = item.number
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    report.converted += 1
            report.problems += [
                DataError(p.reason, file=path, line=item.number, field=p.field) for p in problems
            ]
    report.problems.sort(key=lambda p: p.line or 0)
    log.info(
        "data convert: %d of %d records of %s converted to %s", report.converted, report.records, path, output
    )
    return report
