"""Named rewards: a function with a declared range, called on whole batches.

A reward is written per item, ``(parsed, sample, params, completion) -> float``, or per batch with
``batched=True``, ``(parsed, samples, params, completions) -> list[float]`` (the plural names hold lists).
Like pluggy hooks, a reward declares only the arguments it needs; vgrpo passes them by name.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vgrpo.completion import is_well_formatted

if TYPE_CHECKING:
    from pydantic import BaseModel

    from vgrpo.task import Sample

log = logging.getLogger(__name__)

ITEM_ARGS = ("parsed", "sample", "params", "completion")
BATCH_ARGS = ("parsed", "samples", "params", "completions")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


@dataclass(frozen=True)
class Reward:
    """A named reward function with its declared ``range`` (min, max)."""

    name: str
    fn: Callable[..., Any]
    range: tuple[float, float] = (0.0, 1.0)
    description: str = ""
    batched: bool = False
    args: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(
                f"reward name {self.name!r} is invalid: expected lowercase words of [a-z0-9_], "
                "dot-separated for a third-party namespace (e.g. 'acme.length_penalty')"
            )
        lo, hi = self.range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"reward {self.name!r}: range must be finite (min, max) with min < max, got {self.range}")
        allowed = BATCH_ARGS if self.batched else ITEM_ARGS
        params = inspect.signature(self.fn).parameters
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

    def __call__(
        self,
        parsed: Sequence[Any],
        samples: Sequence[Sample],
        params: BaseModel,
        completions: Sequence[str],
    ) -> list[float]:
        """Raw values for a batch; no safety net (see :func:`vgrpo.scoring.apply_reward`)."""
        if self.batched:
            given = {"parsed": parsed, "samples": samples, "params": params, "completions": completions}
            values = list(self.fn(**{a: given[a] for a in self.args}))
            if len(values) != len(parsed):
                raise ValueError(f"reward {self.name!r} returned {len(values)} values for {len(parsed)} items")
            return values
        out = []
        for p, s, c in zip(parsed, samples, completions):
            given = {"parsed": p, "sample": s, "params": params, "completion": c}
            out.append(self.fn(**{a: given[a] for a in self.args}))
        return out


def reward(
    name: str | None = None,
    *,
    range: tuple[float, float] = (0.0, 1.0),  # noqa: A002 - the contract's word
    batched: bool = False,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Reward]:
    """Decorator that turns a function into a :class:`Reward` (name defaults to the function's name)."""

    def wrap(fn: Callable[..., Any]) -> Reward:
        doc = (fn.__doc__ or "").strip().splitlines()
        return Reward(
            name=name or fn.__name__,
            fn=fn,
            range=(float(range[0]), float(range[1])),
            description=description if description is not None else (doc[0] if doc else ""),
            batched=batched,
        )

    return wrap


@reward("format")
def format_reward(completion: str) -> float:
    """1.0 when the whole completion is <think>…</think><answer>…</answer> (whitespace around allowed)."""
    return 1.0 if is_well_formatted(completion) else 0.0


@dataclass(frozen=True)
class RewardFailure:
    """Returned in place of a value by a batched reward when one item failed (e.g. ``"timeout"``).

    vgrpo scores that item at the reward's minimum and counts the failure under ``kind``.
    """

    kind: str
    message: str = ""
