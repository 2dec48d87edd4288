"""Named rewards: a function with a declared range, called on whole batches.

A reward is written per item, ``(parsed, sample, params, completion) -> float``, or per batch with
``batched=True``, ``(parsed, samples, params, completions) -> list[float]`` (the plural names hold lists).
Like pluggy hooks, a reward declares only the arguments it needs; vgrpo passes them by name.

``@vgrpo.reward`` returns a :class:`Reward`, not the function: vgrpo calls it on a batch,
``reward(parsed_list, samples, params, completions) -> list``, whichever form it was written in. A unit test
calls the function as written through ``reward.fn``, or :func:`vgrpo.testing.call_reward` to call it as vgrpo
does (one completion, parsed by a task if given, the value checked against the range).

A reward may declare knobs, ``@vgrpo.reward(..., params=SomeModel)`` (a pydantic model whose fields all have
defaults), and receives them validated through a ``reward_params`` argument; a config's mixture entry sets
them per task, ``rewards: {acme.length_penalty: {weight: 0.3, params: {max_words: 200}}}`` (see
:func:`vgrpo.scoring.resolve_weights` and :class:`RewardWeights`).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from vgrpo.completion import is_well_formatted
from vgrpo.errors import ParamsError

if TYPE_CHECKING:
    from vgrpo.task import Sample

log = logging.getLogger(__name__)

ITEM_ARGS = ("parsed", "sample", "params", "completion")
BATCH_ARGS = ("parsed", "samples", "params", "completions")
#: The argument a reward with a params model receives them by (``params`` is the task's params).
PARAMS_ARG = "reward_params"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


@dataclass(frozen=True)
class Reward:
    """A named reward function with its declared ``range`` (min, max), as ``@vgrpo.reward`` makes it.

    ``fn`` is the function as written (call it in unit tests: ``length.fn(completion="…")``); ``args`` the
    argument names it declares, the only ones vgrpo passes. Calling the reward itself is vgrpo's batch form,
    ``reward(parsed_list, samples, params, completions) -> list[float]``, for a per-item reward too (then
    called once per item); :func:`vgrpo.testing.call_reward` calls it that way on one completion.

        @vgrpo.reward("acme.short", range=(-1.0, 0.0), description="-1 when empty, 0 from 100 characters")
        def short(completion: str) -> float:
            return min(0.0, len(completion) / 100 - 1.0)

        short.fn(completion="")                          # -1.0: the function as written
        short([None], [sample], params, [""])            # [-1.0]: the call vgrpo makes, on a batch
        vgrpo.testing.call_reward(short, completion="")  # -1.0: that call on one completion, checked

    ``params`` (optional) is the reward's params model: a pydantic model whose fields all have defaults. The
    function then takes a ``reward_params`` argument and gets an instance of it, validated from the config
    (:meth:`make_params`); ``bound_params`` are the ones it is called with (:meth:`with_params`), else defaults.
    """

    name: str
    fn: Callable[..., Any]
    range: tuple[float, float] = (0.0, 1.0)
    description: str = ""
    batched: bool = False
    args: tuple[str, ...] = field(default=(), compare=False)
    params: type[BaseModel] | None = None
    bound_params: BaseModel | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(
                f"reward name {self.name!r} is invalid: expected lowercase words of [a-z0-9_], "
                "dot-separated for a third-party namespace (e.g. 'acme.length_penalty')"
            )
        lo, hi = self.range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"reward {self.name!r}: range must be finite (min, max) with min < max, got {self.range}"
            )
        allowed = BATCH_ARGS if self.batched else ITEM_ARGS
        params = inspect.signature(self.fn).parameters
        if self.params is not None:
            _check_params_model(self.name, self.params)
            allowed += (PARAMS_ARG,)
            if PARAMS_ARG not in params:
                raise TypeError(
                    f"reward {self.name!r} declares params={self.params.__name__} but its function takes no "
                    f"{PARAMS_ARG!r} argument to receive them"
                )
        elif PARAMS_ARG in params:
            raise TypeError(
                f"reward {self.name!r} takes {PARAMS_ARG!r} but declares no params model: "
                f"@vgrpo.reward(..., params=YourParams), a pydantic model whose fields all have defaults"
            )
        unknown = [p for p in params if p not in allowed]
        if unknown:
            raise TypeError(
                f"reward {self.name!r}: unknown argument(s) {unknown}; a "
                f"{'batched' if self.batched else 'per-item'} reward may take any of {list(allowed)}"
            )
        object.__setattr__(self, "args", tuple(params))

    @property
    def minimum(self) -> float:
        return float(self.range[0])

    def make_params(
        self, values: Mapping[str, Any] | BaseModel | None = None, *, key: str | None = None
    ) -> Any:
        """This reward's validated params from a mapping (missing keys take their defaults), ``None`` giving
        the defaults; ``None`` for a reward without a params model. Errors are :class:`~vgrpo.errors.ParamsError`
        naming ``key`` (where the values came from, e.g. ``tasks[0].rewards.acme.length_penalty.params``) and
        listing the valid params with their defaults; a value given to a reward without params is one."""
        where = key or f"{self.name}.params"
        if self.params is None:
            if values is None:
                return None
            raise ParamsError(
                f"{where}: reward {self.name!r} takes no params, got {values!r}; give its weight as a number"
            )
        if values is None:
            return self.params()
        if isinstance(values, self.params):
            return values
        if not isinstance(values, Mapping):
            raise ParamsError(
                f"{where}: expected a mapping of params, got {values!r}. {self._valid_params()}"
            )
        fields = self.params.model_fields
        if self.params.model_config.get("extra") != "allow":  # a misspelled knob is an error, not a no-op
            unknown = [k for k in values if k not in fields]
            if unknown:
                hint = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
                raise ParamsError(
                    f"{where}.{unknown[0]}: unknown param"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f". {self._valid_params()}"
                )
        try:
            return self.params.model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join([where, *(str(p) for p in err['loc'])])}: {err['msg']} (got {err.get('input')!r})"
                for err in exc.errors()
            )
            raise ParamsError(f"{problems}. {self._valid_params()}") from None

    def _valid_params(self) -> str:
        assert self.params is not None
        fields = ", ".join(
            f"{k} (default {f.get_default(call_default_factory=True)!r})"
            for k, f in self.params.model_fields.items()
        )
        return f"Valid params of reward {self.name!r}: {fields}"

    def with_params(
        self, values: Mapping[str, Any] | BaseModel | None = None, *, key: str | None = None
    ) -> Reward:
        """This reward called with the given params (validated by :meth:`make_params`); itself for ``None``."""
        if values is None:
            return self
        return replace(self, bound_params=self.make_params(values, key=key))

    def __call__(
        self,
        parsed: Sequence[Any],
        samples: Sequence[Sample],
        params: BaseModel,
        completions: Sequence[str],
        *,
        reward_params: Mapping[str, Any] | BaseModel | None = None,
    ) -> list[float]:
        """Raw values for a batch: lists of the same length in, one value per item out. No safety net: what
        the function raises propagates, values are not checked (see :func:`vgrpo.scoring.apply_reward`).
        ``reward_params`` (a reward with a params model) default to ``bound_params``, else the defaults."""
        extra = {}
        if self.params is not None:
            given_params = reward_params if reward_params is not None else self.bound_params
            extra[PARAMS_ARG] = self.make_params(given_params)
        elif reward_params is not None:
            self.make_params(reward_params)  # raises: this reward takes none
        if self.batched:
            given = {"parsed": parsed, "samples": samples, "params": params, "completions": completions}
            given.update(extra)
            values = list(self.fn(**{a: given[a] for a in self.args}))
            if len(values) != len(parsed):
                raise ValueError(
                    f"reward {self.name!r} returned {len(values)} values for {len(parsed)} items"
                )
            return values
        out = []
        for p, s, c in zip(parsed, samples, completions):
            given = {"parsed": p, "sample": s, "params": params, "completion": c, **extra}
            out.append(self.fn(**{a: given[a] for a in self.args}))
        return out


def _check_params_model(name: str, model: Any) -> None:
    """A reward's params model: a pydantic model whose fields all have defaults (so it can be left unset)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"reward {name!r}: params must be a pydantic BaseModel subclass, got {model!r}")
    missing = [k for k, f in model.model_fields.items() if f.is_required()]
    if missing:
        raise TypeError(
            f"reward {name!r}: every field of params model {model.__name__} needs a default: {missing}"
        )
    try:
        model()
    except ValidationError as exc:
        raise TypeError(
            f"reward {name!r}: params model {model.__name__}'s defaults do not validate: {exc}"
        ) from None


