"""Shared fixtures: fake plugin distributions on a temporary path (no pip install needed)."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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


_HOOK = '''
@vgrpo.hookimpl
def vgrpo_tasks():
    return [EchoTask]
'''


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    monkeypatch.delenv("VGRPO_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("VGRPO_DISABLE_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    site = FakeSite(tmp_path)
    yield site
    for m in site.modules:
        sys.modules.pop(m, None)
