"""Contract checks: run a task or a reward through everything vgrpo relies on, and report every violation.

vgrpo calls plugin code on whatever a model writes, so a parser or reward must be total: never raise, always
return something valid. These checks feed a task adversarial completions (:mod:`vgrpo.testing._fuzz`) and
collect all problems before failing, grouped by kind with a count and a first example, so one run shows
everything to fix.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from vgrpo.data import check_record, sample_from_record
from vgrpo.errors import ParamsError
from vgrpo.rewards import Reward, RewardFailure
from vgrpo.task import Sample, Task, TaskParams, call_parse
from vgrpo.testing._fuzz import fuzz_completions
from vgrpo.testing._reference import check_reference
from vgrpo.validation import validate_task

log = logging.getLogger(__name__)

#: A dataset record (a JSONL line as a dict) or an already validated sample.
Record = Mapping[str, Any] | Sample
#: A record, or a record paired with a correct completion for it.
Example = Record | tuple[Record, str]

#: A parser slower than this on one completion is reported (parsers must be linear-time).
SLOW_PARSE_S = 1.0
_BATCH = 64
_ROLES = ("system", "user", "assistant")


class _Violations:
    """Problems grouped by kind: each kind is reported once, with its first example and a count."""

    def __init__(self) -> None:
        self._kinds: dict[str, list[Any]] = {}

    def add(self, kind: str, detail: str = "") -> None:
        entry = self._kinds.setdefault(kind, [0, detail])
        entry[0] += 1

    def raise_if_any(self, subject: str) -> None:
        if not self._kinds:
            return
        lines = []
        for kind, (count, detail) in self._kinds.items():
            more = f" [{count - 1} more case(s) like it]" if count > 1 else ""
            lines.append(f"  - {kind}" + (f" {detail}" if detail else "") + more)
        raise AssertionError(
            f"{subject} breaks the vgrpo contract ({len(lines)} problem(s)):\n" + "\n".join(lines)
        )


def _short(value: Any, limit: int = 70) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an object whose repr fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 20]}…{text[-12:]} ({len(text):,} chars)"


def _params_note(params: BaseModel, defaults: BaseModel) -> str:
    diff = {k: v for k, v in params.model_dump().items() if v != getattr(defaults, k, None)}
    return f" with params {diff}" if diff else ""


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# -- params -----------------------------------------------------------------------------------------------
def _params_variants(
    task: Task, extra: Iterable[Mapping[str, Any]], v: _Violations
) -> list[TaskParams] | None:
    """The defaults, each bool flipped, each other Literal choice, and ``extra``; ``None`` when unusable."""
    model = task.Params
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None  # the registration check reports it
    if any(f.is_required() for f in model.model_fields.values()):
        return None  # likewise
    try:
        defaults = model()
    except Exception as exc:  # noqa: BLE001 - a validator of the plugin's
        v.add("params: the Params model fails with its defaults:", _exc(exc))
        return None
    try:  # pydantic does not validate defaults unless asked; a default that breaks a constraint surfaces here
        model.model_validate(defaults.model_dump())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        v.add("params: a default value does not validate:", problems)
    try:
        json.dumps(defaults.model_dump(mode="json"), allow_nan=False)
        model.model_json_schema()
    except Exception as exc:  # noqa: BLE001
        v.add(
            "params: defaults or schema are not JSON (configs and `vgrpo tasks show` need both):", _exc(exc)
        )

    variants = [defaults]
    for name, info in model.model_fields.items():
        default = getattr(defaults, name)
        if info.annotation is bool:
            choices: list[Any] = [not default]
        elif get_origin(info.annotation) is Literal:
            choices = [c for c in get_args(info.annotation) if c != default]
        else:
            continue
        for choice in choices:
            try:
                variants.append(model(**{name: choice}))
            except Exception:  # noqa: BLE001,S112 - a model validator may forbid the combination
                continue
    for values in extra:
        try:
            variants.append(task.params(values))
        except ParamsError as exc:
            v.add("params: a params mapping given to check_task does not validate:", str(exc))
    return variants


# -- examples ----------------------------------------------------------------------------------------------
def _examples(
    task: Task, examples: Iterable[Example] | None, v: _Violations
) -> list[tuple[Sample, str | None]]:
    """(sample, correct completion or None) for the task's example and each given example."""
    items: list[tuple[str, Any]] = [("task.example", (task.example, task.example_completion or None))]
    items += [(f"examples[{i}]", item) for i, item in enumerate(examples or ())]
    out = []
    for where, item in items:
        record, completion = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
        if completion is not None and not isinstance(completion, str):
            v.add(
                "examples: a completion paired with a record must be a string,", f"got {_short(completion)}"
            )
            completion = None
        if isinstance(record, Sample):
            out.append((record, completion))
            continue
        try:
            sample = sample_from_record(record, task, default_id=where)
        except Exception as exc:  # noqa: BLE001 - whatever check_solution raised
            v.add("examples: a record does not load:", f"{where} {_short(record)}: {exc}")
            continue
        _check_whole_record(task, where, record, sample, v)
        out.append((sample, completion))
    return out


