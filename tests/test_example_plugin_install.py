"""A third-party plugin from examples/ really pip-installs and is discovered through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "vgrpo-acme-yesno"


def test_pip_installed_example_plugin_is_listed_and_scores(tmp_path):
    site = tmp_path / "site"
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
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    vgrpo = [sys.executable, "-m", "vgrpo.cli"]
    listing = json.loads(
        subprocess.run(
            [*vgrpo, "plugins", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    row = next(p for p in listing["plugins"] if p["name"] == "acme-yesno")
    assert row == {
        "name": "acme-yesno",
        "distribution": "vgrpo-acme-yesno",
        "version": "0.1.0",
        "tasks": ["acme.yesno"],
        "rewards": ["acme.brevity"],
        "model_adapters": [],
    }
    case = json.dumps({"completion": "<think>whiskers</think><answer>Yes.</answer>", "solution": "yes"})
    scored = subprocess.run(
        [*vgrpo, "score", "acme.yesno", "--weights", '{"accuracy": 1, "acme.brevity": 0.5}'],
        input=case,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = json.loads(scored)
    assert row["parsed"] == "yes" and row["rewards"]["acme.brevity"] == 1.0 and row["reward"] == 1.5
    # its own tests pass against the installed copy
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