def reward(
    name: str | None = None,
    *,
    range: tuple[float, float] = (0.0, 1.0),  # noqa: A002 - the contract's word
    batched: bool = False,
    description: str | None = None,
    params: type[BaseModel] | None = None,
) -> Callable[[Callable[..., Any]], Reward]:
    """Decorator that turns a function into a :class:`Reward` (name defaults to the function's name).

    ``params``: the reward's params model (fields with defaults); the function receives an instance of it,
    validated from the config, through its ``reward_params`` argument."""

    def wrap(fn: Callable[..., Any]) -> Reward:
        doc = (fn.__doc__ or "").strip().splitlines()
        return Reward(
            name=name or fn.__name__,
            fn=fn,
            range=(float(range[0]), float(range[1])),
            description=description if description is not None else (doc[0] if doc else ""),
            batched=batched,
            params=params,
        )

    return wrap


@reward("format")
def format_reward(completion: str) -> float:
    """1.0 when the whole completion is <think>…</think><answer>…</answer> (whitespace around allowed)."""
    return 1.0 if is_well_formatted(completion) else 0.0


class RewardTable(dict[str, Reward]):
    """The plugin rewards by name (``PluginRegistry.rewards``), with ``conflicts``: each name that two
    distributions register, unusable until one is removed, mapped to the message naming both."""

    def __init__(self, rewards: Mapping[str, Reward] = (), *, conflicts: Mapping[str, str] = ()) -> None:
        super().__init__(rewards)
        self.conflicts: dict[str, str] = dict(conflicts)