def _check_whole_record(task: Task, where: str, record: Any, sample: Sample, v: _Violations) -> None:
    """The task's own ``check_record`` (default params) passes on an example record, as the loaders require.
    (The default's checks, the solution and the template, are the load and template checks here.)"""
    if type(task).check_record is Task.check_record:
        return
    try:
        params = task.params()
    except Exception:  # noqa: BLE001 - the params check reports it
        return
    problem = check_record(task, record, sample, params)
    if problem is not None:
        v.add(
            "examples: the task's check_record refuses a record (data check and the loaders would):",
            f"{where} {_short(record)}: {problem}",
        )


# -- template ------------------------------------------------------------------------------------------------
def _message_problem(messages: Any, sample: Sample) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"expected a non-empty list of chat messages, got {_short(messages)}"
    images, texts = 0, []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"expected messages {{'role': one of {list(_ROLES)}, 'content': ...}}, got {_short(m)}"
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            return f"expected content as a string or a list of parts, got {_short(content)}"
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                images += 1
            elif kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                expected = "{'type': 'text', 'text': str} or {'type': 'image', ...}"
                return f"expected content parts {expected}, got {_short(part)}"
    if not any(m["role"] == "user" for m in messages):
        return "there is no user message"
    if not "".join(texts).strip():
        return "the prompt has no text"
    if images != len(sample.images):
        return (
            f"{images} image slot(s) for a sample with {len(sample.images)} image(s); expected one per image"
        )
    return None


def _check_template(
    task: Task, samples: Sequence[Sample], variants: Sequence[TaskParams], v: _Violations
) -> None:
    for sample in samples:
        for params in variants:
            where = f"on sample {sample.id!r}{_params_note(params, variants[0])}"
            try:
                messages = task.build_prompt(sample, params)
            except Exception as exc:  # noqa: BLE001
                v.add(f"template: the prompt does not render ({type(exc).__name__})", f"{where}: {exc}")
                continue
            problem = _message_problem(messages, sample)
            if problem:
                v.add(f"template: build_prompt returns bad messages: {problem}", where)


# -- parser --------------------------------------------------------------------------------------------------
def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return _exc(exc)
    return None


def _check_parser(
    task: Task,
    completions: Sequence[str],
    samples: Sequence[Sample],
    variants: Sequence[TaskParams],
    v: _Violations,
) -> list[list[Any]]:
    """Parse every completion (the k-th for ``samples[k % len(samples)]``, given to a parser that asks for
    its sample) with every params variant; the parsed values (``None`` where it raised)."""
    out = []
    for params in variants:
        note = _params_note(params, variants[0])
        parsed = []
        for k, c in enumerate(completions):
            start = time.perf_counter()
            try:
                value = call_parse(task, c, params, samples[k % len(samples)])
            except Exception as exc:  # noqa: BLE001
                v.add(f"parser: parse() raised {type(exc).__name__}", f"on {_short(c)}{note}: {exc}")
                parsed.append(None)
                continue
            took = time.perf_counter() - start
            if took > SLOW_PARSE_S:
                v.add(
                    "parser: parse() is too slow (it must be linear in the completion length):",
                    f"{took:.1f} s on {_short(c)}{note}",
                )
            problem = _json_problem(value)
            if problem:
                v.add(
                    "parser: parse() returned a value that is not strict JSON:",
                    f"{_short(value)} on {_short(c)}{note} ({problem})",
                )
                value = None
            parsed.append(value)
        out.append(parsed)
    return out


