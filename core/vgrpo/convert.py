"""Importing other projects' datasets as vgrpo records (``vgrpo data convert --from vlm-r1``).

VLM-R1 (om-ai-lab/VLM-R1) keeps two shapes of data, both read here, one record per JSONL line or per item of
a JSON array:

* the JSONL of ``grpo_jsonl.py``: ``{"id", "image": path | [paths], "conversations": [{"from": "human",
  "value": "<image>question"}, {"from": "gpt", "value": answer}], "accu_reward_method"?}``; the answer may sit
  inside ``<answer>…</answer>``; image paths are relative to an image folder (``--image-root``);
* the REC annotation files (``rec_jsons_processed/*.json``): ``{"image", "problem", "normal_caption",
  "solution": [x1, y1, x2, y2], "width", "height", ...}``.

The tasks decide what a record becomes: a task that implements :meth:`vgrpo.Task.vlm_r1_solution` imports
VLM-R1 records (the built-ins rec, ovd, count and math do, like any plugin could), ``vlm_r1_question`` gives
the question its template wraps and ``vlm_r1_match`` says how sure it is that a record is its own. Without
``task``, each record goes to the task most sure of it and the file converts as the most common one. Every
converted record is validated by the task itself (its ``check_solution``) and its images must exist and
decode. A line that cannot be converted is reported with why; the others are written.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgrpo.completion import extract_answer, strip_code_fence
from vgrpo.data import probe_image, read_jsonl_lines, sample_from_record
from vgrpo.errors import DataError, ParamsError
from vgrpo.plugins import PluginRegistry, get_registry
from vgrpo.task import Task

log = logging.getLogger(__name__)

#: Formats ``convert_file`` reads.
FORMATS = ("vlm-r1",)

_IMAGE = "<image>"
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
class VlmR1Record:
    """A VLM-R1 record taken apart, what a task's ``vlm_r1_*`` methods read; ``*_field`` name where a value
    came from (for error messages)."""

    number: int
    """The record's line (JSONL) or item (JSON array) number, from 1."""
    id: Any
    images: tuple[str, ...]
    question: str
    """The question, ``<image>`` placeholders and VLM-R1's answer-format instruction removed."""
    question_field: str
    answer: Any
    """The text inside ``<answer>…</answer>`` when there is one, else the answer as given (text or JSON)."""
    answer_field: str
    placeholders: int = 0
    caption: str | None = None
    """``normal_caption`` of a REC annotation: the referring expression alone."""
    size: tuple[float, float] | None = None
    method: str | None = None
    """``accu_reward_method``: VLM-R1's name for the reward, which often names the task."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The record as read, for fields this class does not take apart."""

    @functools.cached_property
    def value(self) -> Any:
        """The answer read as JSON or a Python literal (```json fences allowed); else the answer as it is."""
        return _structured(self.answer)

    @property
    def quoted_answer(self) -> str:
        """The answer quoted and cut to 80 characters, for "expected …, got …" messages."""
        return _short(self.answer)


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


def _take_apart(number: int, value: Any) -> VlmR1Record:
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
        return VlmR1Record(
            number,
            rid,
            images,
            _without_instruction(question.replace(_IMAGE, "").strip()),
            "conversations[0].value",
            _answer_text(turns[1]["value"]),
            "conversations[1].value",
            question.count(_IMAGE),
            caption,
            size,
            method,
            value,
        )
    if "solution" in value and ("problem" in value or caption is not None):
        problem = value.get("problem", "")
        if not isinstance(problem, str):
            raise DataError(f"expected text, got {_short(problem)}", field="problem")
        return VlmR1Record(
            number,
            rid,
            images,
            _without_instruction(problem.replace(_IMAGE, "").strip()),
            "problem",
            _answer_text(value["solution"]),
            "solution",
            problem.count(_IMAGE),
            caption,
            size,
            method,
            value,
        )
    keys = sorted(value)[:12]
    raise DataError(
        "unknown format: expected VLM-R1's 'conversations' (a human and a gpt turn) or its REC annotation "
        f"fields 'problem' and 'solution'; the record has {keys}"
    )


# -- answers ----------------------------------------------------------------------------------------------
def _without_instruction(question: str) -> str:
    """The question without VLM-R1's answer-format instruction (our templates add their own)."""
    cut = question.find(_R1_INSTRUCTION)
    return question[:cut].rstrip() if cut >= 0 else question


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


def _positive(v: Any) -> bool:
    """A finite number > 0 (a huge JSON integer included, which ``math.isfinite`` cannot take)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return number and v > 0 and (isinstance(v, int) or math.isfinite(v))


def vlm_r1_tasks(registry: PluginRegistry) -> dict[str, Task]:
    """The installed tasks VLM-R1 records convert to (they implement ``vlm_r1_solution``), by name."""
    return {n: t for n, t in registry.tasks.items() if type(t).vlm_r1_solution is not Task.vlm_r1_solution}


def _guess_task(record: VlmR1Record, tasks: Mapping[str, Task]) -> tuple[str | None, str]:
    """(task, why) for a record without ``--task``: the task most sure of it; (None, why not) when no task
    claims it or two are equally sure."""
    claims: list[tuple[float, str, str]] = []
    for name, task in tasks.items():
        match = task.vlm_r1_match(record)
        if match is not None and float(match[0]) > 0:
            claims.append((float(match[0]), name, str(match[1])))
    if not claims:
        return None, f"no task recognises the answer {record.quoted_answer}"
    best = max(score for score, _, _ in claims)
    top = [(name, why) for score, name, why in claims if score == best]
    if len(top) > 1:
        return None, "it looks like " + " and like ".join(f"{name} ({why})" for name, why in top)
    return top[0]


def _question(task: Task, record: VlmR1Record) -> str:
    """The question the task's template wraps; DataError naming the question field when there is none."""
    try:
        text = task.vlm_r1_question(record)
    except (ValueError, TypeError) as exc:
        raise DataError(str(exc), field=record.question_field) from None
    if not isinstance(text, str):
        raise DataError(f"expected the question as text, got {_short(text)}", field=record.question_field)
    if not text.strip():
        raise DataError("expected a question, got empty text", field=record.question_field)
    return text


