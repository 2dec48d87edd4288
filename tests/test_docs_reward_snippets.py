"""The reward-testing snippets of docs/plugins/writing-a-reward.md and docs/plugins/testing.md run as they
stand: each page's test code is written to a file and run by pytest in a fresh process (the reward page's
against the package module its section 1 shows, ``acme_length/rewards.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins"


def _section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert heading in text, f"{page} lost its section {heading!r}"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _python(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _pytest(folder: Path, test_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_writing_a_reward_test_section_passes_against_the_pages_reward(tmp_path: Path):
    [module, *_] = _python(_section("writing-a-reward.md", "## 1. Generate the package"))
    assert "def length(completion" in module, "section 1's first snippet is acme_length/rewards.py"
    [tests] = _python(_section("writing-a-reward.md", "## 4. Test it"))
    package = tmp_path / "acme_length"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "rewards.py").write_text(module, encoding="utf-8")
    (tmp_path / "test_rewards.py").write_text(tests, encoding="utf-8")
    result = _pytest(tmp_path, tmp_path / "test_rewards.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout


def test_testing_pages_call_reward_section_passes(tmp_path: Path):
    [tests] = _python(_section("testing.md", "## Calling a reward in a unit test"))
    (tmp_path / "test_call_reward_doc.py").write_text(tests, encoding="utf-8")
    result = _pytest(tmp_path, tmp_path / "test_call_reward_doc.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout
