"""The third-party examples pip-install, list with distribution and version, score, pass their own tests,
and train next to the built-in tasks (examples/mixture-with-third-party.yaml)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vgrpo.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
PACKAGES = ("vgrpo-acme-docqa", "vgrpo-acme-rewards")
MIXTURE = ROOT / "examples" / "mixture-with-third-party.yaml"
VGRPO = [sys.executable, "-m", "vgrpo.cli"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both packages pip-installed into a new --target folder, built from copies (the sources stay clean)."""
    tmp = tmp_path_factory.mktemp("third_party")
    skip = shutil.ignore_patterns("build", "*.egg-info")
    copies = [str(shutil.copytree(EXAMPLES / name, tmp / name, ignore=skip)) for name in PACKAGES]
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
            *copies,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return {**os.environ, "PYTHONPATH": str(site)}


def _run(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_both_are_listed_with_distribution_and_version(env):
    listing = json.loads(_run([*VGRPO, "--strict-plugins", "plugins", "--json"], env).stdout)
    rows = {p["name"]: p for p in listing["plugins"]}
    assert rows["acme-docqa"] == {
        "name": "acme-docqa",
        "distribution": "vgrpo-acme-docqa",
        "version": "0.1.0",
        "tasks": ["acme.docqa"],
        "rewards": [],
        "model_adapters": [],
    }
    assert rows["acme-rewards"] == {
        "name": "acme-rewards",
        "distribution": "vgrpo-acme-rewards",
        "version": "0.1.0",
        "tasks": [],
        "rewards": ["acme.repetition_penalty", "acme.length_penalty"],
        "model_adapters": [],
    }
    assert listing["errors"] == []


def test_the_shipped_completions_score(env):
    completions = EXAMPLES / "vgrpo-acme-docqa" / "sample" / "completions.jsonl"
    out = _run([*VGRPO, "score", "acme.docqa", str(completions)], env).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    # by hand: Levenshtein distance / longer length, 0 from 0.5 on (see the package README)
    assert [r["rewards"]["anls"] for r in rows] == pytest.approx([1, 6 / 7, 7 / 8, 4 / 7, 1, 0, 0, 0])
    assert [r["parsed"] for r in rows][-1] is None and all(r["error"] is None for r in rows)


def test_a_builtin_task_weights_the_reward_only_plugin(env):
    case = {
        "completion": "<think>I count. I count. I count. I count.</think><answer>3</answer>",
        "solution": 3,
    }
    weights = '{"accuracy": 1, "format": 1, "acme.repetition_penalty": 0.5}'
    [row] = [
        json.loads(line)
        for line in _run(
            [*VGRPO, "score", "count", "--weights", weights], env, input=json.dumps(case)
        ).stdout.splitlines()
    ]
    # 8 words, 6 trigrams of which 4 distinct: penalty -(1 - 4/6)
    assert row["rewards"]["acme.repetition_penalty"] == pytest.approx(-1 / 3)
    assert row["reward"] == pytest.approx(2 - 0.5 / 3)


def test_their_own_tests_pass_against_the_installed_copies(env, tmp_path):
    tests = [str(EXAMPLES / name / "tests") for name in PACKAGES]
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], env, cwd=tmp_path)


def test_the_mixture_trains_with_the_builtins(env, tmp_path):
    data = synthesize(tmp_path / "tiny", n_per_task=8, n_val=0, seed=0)
    out = tmp_path / "run"
    overrides = [f"tasks.{i}.data={data[t]}" for i, t in enumerate(("rec", "ovd", "count", "math"))] + [
        f"output_dir={out}",
        "optim.max_steps=2",
        "optim.prompts_per_step=4",
        "grpo.num_generations=2",
        "generation.max_completion_length=8",
        "tasks.4.weight=50",
        "logging.tensorboard=false",
    ]
    _run([*VGRPO, "train", str(MIXTURE), *overrides], env, cwd=tmp_path, timeout=300)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    docqa = [r for r in rows if "tasks/acme.docqa/anls" in r]
    assert docqa, "acme.docqa was never sampled"
    for key in ("reward", "parse_rate", "acme.repetition_penalty", "acme.length_penalty"):
        assert all(f"tasks/acme.docqa/{key}" in r for r in docqa), key
    assert (out / "checkpoint-2").is_dir()
