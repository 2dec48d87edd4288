"""Shared fixtures: fake plugin distributions on a temporary path (no pip install needed), and TRL as an oracle."""

from __future__ import annotations

import sys
import textwrap
import types
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

TASK_SOURCE = '''
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed, sample):
    """1.0 when the answer equals the solution."""
    return 1.0 if parsed == sample.solution else 0.0

class EchoTask(vgrpo.Task):
    name = "{task_name}"
    version = "1.0.0"
    description = "Echo the answer."
    template = vgrpo.PromptTemplate(user="{{question}}")
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {{"id": "e", "question": "Say hi", "solution": "hi"}}
    example_completion = "<think>.</think><answer>hi</answer>"

    def parse(self, completion, params):
        return vgrpo.extract_answer(completion)

    def metric(self, predictions, samples, params):
        return {{"accuracy": sum(p == s.solution for p, s in zip(predictions, samples)) / max(len(samples), 1)}}
'''


class FakeSite:
    """A directory of fake installed distributions, prepended to sys.path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(
        self,
        dist: str,
        version: str = "1.0.0",
        *,
        source: str,
        entry_point: str | None = None,
        module: str | None = None,
        root: Path | None = None,
    ) -> str:
        """Install ``source`` as a module of distribution ``dist`` with a ``vgrpo`` entry point; returns module."""
        root = root or self.root
        module = module or f"fake_{dist.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        entry_point = entry_point or dist
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[vgrpo]\n{entry_point} = {module}\n")
        self.modules.append(module)
        return module

    @staticmethod
    def task_source(task_name: str) -> str:
        """Source of a valid plugin module providing one task called ``task_name``."""
        return TASK_SOURCE.format(task_name=task_name) + _HOOK

    def task_plugin(self, dist: str, task_name: str, **kw: object) -> str:
        return self.add(dist, source=self.task_source(task_name), **kw)  # type: ignore[arg-type]


_HOOK = """
@vgrpo.hookimpl
def vgrpo_tasks():
    return [EchoTask]
"""


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    monkeypatch.delenv("VGRPO_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("VGRPO_DISABLE_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    site = FakeSite(tmp_path)
    yield site
    for m in site.modules:
        sys.modules.pop(m, None)


@pytest.fixture
def trl_trainer() -> Callable[..., types.SimpleNamespace]:
    """A factory of just enough of a TRL GRPOTrainer for its unbound ``_compute_loss`` to run on given
    per-token log-probs: TRL's own loss code is the oracle for vgrpo's."""

    def _fake_trainer(logps, *, loss_type, beta, eps, eps_high, level, max_len):
        """Just enough of a GRPOTrainer for its unbound _compute_loss to run on given per-token log-probs."""
        acc = types.SimpleNamespace(
            num_processes=1,
            sync_gradients=True,
            gather=lambda x: x,
            gather_for_metrics=lambda x: x,
            reduce=lambda x, reduction="sum": x,
        )
        args = types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1)
        fake = types.SimpleNamespace(
            accelerator=acc,
            args=args,
            loss_type=loss_type,
            beta=beta,
            epsilon_low=eps,
            epsilon_high=eps_high,
            importance_sampling_level=level,
            max_completion_length=max_len,
            top_entropy_quantile=1.0,
            off_policy_mask_threshold=None,
            use_vllm=False,
            aux_loss_enabled=False,
            _entropy_bonus_enabled=False,
            current_gradient_accumulation_steps=1,
            model=types.SimpleNamespace(training=True),
            _metrics={"train": defaultdict(list)},
        )
        fake._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
        return fake

    return _fake_trainer


LETTERS_TASK = '''
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(completion):
    """Share of lowercase ASCII letters in the completion (a random model earns some)."""
    return sum("a" <= c <= "z" for c in completion) / len(completion) if completion else 0.0

class Letters(vgrpo.Task):
    name = "acme.letters"
    description = "Write lowercase letters."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy,)
    default_weights = {"accuracy": 1.0}
    example = {"id": "0", "question": "Write letters", "solution": "abc"}
    example_completion = "abc"
    def parse(self, completion, params):
        return completion
    def metric(self, predictions, samples, params):
        return {}

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Letters()]
'''


@pytest.fixture(scope="session")
def letters_task_source() -> str:
    """Source of a plugin module with task ``acme.letters``, whose reward a random model already earns (so GRPO
    losses and gradients are not zero) and can learn to raise."""
    return LETTERS_TASK
