"""The task mixture: each task of a config with its params, weights and records, and the sampler over them —
seeded, weighted, and resumable exactly from a small state dict.

Draw ``i`` picks a task with probability proportional to its weight, then that task's next record from a
fresh permutation per epoch. Every random choice is a pure function of (seed, draw number) or (seed, task,
epoch), so the sampler's whole state is its position and per-task counters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vgrpo.errors import DataError, ParamsError
from vgrpo.task import Sample, Task, TaskParams

if TYPE_CHECKING:
    from vgrpo.config import TrainConfig
    from vgrpo.models.adapters import ModelAdapter
    from vgrpo.plugins import PluginRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draw:
    """One sampled record: which mixture entry and which record in it."""

    task_index: int
    record_index: int


class MixtureSampler:
    """Weighted sampling over several datasets; ``state_dict``/``load_state_dict`` resume it exactly."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(
                f"expected one weight per dataset, got {len(sizes)} sizes and {len(weights)} weights"
            )
        if any(n <= 0 for n in sizes):
            raise ValueError(f"every dataset needs at least one record, got sizes {list(sizes)}")
        if any(not w > 0 for w in weights):
            raise ValueError(f"weights must be positive, got {list(weights)}")
        self.sizes = [int(n) for n in sizes]
        total = float(sum(weights))
        self.probs = np.array([w / total for w in weights])
        self.cumulative = np.cumsum(self.probs)
        self.seed = int(seed)
        self.position = 0
        self.counts = [0] * len(sizes)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _permutation(self, task: int, epoch: int) -> np.ndarray:
        key = (task, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.sizes):
                self._perms.clear()
            rng = np.random.default_rng([self.seed, 1, task, epoch])
            self._perms[key] = rng.permutation(self.sizes[task])
        return self._perms[key]

    def draw(self) -> Draw:
        """The next record."""
        u = np.random.default_rng([self.seed, 0, self.position]).random()
        task = min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.sizes) - 1)
        k = self.counts[task]
        epoch, offset = divmod(k, self.sizes[task])
        self.counts[task] += 1
        self.position += 1
        return Draw(task, int(self._permutation(task, epoch)[offset]))

    def take(self, n: int) -> list[Draw]:
        return [self.draw() for _ in range(n)]

    def state_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "position": self.position,
            "counts": list(self.counts),
            "sizes": list(self.sizes),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("sizes") != self.sizes or state.get("seed") != self.seed:
            raise ValueError(
                f"sampler state is for datasets of sizes {state.get('sizes')} with seed {state.get('seed')}, "
                f"but this run has sizes {self.sizes} and seed {self.seed}: the data or seed changed"
            )
        self.position = int(state["position"])  # type: ignore[arg-type]
        self.counts = [int(c) for c in state["counts"]]  # type: ignore[union-attr]


# -- the mixture of a config ------------------------------------------------------------------------------------
@dataclass
class MixtureEntry:
    """A task of the mixture, ready to use: its params, reward weights and records."""

    task: Task
    params: TaskParams
    weights: dict[str, float]
    samples: list[Sample]


def task_params(
    task: Task, given: Mapping[str, Any] | None, adapter: ModelAdapter | None = None
) -> TaskParams:
    """The task's params from a config entry. A task param ``coords`` the entry does not set takes the model
    adapter's convention (``adapter.default_coords``: Qwen2-VL and Qwen3-VL write 0–1000 boxes, Qwen2.5-VL
    pixels of the model input), so boxes are read the way the model family writes them."""
    values = dict(given or {})
    params = task.params(values)  # the entry's own errors first, named by key
    if adapter is None or "coords" not in getattr(task.Params, "model_fields", {}) or "coords" in values:
        return params
    try:
        params = task.params({**values, "coords": adapter.default_coords})
    except ParamsError:
        log.warning(
            "task %s: its coords param does not accept the %s adapter's %r; using the task's default",
            task.name,
            adapter.name,
            adapter.default_coords,
        )
        return params
    log.info(
        "task %s: coords=%s, the %s model adapter's convention (set the task param coords to change it)",
        task.name,
        adapter.default_coords,
        adapter.name,
    )
    return params


def build_mixture(
    config: TrainConfig, registry: PluginRegistry, adapter: ModelAdapter | None = None
) -> list[MixtureEntry]:
    """One :class:`MixtureEntry` per ``config.tasks`` item: params (see :func:`task_params`), reward weights and
    the records of its JSONL files (image sizes read), at most ``max_samples`` of them."""
    from vgrpo.data import load_jsonl
    from vgrpo.scoring import resolve_weights

    if not config.tasks:
        raise DataError("the config lists no tasks: add entries under `tasks:` ({task, data})")
    entries = []
    for item in config.tasks:
        task = registry.task(item.task)
        params = task_params(task, item.params, adapter)
        at = next(i for i, t in enumerate(config.tasks) if t is item)  # errors name tasks[i].rewards.…
        weights = resolve_weights(task, item.rewards, registry.rewards, key=f"tasks[{at}].rewards")
        samples: list[Sample] = []
        for path in item.data:
            samples += load_jsonl(path, task, image_root=item.image_root, read_sizes=True, params=params)
        if item.max_samples is not None:
            samples = samples[: item.max_samples]
        if not samples:
            raise DataError(f"task {item.task!r}: no records in {item.data}")
        entries.append(MixtureEntry(task, params, weights, samples))
        log.info("task %s: %d records from %s", item.task, len(samples), ", ".join(item.data))
    return entries