def _solution(task: Task, record: VlmR1Record) -> Any:
    """The task's ground truth from the record's answer; DataError naming the answer field if it has none."""
    try:
        return task.vlm_r1_solution(record)
    except (ValueError, TypeError) as exc:
        raise DataError(str(exc), field=record.answer_field) from None


# -- one record ----------------------------------------------------------------------------------------------
def _convert(
    item: VlmR1Record, task: Task, image_root: Path, out_dir: Path
) -> tuple[dict[str, Any] | None, list[DataError]]:
    """(our record, []) or (None, every problem found)."""
    problems: list[DataError] = []
    parts: dict[str, Any] = {}
    for key, read in (("question", _question), ("solution", _solution)):
        try:
            parts[key] = read(task, item)
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


def _guesses(
    items: list[VlmR1Record], tasks: Mapping[str, Task], path: Path
) -> dict[int, tuple[str | None, str]]:
    """(task, why) per record number; a task's ``vlm_r1_match`` that raises leaves its record unclaimed."""
    out: dict[int, tuple[str | None, str]] = {}
    for item in items:
        try:
            out[item.number] = _guess_task(item, tasks)
        except Exception as exc:  # noqa: BLE001 - plugin code: the record is reported, never fatal
            log.debug("data convert: %s record %d: vlm_r1_match raised", path, item.number, exc_info=exc)
            out[item.number] = (None, f"a task's vlm_r1_match raised {type(exc).__name__}: {exc}")
    return out


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

    ``task`` (an installed task that imports VLM-R1 records, see :func:`vlm_r1_tasks`; default: read from the
    records) picks the ground truth; ``image_root`` is VLM-R1's image folder (default: the file's folder).
    Written image paths are relative to ``output``'s folder. Returns the counts and every problem (file, line,
    field, reason); only a file that cannot be read, or a bad argument, raises.
    """
    if source_format not in FORMATS:
        raise ParamsError(f"data convert: unknown format {source_format!r}; expected one of {list(FORMATS)}")
    registry = registry or get_registry()
    tasks = vlm_r1_tasks(registry)
    if task is not None and task not in tasks:
        raise ParamsError(f"data convert: VLM-R1 records convert to tasks {list(tasks)}, not {task!r}")
    path, output = Path(path), Path(output)
    if output.exists() and output.resolve() == path.resolve():
        raise ParamsError(f"data convert: the output {output} is the input file; write to another file")
    root = Path(image_root) if image_root is not None else path.parent

    unit, records = _read(path)
    report = ConvertReport(source=path, output=output, task=task, unit=unit)
    with contextlib.redirect_stdout(sys.stderr):  # plugin code: whatever it prints, stdout stays ours
        _convert_records(report, records, tasks, root)
    report.problems.sort(key=lambda p: p.line or 0)
    log.info(
        "data convert: %d of %d records of %s converted to %s", report.converted, report.records, path, output
    )
    return report


def _convert_records(
    report: ConvertReport,
    records: Iterator[tuple[int, Any, DataError | None]],
    tasks: Mapping[str, Task],
    root: Path,
) -> None:
    """Take the records apart, pick the task (``report.task``, else the most common guess), write the good."""
    path, output, task, unit = report.source, report.output, report.task, report.unit
    items: list[VlmR1Record] = []
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

    guesses = _guesses(items, tasks, path) if task is None else {}
    if task is None:
        votes = Counter(t for t, _ in guesses.values() if t is not None)
        report.task = votes.most_common(1)[0][0] if votes else None
        log.info(
            "data convert: %s converts as task %s (records per guessed task: %s)",
            path,
            report.task,
            dict(votes),
        )
    task_obj = tasks[report.task] if report.task is not None else None

    output.parent.mkdir(parents=True, exist_ok=True)
    first_of: dict[str, int] = {}  # id -> the record number that used it first
    with output.open("w", encoding="utf-8") as out:
        for item in items:
            problems: list[DataError]
            guess, why = guesses.get(item.number, (task, ""))
            if task_obj is None or guess != report.task:
                reason = (
                    f"cannot tell the task: {why}; pass --task (one of {list(tasks)})"
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
                    problems = [
                        DataError(
                            f"id {record['id']!r} is already used by {unit} {first}; ids must be unique "
                            "(vgrpo eval resumes by id)",
                            field="id",
                        )
                    ]
                    record = None
                if record is not None:
                    if "id" in record:
                        first_of[str(record["id"])] = item.number
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    report.converted += 1
            report.problems += [
                DataError(p.reason, file=path, line=item.number, field=p.field) for p in problems
            ]
