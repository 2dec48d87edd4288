"""The log-prob benchmark runs every implementation on the same inputs, and they agree on loss and gradients."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vgrpo.bench.logprobs import IMPLS, measure, targets_met

SIZE = dict(tokens=64, hidden=16, vocab=300)


@pytest.fixture(scope="module")
def rows():
    return [measure(impl, **SIZE, seq_len=16, reps=1, warmup=0) for impl in IMPLS]


def test_every_implementation_computes_the_same_loss_and_gradients(rows):
    naive = rows[0]
    assert naive["impl"] == "naive" and naive["loss"] != 0
    for r in rows:
        assert r["tokens"] == 64 and r["seconds"] > 0 and r["peak_mib"] >= 0
        assert r["loss"] == pytest.approx(naive["loss"], rel=1e-4, abs=1e-6), r["impl"]
        assert r["grad_weight_norm"] == pytest.approx(naive["grad_weight_norm"], rel=1e-4), r["impl"]
        assert r["grad_hidden_norm"] == pytest.approx(naive["grad_hidden_norm"], rel=1e-4), r["impl"]


def test_targets_compare_vgrpo_with_naive_and_liger():
    row = lambda impl, s, m: {"impl": impl, "seconds": s, "peak_mib": m}  # noqa: E731
    met = targets_met([row("naive", 2.0, 1000), row("liger", 2.5, 400), row("vgrpo", 1.5, 300)])
    assert met == {
        "memory <= 0.35x naive": True,
        "time <= 1.1x naive": True,
        "memory < liger": True,
        "time <= liger": True,
    }
    met = targets_met([row("naive", 2.0, 1000), row("liger", 1.0, 200), row("vgrpo", 2.3, 360)])
    assert not any(met.values())


def test_cli_json_for_one_implementation():
    cmd = [
        sys.executable,
        "-m",
        "vgrpo.bench",
        "logprobs",
        "--impl",
        "vgrpo",
        "--tokens",
        "32",
        "--hidden",
        "8",
        "--vocab",
        "100",
        "--seq-len",
        "8",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--json",
    ]
    doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert doc["benchmark"] == "logprobs" and doc["vocab"] == 100
    (row,) = doc["results"]
    assert row["impl"] == "vgrpo" and row["tokens"] == 32 and row["memory_method"]
