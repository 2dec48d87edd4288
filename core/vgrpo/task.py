"""The task contract: what a visual task plugin provides.

A task bundles a params model, a prompt template, an answer parser, named rewards and a dataset-level
metric, plus the checks of its ground truth and of whole records used by the JSONL dataset adapter.
"""

from __future__ import annotations

import functools
import inspect
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vgrpo.errors import DataError, ParamsError, TemplateFieldError
from vgrpo.rewards import NAME_RE, Reward

if TYPE_CHECKING:
    from vgrpo.convert import VlmR1Record
    from vgrpo.synth import SynthItem

TASK_NAME_RE = NAME_RE  # task and reward names follow the same rule


class TaskParams(BaseModel):
    """Knobs every task has. Subclass it to add a task's own; every field needs a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    require_answer_tags: bool = Field(
        True,
        description="Parse only the text inside the first <answer>…</answer>; without one, nothing parses "
        "and accuracy-type rewards are 0. When false, a completion without the block is parsed whole.",
    )


@dataclass(frozen=True)
class Sample:
    """One dataset record, validated: the fields every task knows plus the task's extras."""

    id: str
    question: str = ""
    solution: Any = None
    images: tuple[str, ...] = ()
    image_size: tuple[float, float] | None = None
    """Original image size (W, H) in pixels, when known."""
    input_size: tuple[float, float] | None = None
    """Size (w, h) of the image the model saw (after resizing), when known."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The values a prompt template may use: the extras plus ``id`` and ``question``."""
        return {**self.extra, "id": self.id, "question": self.question}


#: Format specs a list or dict field takes in a template: ``{classes}``, ``{classes:numbered}``, …
LIST_SPECS = ("", "numbered", "lines", "json")


def _item_text(value: Any) -> str:
    """One item of a list or dict field: a scalar as ``str.format`` writes it, a list or dict as JSON."""
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return format(value)


class _TemplateFormatter(string.Formatter):
    """``str.format`` plus the rule for list and dict fields (see :class:`PromptTemplate`)."""

    def __init__(self) -> None:
        self.field: str | None = None  # the field being formatted, for error messages

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        self.field = field_name
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        if format_spec == "json":
            return json.dumps(value, ensure_ascii=False, default=str)
        is_list = isinstance(value, (list, tuple))
        if not (is_list or isinstance(value, Mapping)):
            if format_spec in ("numbered", "lines"):
                raise DataError(
                    f"the prompt template writes {{{self.field}:{format_spec}}}, which expects a list or a "
                    f"dict, got {type(value).__name__} {value!r}"[:300],
                    field=self.field,
                )
            return format(value, format_spec)  # scalars: exactly str.format
        if is_list:
            items = [_item_text(v) for v in value]
        else:
            items = [f"{k}: {_item_text(v)}" for k, v in value.items()]
        if format_spec == "":
            return ", ".join(items)
        if format_spec == "numbered":
            return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
        if format_spec == "lines":
            return "\n".join(items)
        forms = ", ".join(f"{{{self.field}:{spec}}}" if spec else f"{{{self.field}}}" for spec in LIST_SPECS)
        raise DataError(
            f"the prompt template writes {{{self.field}:{format_spec}}}, an unknown form for a "
            f"{type(value).__name__}; expected one of {forms}",
            field=self.field,
        )


@dataclass(frozen=True)
class PromptTemplate:
    """Chat prompt rendered from a sample: ``user`` (and ``system``) are ``str.format`` strings.

    Placeholders name sample fields (``{question}``, ``{id}``, task extras) or params fields
    (``{coords}``). Every image of the sample gets an image slot before the text.

    Scalars (strings, numbers, booleans) render exactly as ``str.format`` renders them. A list renders its
    items joined by ``", "`` (``{classes}`` → ``circle, square``), a dict its ``key: value`` pairs the same
    way; the format spec ``numbered`` puts one item a line numbered from 1 (``1. circle``), ``lines`` one
    item a line, and ``json`` writes the value (of any type) as JSON. Items that are themselves lists or
    dicts are written as JSON; ``{classes!r}`` gives Python's repr.
    """

    user: str
    system: str | None = None

    def render(self, sample: Sample, params: BaseModel) -> list[dict[str, Any]]:
        """``[{"role": "system", ...}?, {"role": "user", "content": [image slots..., text]}]`` for ``sample``.

        A field the template needs that neither the sample nor the params has raises
        :class:`~vgrpo.errors.TemplateFieldError` (a :class:`~vgrpo.errors.DataError` and a ``KeyError``).
        """
        values = {**params.model_dump(), **sample.fields()}
        formatter = _TemplateFormatter()
        try:
            user = formatter.vformat(self.user, (), values)
            system = formatter.vformat(self.system, (), values) if self.system else None
        except KeyError as exc:
            missing = formatter.field or (str(exc.args[0]) if exc.args else "?")
            raise TemplateFieldError(
                f"missing; the prompt template needs it, but record {sample.id!r} and the task params lack it "
                f"(available: {', '.join(sorted(values))})",
                field=missing,
            ) from None
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        content: list[dict[str, Any]] = [{"type": "image", "image": path} for path in sample.images]
        content.append({"type": "text", "text": user})
        messages.append({"role": "user", "content": content})
        return messages


