"""The task contract: what a visual task plugin provides.

A task bundles a params model, a prompt template, an answer parser, named rewards and a dataset-level
metric, plus a check of its ground-truth format used by the JSONL dataset adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vgrpo.errors import ParamsError
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


@dataclass(frozen=True)
class PromptTemplate:
    """Chat prompt rendered from a sample: ``user`` (and ``system``) are ``str.format`` strings.

    Placeholders name sample fields (``{question}``, ``{id}``, task extras) or params fields
    (``{coords}``). Every image of the sample gets an image slot before the text.
    """

    user: str
    system: str | None = None

    def render(self, sample: Sample, params: BaseModel) -> list[dict[str, Any]]:
        values = {**params.model_dump(), **sample.fields()}
        try:
            user = self.user.format_map(values)
            system = self.system.format_map(values) if self.system else None
        except KeyError as exc:
            raise KeyError(
                f"prompt template needs field {exc.args[0]!r}, which sample {sample.id!r} and the params lack "
                f"(available: {sorted(values)})"
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
    the metric's 1.0 does not mean "right" for one record. The optional methods (``step_stats``,
    ``synth_record``, ``vlm_r1_*``) have defaults that do nothing, so a task implements only what it offers.

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

        The result must be JSON-serialisable (it is written to score output and completion logs).
        """
        raise NotImplementedError

    def check_solution(self, solution: Any) -> Any:
        """Validate and normalise a record's ground truth; raise ``ValueError("expected …")`` if bad."""
        return solution

    def metric(self, predictions: Sequence[Any], samples: Sequence[Sample], params: TaskParams) -> dict[str, float]:
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

    def build_prompt(self, sample: Sample, params: TaskParams) -> list[dict[str, Any]]:
        """Chat messages for a sample; override for prompts a template cannot express."""
        return self.template.render(sample, params)

    def reward_map(self) -> dict[str, Reward]:
        return {r.name: r for r in self.rewards}

    # -- optional: training statistics, synthetic data, imported data --------------------------------------
    def step_stats(self, parsed: Any) -> dict[str, float]:
        """Extra statistics of one parsed completion (never ``None``) that the trainer averages per task into
        ``tasks/<task>/<key>``, e.g. boxes per answer to watch for flooding; default: none."""
        return {}

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