# -- rewards -------------------------------------------------------------------------------------------------
def _value_problem(reward: Reward, value: Any) -> tuple[str, str] | None:
    """(kind, detail) when a reward value breaks the contract."""
    if isinstance(value, RewardFailure):
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        return "returned a non-number", f"{_short(value)}"
    try:
        number = float(value)
    except Exception as exc:  # noqa: BLE001
        return "returned a value float() rejects", f"{_short(value)} ({exc})"
    if not math.isfinite(number):
        return "returned a non-finite value", f"{number}"
    lo, hi = reward.range
    if number < lo or number > hi:
        return f"went outside its declared range [{lo:g}, {hi:g}]:", f"{number:g}"
    return None


def _reward_outputs(
    reward: Reward,
    parsed: Sequence[Any],
    samples: Sequence[Sample],
    params: BaseModel,
    completions: Sequence[str],
) -> tuple[list[Any], Exception | None]:
    """The reward's value for each item, or the exception it raised for that item; and the exception of a
    batched reward that raised on the whole batch but on no item alone (scoring retries item by item too,
    so such a reward silently loses its batching)."""
    batch_error = None
    if reward.batched:
        try:
            return list(reward(parsed, samples, params, completions)), None
        except Exception as exc:  # find the items that fail, one by one
            if len(parsed) == 1:
                raise
            batch_error = exc
    out: list[Any] = []
    for i in range(len(parsed)):
        try:
            out.append(reward(parsed[i : i + 1], samples[i : i + 1], params, completions[i : i + 1])[0])
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    if any(isinstance(x, Exception) for x in out):
        batch_error = None
    return out, batch_error


def _check_reward_values(
    reward: Reward,
    items: Sequence[tuple[Any, Sample, str]],
    params: BaseModel,
    note: str,
    v: _Violations,
) -> None:
    for start in range(0, len(items), _BATCH):
        chunk = items[start : start + _BATCH]
        parsed, samples, completions = (list(x) for x in zip(*chunk))
        try:
            values, batch_error = _reward_outputs(reward, parsed, samples, params, completions)
        except Exception as exc:  # noqa: BLE001 - a batched reward that raised on a single item
            values, batch_error = [exc], None
        if batch_error is not None:
            v.add(
                f"reward {reward.name!r} raised {type(batch_error).__name__} on a whole batch, not on its items "
                "one by one:",
                f"a batch of {len(chunk)}{note}: {str(batch_error)[:300]}",
            )
        for (p, s, c), value in zip(chunk, values):
            where = f"on {_short(c)} (parsed {_short(p, 40)}, sample {s.id!r}){note}"
            if isinstance(value, Exception):
                v.add(f"reward {reward.name!r} raised {type(value).__name__}", f"{where}: {value}")
                continue
            problem = _value_problem(reward, value)
            if problem:
                kind, detail = problem
                v.add(f"reward {reward.name!r} {kind}", f"{detail} {where}")


def _check_rewards(
    task: Task,
    completions: Sequence[str],
    parsed: Sequence[Sequence[Any]],
    pairs: Sequence[tuple[Sample, str | None]],
    variants: Sequence[TaskParams],
    v: _Violations,
) -> None:
    rewards = [r for r in task.rewards if isinstance(r, Reward)]
    samples = [s for s, _ in pairs]
    for reward in rewards:
        if not reward.description.strip():
            v.add(f"reward {reward.name!r} has no description:", "give its function a docstring")
    for params, values in zip(variants, parsed):
        note = _params_note(params, variants[0])
        items = [(values[k], samples[k % len(samples)], c) for k, c in enumerate(completions)]
        for sample, completion in pairs:  # each example with its own correct completion
            if completion is not None:
                items.append((_safe_parse(task, completion, params, sample), sample, completion))
        for reward in rewards:
            _check_reward_values(reward, items, params, note, v)