def reward_setting(value: Any, where: str) -> tuple[Any, Mapping[str, Any] | None]:
    """One entry of a ``rewards:`` mapping as (weight, params or ``None``): a weight, or
    ``{weight: w, params: {...}}``. Checks the shape only, naming ``where`` (the entry's key path); the weight's
    value and the params are checked by the caller (see :func:`vgrpo.scoring.resolve_weights`)."""
    if not isinstance(value, Mapping):
        return value, None
    unknown = [k for k in value if k not in ("weight", "params")]
    if unknown:
        hint = difflib.get_close_matches(str(unknown[0]), ["weight", "params"], n=1)
        raise ParamsError(
            f"{where}.{unknown[0]}: unknown key"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + "; expected {weight: <number>, params: {...}} or just the weight"
        )
    if "weight" not in value:
        raise ParamsError(f"{where}.weight: required (a finite number) when the reward is given as a mapping")
    params = value.get("params")
    if params is not None and not isinstance(params, (Mapping, BaseModel)):
        raise ParamsError(f"{where}.params: expected a mapping of the reward's params, got {params!r}")
    return value["weight"], params


class RewardWeights(dict[str, float]):
    """Reward weights ``{name: weight}`` as :func:`vgrpo.scoring.resolve_weights` returns them, with
    ``params``: the params of the rewards given some (``{weight, params}`` entries), by name.

    A plain ``dict`` of floats to whatever reads weights; :meth:`to_config` is the same as plain data in the
    config's form, which is what reward workers are sent (and validate again).
    """

    def __init__(
        self, weights: Mapping[str, float] = (), params: Mapping[str, BaseModel | Mapping[str, Any]] = ()
    ) -> None:
        super().__init__(weights)
        self.params: dict[str, BaseModel | Mapping[str, Any]] = dict(params)

    @classmethod
    def of(cls, weights: Mapping[str, Any]) -> RewardWeights:
        """Weights in any accepted form (numbers, ``{weight, params}``, a ``RewardWeights``), params unchecked."""
        if isinstance(weights, RewardWeights):
            return weights
        out = cls()
        for name, value in weights.items():
            weight, params = reward_setting(value, f"rewards.{name}")
            out[name] = float(weight)
            if params is not None:
                out.params[name] = params
        return out

    def to_config(self) -> dict[str, Any]:
        """Plain data: ``{name: weight}``, or ``{name: {"weight": w, "params": {...}}}`` for those with params."""
        out: dict[str, Any] = {}
        for name, weight in self.items():
            params = self.params.get(name)
            if params is None:
                out[name] = weight
            else:
                plain = params.model_dump() if isinstance(params, BaseModel) else dict(params)
                out[name] = {"weight": weight, "params": plain}
        return out


@dataclass(frozen=True)
class RewardFailure:
    """Returned in place of a value by a batched reward when one item failed (e.g. ``"timeout"``).

    vgrpo scores that item at the reward's minimum and counts the failure under ``kind``.
    """

    kind: str
    message: str = ""
