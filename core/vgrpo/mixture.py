"""The task mixture sampler: seeded, weighted, and resumable exactly from a small state dict.

Draw ``i`` picks a task with probability proportional to its weight, then that task's next record from a
fresh permutation per epoch. Every random choice is a pure function of (seed, draw number) or (seed, task,
epoch), so the sampler's whole state is its position and per-task counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draw:
    """One sampled record: which mixture entry and which record in it."""

    task_index: int
    record_index: int


class MixtureSampler:
    """Weighted sampling over several datasets; ``state_dict``/``load_state_dict`` resume it exactly."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"expected one weight per dataset, got {len(sizes)} sizes and {len(weights)} weights")
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
        return {"seed": self.seed, "position": self.position, "counts": list(self.counts), "sizes": list(self.sizes)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("sizes") != self.sizes or state.get("seed") != self.seed:
            raise ValueError(
                f"sampler state is for datasets of sizes {state.get('sizes')} with seed {state.get('seed')}, "
                f"but this run has sizes {self.sizes} and seed {self.seed}: the data or seed changed"
            )
        self.position = int(state["position"])  # type: ignore[arg-type]
        self.counts = [int(c) for c in state["counts"]]  # type: ignore[union-attr]