def _safe_parse(task: Task, completion: str, params: TaskParams, sample: Sample) -> Any:
    try:
        return call_parse(task, completion, params, sample)
    except Exception:  # noqa: BLE001 - reported by the parser check
        return None


# -- metric --------------------------------------------------------------------------------------------------
def _run_metric(
    task: Task, predictions: list[Any], samples: list[Sample], params: TaskParams, what: str, v: _Violations
) -> dict[str, float] | None:
    try:
        values = task.metric(predictions, samples, params)
    except Exception as exc:  # noqa: BLE001
        v.add(f"metric: metric() raised {type(exc).__name__} {what}:", str(exc)[:300])
        return None
    if not isinstance(values, Mapping):
        v.add(f"metric: metric() returned {type(values).__name__} {what},", "expected a dict {name: float}")
        return None
    missing = [n for n in task.metric_names if n not in values]
    if missing:
        v.add(
            f"metric: metric() {what} lacks {missing}, declared in metric_names;",
            f"it returned {list(values)}",
        )
    bad = {k: x for k, x in values.items() if not _is_finite_number(x)}
    if bad:
        v.add(f"metric: metric() {what} returned values that are not finite numbers:", _short(bad, 200))
    return dict(values)


def _is_finite_number(x: Any) -> bool:
    try:
        return not isinstance(x, (str, bytes, bool)) and math.isfinite(float(x))
    except Exception:  # noqa: BLE001
        return False


def _check_metric(
    task: Task,
    pairs: Sequence[tuple[Sample, str | None]],
    fuzz_parsed: Sequence[Any],
    params: TaskParams,
    metric_best: Mapping[str, float] | None,
    v: _Violations,
) -> None:
    if not task.metric_names:
        v.add("metric: metric_names is empty;", "declare the names metric() returns (e.g. ('accuracy',))")
    perfect = [(s, c) for s, c in pairs if c is not None]
    if not perfect:
        v.add(
            "metric: no example has a correct completion,",
            "so perfect predictions cannot be derived: set the task's example_completion",
        )
    else:
        predictions = []
        for sample, completion in perfect:
            prediction = _safe_parse(task, completion, params, sample)
            if prediction is None:
                v.add(
                    "metric: a correct example completion does not parse:",
                    f"parse({_short(completion)}) returned None for sample {sample.id!r}",
                )
            predictions.append(prediction)
        samples = [s for s, _ in perfect]
        values = _run_metric(task, predictions, samples, params, "on perfect predictions", v)
        best = dict(metric_best) if metric_best is not None else {n: 1.0 for n in task.metric_names}
        for name, target in best.items():
            got = (values or {}).get(name)
            if values is not None and name in values and _is_finite_number(got):
                if not math.isclose(float(got), float(target), rel_tol=1e-9, abs_tol=1e-9):
                    ids = [s.id for s in samples]
                    v.add(
                        f"metric: {name!r} is not at its best on perfect predictions:",
                        f"got {got!r}, expected {target!r} for predictions {_short(predictions, 120)} "
                        f"(parsed from the correct completions of samples {ids})",
                    )
            elif values is not None and name not in values and name not in task.metric_names:
                v.add(
                    f"metric: metric_best names {name!r}, which metric() does not return;",
                    f"it returned {list(values)}",
                )
        _check_correct(task, predictions, samples, params, "on perfect predictions", v, expect=True)
    samples = [s for s, _ in pairs]
    nones = [None] * len(samples)
    _run_metric(task, nones, samples, params, "on unparsable (None) predictions", v)
    _check_correct(task, nones, samples, params, "on unparsable (None) predictions", v, expect=False)
    fuzz_samples = [samples[k % len(samples)] for k in range(len(fuzz_parsed))]
    _run_metric(task, list(fuzz_parsed), fuzz_samples, params, "on the parsed fuzzed completions", v)
    _check_correct(task, list(fuzz_parsed), fuzz_samples, params, "on the parsed fuzzed completions", v)


def _check_correct(
    task: Task,
    predictions: list[Any],
    samples: list[Sample],
    params: TaskParams,
    what: str,
    v: _Violations,
    expect: bool | None = None,
) -> None:
    """``Task.correct`` (per-record correctness, for pass@k), when the task has one: total, and ``expect``."""
    correct = getattr(task, "correct", None)
    if not callable(correct):
        return
    try:
        flags = list(correct(predictions, samples, params))
    except Exception as exc:  # noqa: BLE001
        v.add(f"correct: correct() raised {type(exc).__name__} {what}:", str(exc)[:300])
        return
    if len(flags) != len(predictions) or not all(
        isinstance(f, bool) or type(f).__name__ == "bool_" for f in flags
    ):
        v.add(
            f"correct: correct() {what} returned {_short(flags)},",
            f"expected {len(predictions)} bools, one per prediction",
        )
    elif expect is not None and not all(bool(f) is expect for f in flags):
        wrong = [s.id for s, f in zip(samples, flags) if bool(f) is not expect]
        v.add(f"correct: correct() is not {expect} {what}", f"for samples {wrong}")


# -- public --------------------------------------------------------------------------------------------------
def check_task(
    task: Task | type[Task],
    *,
    examples: Iterable[Example] | None = None,
    params: Iterable[Mapping[str, Any]] = (),
    metric_best: Mapping[str, float] | None = None,
    fuzz: int = 200,
    seed: int = 0,
) -> None:
    """Check that ``task`` honours the vgrpo contract; raise ``AssertionError`` listing every violation.

    Checks, for the task's own ``example`` (paired with its ``example_completion``) plus ``examples``
    (records, :class:`~vgrpo.Sample` objects, or ``(record, correct completion)`` pairs):

    - the registration check ``vgrpo.load_plugins`` runs (name, version, description, rewards, weights);
    - examples: every record loads and passes the task's ``check_record`` (as the data loaders require);
    - params: defaults validate and are JSON; checked again with every bool flipped, every ``Literal``
      choice, and each mapping in ``params``;
    - template: renders on every example, one image slot per image, a user message with text;
    - parser: on :func:`fuzz_completions` (``fuzz`` random ones from ``seed``, mutations of the correct
      completions, fixed edge cases) it never raises, is fast, and returns ``None`` or strict JSON;
    - rewards: every value on those completions and the examples is a finite number inside the declared
      range (or a :class:`~vgrpo.RewardFailure`); each reward has a description;
    - reference: when the task implements ``reference_completion`` (the SFT target), on every example and
      params variant it is ``None`` or a string that parses, is ``correct``, and scores the maximum of each
      reward the task weighs by default;
    - metric: on *perfect predictions* — the parses of the correct completions — every name in
      ``metric_names`` reaches its best value: 1.0, or ``metric_best[name]`` (e.g. ``{"mae": 0.0}``);
      on ``None`` and fuzzed predictions it returns finite numbers for every declared name.
    """
    if isinstance(task, type) and issubclass(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise AssertionError(  # noqa: TRY004 - a failed check, like every other violation
            f"expected a vgrpo.Task (an instance or a subclass), got {_short(task)}"
        )
    subject = f"task {getattr(task, 'name', task)!r}"
    v = _Violations()
    for problem in validate_task(task):
        v.add("registration check (run by vgrpo.load_plugins):", problem)
    variants = _params_variants(task, params, v)
    pairs = _examples(task, examples, v)
    if variants is None or not pairs:
        v.add(
            "stopped early:",
            "params or examples unusable, so the template, parser, rewards and metric are unchecked",
        )
        v.raise_if_any(subject)
        return
    _check_template(task, [s for s, _ in pairs], variants, v)
    has_parse = type(task).parse is not Task.parse
    if has_parse:
        completions = fuzz_completions(fuzz, seed=seed, seeds=[c for _, c in pairs if c])
        parsed = _check_parser(task, completions, [s for s, _ in pairs], variants, v)
        _check_rewards(task, completions, parsed, pairs, variants, v)
        samples = [s for s, _ in pairs]
        check_reference(task, samples, variants, v, lambda p: _params_note(p, variants[0]))
        if type(task).metric is not Task.metric:
            _check_metric(task, pairs, parsed[0], variants[0], metric_best, v)
    log.info("check_task %s: %d params variant(s), %d example(s)", subject, len(variants), len(pairs))
    v.raise_if_any(subject)


_GENERIC_PARSED: tuple[Any, ...] = (
    None,
    "",
    "yes",
    "3",
    3,
    0,
    -1,
    2.5,
    1e308,
    2**80,
    True,
    [],
    {},
    [1, 2, 3, 4],
    [[0, 0], [10, 0], [10, 10]],
    {"bbox_2d": [0, 0, 10, 10], "label": "cat"},
    [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}],
    "\\frac{1}{2}",
    "😀" * 1000,
    [None, "x", [], {}],
)


