"""The example model-adapter plugin (examples/plugins/vgrpo-acme-adapter) pip-installs, is listed with its
adapter, and passes its own tests against the installed copy: discovery, selection by model type, hidden
states x lm_head = logits, fused log-probs = log_softmax + gather, group encoding = repeated rows; the
snippets of docs/plugins/writing-a-model-adapter.md run as they stand."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "vgrpo-acme-adapter"
PAGE = ROOT / "docs" / "plugins" / "writing-a-model-adapter.md"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The package pip-installed into a new --target folder, built from a copy (the source stays clean)."""
    tmp = tmp_path_factory.mktemp("acme_adapter")
    copy = shutil.copytree(EXAMPLE, tmp / EXAMPLE.name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(copy),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return {**os.environ, "PYTHONPATH": str(site)}


def test_it_is_listed_with_its_adapter(env):
    result = subprocess.run(
        [sys.executable, "-m", "vgrpo.cli", "--strict-plugins", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    listing = json.loads(result.stdout)
    row = next(p for p in listing["plugins"] if p["name"] == "acme-adapter")
    assert row == {
        "name": "acme-adapter",
        "distribution": "vgrpo-acme-adapter",
        "version": "0.1.0",
        "tasks": [],
        "rewards": [],
        "model_adapters": ["acme.llava"],
    }
    assert listing["errors"] == []


def test_the_docs_snippets_and_its_own_tests_pass_against_the_installed_copy(env, tmp_path):
    """One process (torch and transformers import once): the python snippets of the page's "Testing an
    adapter" section as they stand, then the package's tests."""
    section = PAGE.read_text(encoding="utf-8").split("## Testing an adapter", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(snippets) >= 4, "the page's testing section lost its snippets"
    script = tmp_path / "run.py"
    script.write_text(
        "\n".join(snippets)
        + '\nprint("snippets ok")\nimport sys, pytest\n'
        + f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(EXAMPLE / 'tests')!r}]))\n",
        encoding="utf-8",
    )
    run = [sys.executable, str(script)]
    result = subprocess.run(run, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "snippets ok" in result.stdout and " passed" in result.stdout and "skipped" not in result.stdout
