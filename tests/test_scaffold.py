"""`vgrpo new-plugin`: names validated with the rule; the package it writes installs and passes its tests."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vgrpo.cli import main
from vgrpo.config import TaskEntry
from vgrpo.errors import ParamsError
from vgrpo.scaffold import NAME_RULE, new_plugin, plugin_names
from vgrpo.testing import check_reward, check_task


def test_names_derived_from_a_dotted_name():
    names = plugin_names("acme.chart_qa")
    assert (names.distribution, names.package, names.entry_point, names.cls, names.func) == (
        "vgrpo-acme-chart-qa",
        "acme_chart_qa",
        "acme-chart-qa",
        "ChartQa",
        "chart_qa",
    )
    assert plugin_names("acme.vision.ocr2").distribution == "vgrpo-acme-vision-ocr2"
    assert plugin_names("acme.max").func == "max_reward"  # never shadows a builtin
    # nor a name the generated modules use, and is never taken for a test
    assert [
        plugin_names(f"acme.{last}").func for last in ("json", "pytest", "check_reward", "vgrpo_rewards")
    ] == [
        "json_reward",
        "pytest_reward",
        "check_reward_reward",
        "vgrpo_rewards_reward",
    ]
    assert plugin_names("acme.test_values").func == "reward_test_values"


@pytest.mark.parametrize("name", ["acme.json", "acme.pytest", "acme.vgrpo_rewards", "acme.test_values"])
def test_reward_names_that_collide_with_the_generated_modules_still_pass_their_tests(tmp_path, name):
    new_plugin(name, tmp_path, reward_only=True)
    folder = tmp_path / plugin_names(name).distribution
    env = {**os.environ, "PYTHONPATH": str(folder)}
    tests = str(folder / "tests")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            tests,
            "-k",
            "not test_plugin_is_installed",
        ],  # not pip-installed here
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b[5-9] passed\b", result.stdout) and "warning" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "it is empty"),
        ("chartqa", "it is not dotted (bare names are reserved for vgrpo's built-in tasks)"),
        ("Acme.chartqa", "uppercase"),
        ("acme.3d", "part '3d' starts with a digit"),
        ("acme.class", "part 'class' is a Python keyword"),
        ("acme..chartqa", "empty part"),
        ("acme.", "empty part"),
        ("acme._chart", "part '_chart' does not start with a letter"),
        ("acme.chart-qa", "characters other than a-z, 0-9 and '_': ['-']"),
        ("acme.chärt", "['ä']"),
        ("acme.chart qa", "[' ']"),
        ("vgrpo-acme-chartqa", "looks like a distribution name"),
        ("vgrpo.chartqa", "the namespace 'vgrpo' is reserved"),
        ("py.compile", "would shadow the standard library module"),
        ("acme." + "x" * 70, "it has 75 characters"),
        ("typing.extensions", "its package name 'typing_extensions' is already taken by an installed module"),
    ],
)
def test_bad_names_are_refused_with_the_rule(tmp_path, name, why):
    with pytest.raises(ParamsError) as info:
        new_plugin(name, tmp_path)
    message = str(info.value)
    assert why in message and f"The rule: {NAME_RULE}" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_existing_folder_is_refused(tmp_path):
    (tmp_path / "vgrpo-acme-chartqa").mkdir()
    with pytest.raises(ParamsError, match="already exists"):
        new_plugin("acme.chartqa", tmp_path)
    assert list((tmp_path / "vgrpo-acme-chartqa").iterdir()) == []


def test_cli_new_plugin(tmp_path, capsys):
    assert main(["new-plugin", "acme.chartqa", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "acme_chartqa/task.py" in out and "pip install -e ." in out
    assert main(["new-plugin", "acme.chartqa", "--dir", str(tmp_path)]) == 2
    assert main(["new-plugin", "Chart", "--dir", str(tmp_path), "--reward-only"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "already exists" in err and "it has uppercase letters" in err


def _install(folder: Path, site: Path) -> None:
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
            str(folder),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("reward_only", [False, True], ids=["task", "reward-only"])
def test_scaffold_round_trip(tmp_path, monkeypatch, reward_only):
    """Generate, pip-install, find the entry point, pass check_task/check_reward and the own tests."""
    name = "acme.shapes" if not reward_only else "acme.length_penalty"
    written = new_plugin(name, tmp_path / "src", reward_only=reward_only)
    names = plugin_names(name)
    folder = tmp_path / "src" / names.distribution
    rel = sorted(str(p.relative_to(folder)) for p in written)
    module = "rewards" if reward_only else "task"
    assert rel == sorted(
        [
            "pyproject.toml",
            "README.md",
            f"{names.package}/__init__.py",
            f"{names.package}/{module}.py",
            f"tests/test_{names.package}.py",
            "data/sample.jsonl",
            "data/images/shape-0.png",
            "data/images/shape-1.png",
            "data/images/shape-2.png",
        ]
    )
    assert (folder / "data/images/shape-0.png").read_bytes().startswith(b"\x89PNG")

    site = tmp_path / "site"
    _install(folder, site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("VGRPO_STRICT_PLUGINS", None)
    listing = subprocess.run(
        [sys.executable, "-m", "vgrpo.cli", "plugins", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [p for p in json.loads(listing)["plugins"] if p["distribution"] == names.distribution]
    assert rows == [
        {
            "name": names.entry_point,
            "distribution": names.distribution,
            "version": "0.1.0",
            "tasks": [] if reward_only else [name],
            "rewards": [name] if reward_only else [],
            "model_adapters": [],
        }
    ]

    # its own tests pass against the installed copy (vgrpo's pytest plugin provides the fixtures)
    tests = str(folder / "tests")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b[5-9] passed\b", result.stdout), result.stdout

    # and the contract holds in this process too
    monkeypatch.syspath_prepend(str(site))
    try:
        mod = importlib.import_module(f"{names.package}.{module}")
        if reward_only:
            check_reward(getattr(mod, names.func))
        else:
            check_task(getattr(mod, f"{names.cls}Task")())
    finally:
        for key in [k for k in sys.modules if k == names.package or k.startswith(names.package + ".")]:
            del sys.modules[key]


@pytest.mark.parametrize("reward_only", [False, True], ids=["task", "reward-only"])
def test_readme_tells_how_to_install_test_and_mix_and_its_yaml_validates(tmp_path, reward_only):
    new_plugin("acme.shapes", tmp_path, reward_only=reward_only)
    readme = (tmp_path / "vgrpo-acme-shapes" / "README.md").read_text()
    for needle in ("pip install -e .", "pytest tests", "vgrpo plugins", "acme.shapes", "required_plugins"):
        assert needle in readme
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    config = yaml.safe_load(block)
    assert config["required_plugins"] == ["vgrpo-acme-shapes>=0.1"]
    entries = [TaskEntry.model_validate(e) for e in config["tasks"]]
    if reward_only:
        assert entries[0].rewards and entries[0].rewards["acme.shapes"] == 0.5
    else:
        assert entries[0].task == "acme.shapes" and entries[1].task == "count"