def _generic_samples() -> list[Sample]:
    return [
        Sample(
            id="any-count",
            question="How many cats?",
            solution=3,
            images=("a.png",),
            image_size=(640.0, 480.0),
        ),
        Sample(id="any-text", question="Is it red?", solution="yes"),
        Sample(
            id="any-box",
            solution=[10.0, 20.0, 110.0, 120.0],
            images=("b.png",),
            image_size=(224.0, 224.0),
            input_size=(112.0, 112.0),
        ),
        Sample(id="any-boxes", solution=[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]),
        Sample(id="any-empty", solution=[]),
        Sample(id="any-math", solution="\\frac{1}{2}", extra={"choices": ["a", "b"]}),
        Sample(id="any-none", solution=None),
    ]


class _AnyTask(Task):
    """Loads records for :func:`check_reward` without a task's ground-truth check."""

    name = "any"


def check_reward(
    reward: Reward,
    *,
    samples: Iterable[Record] | None = None,
    params: BaseModel | None = None,
    fuzz: int = 200,
    seed: int = 0,
) -> None:
    """Check a reward usable by any task (from a ``vgrpo_rewards`` hook); raise ``AssertionError`` listing
    every violation.

    The reward is called on :func:`fuzz_completions` paired with parsed values of every shape the built-in
    tasks produce (``None``, strings, numbers, boxes, detections, …) and with ``samples`` (records or
    :class:`~vgrpo.Sample` objects; default: a varied built-in set) under ``params`` (default
    ``TaskParams()``). Every value must be a finite number inside the declared range (or a
    :class:`~vgrpo.RewardFailure`), the reward must never raise, and it must have a description.
    """
    if not isinstance(reward, Reward):
        raise AssertionError(  # noqa: TRY004 - a failed check, like every other violation
            f"expected a vgrpo.Reward (decorate the function with @vgrpo.reward), got {reward!r}"
        )
    v = _Violations()
    if not reward.description.strip():
        v.add(f"reward {reward.name!r} has no description:", "give its function a docstring")
    loaded: list[Sample] = []
    for i, record in enumerate(_generic_samples() if samples is None else samples):
        if isinstance(record, Sample):
            loaded.append(record)
            continue
        try:
            loaded.append(sample_from_record(record, _AnyTask(), default_id=f"samples[{i}]"))
        except Exception as exc:  # noqa: BLE001
            v.add("samples: a record does not load:", f"samples[{i}] {_short(record)}: {exc}")
    if not loaded:
        v.add("samples: none given that load;", "pass records with at least a 'solution'")
        v.raise_if_any(f"reward {reward.name!r}")
        return
    completions = fuzz_completions(fuzz, seed=seed)
    n_parsed = len(_GENERIC_PARSED)
    items = [
        (_GENERIC_PARSED[k % n_parsed], loaded[(k // n_parsed + k) % len(loaded)], c)
        for k, c in enumerate(completions)
    ]
    _check_reward_values(reward, items, params if params is not None else TaskParams(), "", v)
    v.raise_if_any(f"reward {reward.name!r}")