class Task:
    """Base class of a task. Subclasses set the class attributes and implement the three methods.

    ``correct`` (per-record correctness, for pass@k) has a default derived from the metric; override it when
    the metric's 1.0 does not mean "right" for one record; likewise ``check_record`` (a whole record's check,
    default: the solution and the template). The optional methods (``step_stats``,
    ``reference_completion``, ``synth_record``, ``vlm_r1_*``) have defaults that do nothing, so a task
    implements only what it offers.

    Class attributes: ``name`` (bare for built-ins, dotted for third parties, e.g. ``acme.chartqa``),
    ``version``, ``description`` (one line), ``Params``, ``template``, ``rewards``, ``default_weights``,
    ``metric_names``, ``example`` (a JSONL record) and ``example_completion`` (a correct answer to it).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    Params: ClassVar[type[TaskParams]] = TaskParams
    template: ClassVar[PromptTemplate]
    rewards: ClassVar[Sequence[Reward]] = ()
    default_weights: ClassVar[Mapping[str, float]] = {"accuracy": 1.0, "format": 1.0}
    metric_names: ClassVar[Sequence[str]] = ()
    example: ClassVar[Mapping[str, Any]] = {}
    example_completion: ClassVar[str] = ""

    # -- the three things a task implements -------------------------------------------------------
    def parse(self, completion: str, params: TaskParams) -> Any | None:
        """Extract the prediction from a completion; ``None`` when nothing parses. Never raises.

        The result must be JSON-serialisable (it is written to score output and completion logs). A parser
        that declares a third parameter named ``sample`` (``parse(self, completion, params, sample=None)``)
        is given the record's :class:`Sample` too, e.g. to resolve an answer "2" into the record's second
        candidate once instead of in every reward (see :func:`call_parse`).
        """
        raise NotImplementedError

    def check_solution(self, solution: Any) -> Any:
        """Validate and normalise a record's ground truth; raise ``ValueError("expected …")`` if bad."""
        return solution

    def metric(
        self, predictions: Sequence[Any], samples: Sequence[Sample], params: TaskParams
    ) -> dict[str, float]:
        """Dataset-level evaluation metric over parsed predictions (``None`` = unparsable)."""
        raise NotImplementedError

    # -- provided ------------------------------------------------------------------------------------
    def correct(
        self, predictions: Sequence[Any], samples: Sequence[Sample], params: TaskParams
    ) -> list[bool]:
        """Whether each prediction answers its record correctly (``None`` never does): what pass@k counts.

        By default a record is correct when the task's first metric (``metric_names[0]``) computed on that
        record alone reaches 1.0. Override it when that metric is not a [0, 1] score where 1.0 means right
        (e.g. a detection AP), or to score the whole batch in one call.
        """
        out = []
        for prediction, sample in zip(predictions, samples):
            values = self.metric([prediction], [sample], params)
            name = self.metric_names[0] if self.metric_names else next(iter(values))
            out.append(prediction is not None and float(values[name]) >= 1.0)
        return out

    def params(self, values: Mapping[str, Any] | TaskParams | None = None) -> TaskParams:
        """Validated params from a mapping (missing keys take defaults); errors name the key."""
        if isinstance(values, self.Params):
            return values
        try:
            return self.Params(**dict(values or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            fields = ", ".join(f"{k} (default {v.default!r})" for k, v in self.Params.model_fields.items())
            raise ParamsError(f"task {self.name!r} params: {problems}. Valid params: {fields}") from None

    def check_record(self, record: Mapping[str, Any], params: TaskParams) -> None:
        """Validate a whole JSONL record (as read, a dict) beyond its fields' shapes; raise
        ``ValueError("expected …")`` (or :class:`~vgrpo.errors.DataError` with ``field=``) when it is bad.

        ``vgrpo data check`` and every loader (:func:`vgrpo.data.load_jsonl`: training, evaluation) run it on
        each record and report file:line with the message. The default checks what every task needs: the
        ground truth (:meth:`check_solution`) and that the prompt renders on the record (every template field
        present). Override it for a task's own constraints — an extra the prompt needs, a solution that must
        be one of the record's candidates — and call ``super().check_record(record, params)`` first.
        """
        from vgrpo.data import sample_from_record  # data.py builds on this module

        sample = sample_from_record(record, self, default_id="record")  # check_solution, the fields' shapes
        self.build_prompt(sample, self.params(params))

    def build_prompt(self, sample: Sample, params: TaskParams) -> list[dict[str, Any]]:
        """The chat messages for a sample: ``[{"role": "system", "content": [text]}`` (when the template
        has a system part), ``{"role": "user", "content": [{"type": "image", "image": path}, ..., {"type":
        "text", "text": ...}]}]`` — one image slot per image of the sample, then the text. Override it for
        prompts a template cannot express (call :meth:`PromptTemplate.render` and edit its result)."""
        return self.template.render(sample, params)

    def reward_map(self) -> dict[str, Reward]:
        return {r.name: r for r in self.rewards}

    # -- optional: training statistics, synthetic data, imported data --------------------------------------
    def step_stats(self, parsed: Any) -> dict[str, float]:
        """Extra statistics of one parsed completion (never ``None``) that the trainer averages per task into
        ``tasks/<task>/<key>``, e.g. boxes per answer to watch for flooding; default: none."""
        return {}

    def reference_completion(self, sample: Sample, params: TaskParams) -> str | None:
        """A correct, well-formatted completion for ``sample``, made from its ground truth (count:
        ``<think>…</think><answer>3</answer>``): the target of ``vgrpo sft`` (the cold start before GRPO)
        for records without a ``completion`` field. It must parse back to the solution and score the task's
        maximum reward (``vgrpo.testing.check_task`` checks it). ``sample.input_size`` is set when the size
        of the image the model sees is known (boxes in model pixels). ``None``, the default: none (for this
        record)."""
        return None

    def synth_record(self, item: SynthItem) -> dict[str, Any] | None:
        """One synthetic JSONL record for ``vgrpo data synth`` from ``item`` (its scene of shapes with exact
        boxes, drawn on first use, or only its random stream for a text-only task); ``None``, the default,
        means the task makes no synthetic data."""
        return None

    def vlm_r1_match(self, record: VlmR1Record) -> tuple[float, str] | None:
        """How sure (0 < score <= 1) and why a VLM-R1 record is this task's, for ``vgrpo data convert``
        without ``--task``: 1.0 when the record names the task (``accu_reward_method``), less for an answer of
        the task's shape (the more specific, the higher); ``None`` (the default) when it does not look so."""
        return None

    def vlm_r1_question(self, record: VlmR1Record) -> str:
        """The question this task's template wraps, from a VLM-R1 record; default: the record's question
        (``<image>`` placeholders and VLM-R1's answer-format instruction removed)."""
        return record.question

    def vlm_r1_solution(self, record: VlmR1Record) -> Any:
        """This task's ground truth from a VLM-R1 record's answer (``record.answer``, ``record.value``); raise
        ``ValueError("expected …, got …")`` when it holds none. A task that implements it is one ``vgrpo data
        convert --from vlm-r1`` converts to; the default raises ``NotImplementedError`` (it is not)."""
        raise NotImplementedError(f"task {self.name!r} does not convert VLM-R1 records")

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.version}>"


@functools.cache
def _takes_sample(parse: Callable[..., Any]) -> bool:
    """Whether a parser declares a parameter named ``sample`` (looked up once per function)."""
    try:
        return "sample" in inspect.signature(parse).parameters
    except (TypeError, ValueError):  # a callable without a signature: the two-argument form
        return False


def call_parse(task: Task, completion: str, params: TaskParams, sample: Sample | None = None) -> Any:
    """The one way vgrpo calls a task's parser: ``parse(completion, params)``, plus ``sample=`` when the
    parser declares a parameter of that name (chosen by signature, as rewards choose their arguments).

    It raises what the parser raises; :func:`vgrpo.scoring.safe_parse` is the guarded form.
    """
    parse = task.parse
    if _takes_sample(getattr(parse, "__func__", parse)):
        return parse(completion, params, sample=sample)
    return parse(completion, params)
