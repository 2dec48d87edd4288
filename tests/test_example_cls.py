"""The classification example (examples/plugins/vgrpo-acme-cls) pip-installs, passes its own tests, trains in
a mixture with the built-in count task, and `vgrpo data check` reports its record check by line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "plugins" / "vgrpo-acme-cls"
VGRPO = [sys.executable, "-m", "vgrpo.cli"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The package pip-installed into a new --target folder, built from a copy (the source stays clean)."""
    tmp = tmp_path_factory.mktemp("acme_cls")
    copy = shutil.copytree(PACKAGE, tmp / PACKAGE.name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
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


def _run(args: list[str], env: dict[str, str], rc: int = 0, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, capture_output=True, text=True, **kw)
    assert result.returncode == rc, result.stdout + result.stderr
    return result


def test_its_own_tests_pass_against_the_installed_copy(env, tmp_path):
    _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE / "tests")],
        env,
        cwd=tmp_path,
    )


def test_it_trains_in_a_mixture_with_count(env, tmp_path):
    _run(
        [sys.executable, "-m", "acme_cls.data", str(tmp_path / "cls"), "--n-train", "12", "--n-val", "0"], env
    )
    _run([*VGRPO, "data", "synth", str(tmp_path / "tiny"), "--tasks", "count", "--n", "8"], env)
    config = {
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "required_plugins": ["vgrpo-acme-cls>=0.1", "vgrpo-count>=0.1"],
        "model": {"name_or_path": "tiny"},
        "tasks": [
            {
                "task": "acme.cls",
                "data": str(tmp_path / "cls" / "train.jsonl"),
                "params": {"allow_number": True},
            },
            {"task": "count", "data": str(tmp_path / "tiny" / "count" / "train.jsonl")},
        ],
        "grpo": {"num_generations": 2, "beta": 0.0},
        "generation": {"max_completion_length": 8},
        "optim": {"max_steps": 2, "prompts_per_step": 4, "lr": 1.0e-3},
        "logging": {"tensorboard": False},
    }
    path = tmp_path / "mixture.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    _run([*VGRPO, "train", str(path)], env, cwd=tmp_path, timeout=300)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for task in ("acme.cls", "count"):
        seen = [r for r in rows if f"tasks/{task}/reward" in r]
        assert seen, f"{task} was never sampled"
        for key in ("accuracy", "format", "parse_rate"):
            assert all(f"tasks/{task}/{key}" in r for r in seen), (task, key)


def test_data_check_reports_a_record_whose_solution_is_not_a_candidate(env, tmp_path):
    _run([sys.executable, "-m", "acme_cls.data", str(tmp_path), "--n-train", "3", "--n-val", "0"], env)
    data = tmp_path / "train.jsonl"
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "solution": "dodecagon"})
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = _run([*VGRPO, "data", "check", "--task", "acme.cls", "--json", str(data)], env, rc=1)
    [problem] = json.loads(out.stdout)["problems"]
    assert (problem["line"], problem["field"]) == (2, "solution")
    assert problem["problem"].startswith("expected the solution to be one of the classes")
    table = _run([*VGRPO, "data", "check", "--task", "acme.cls", str(data)], env, rc=1).stdout
    assert "1 problem(s)" in table and "dodecagon" in table
