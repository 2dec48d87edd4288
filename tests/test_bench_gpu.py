"""``python -m vgrpo.bench gpu``: the --tiny harness runs every section on CPU (Triton through its interpreter) and
reports real numbers; without CUDA and without --tiny it refuses in one line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from vgrpo.bench import gpu_trl
from vgrpo.bench.gpu import SectionResult, _importable, _version, markdown, passed, section_main
from vgrpo.bench.gpu_engine import VARIANTS
from vgrpo.bench.gpu_kernels import TINY_SIZES

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the harness")


def test_tiny_run_measures_every_section_and_passes(tmp_path):
    """One test, one run (about a minute and a half on 2 cores): pytest-xdist would repeat a shared fixture."""
    out = tmp_path / "gpu-report"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "vgrpo.bench", "gpu", "--tiny", "--out", str(out), "--budget-s", "300"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    check_report(proc, out)
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    check_kernels(doc["sections"][0])
    check_engine(doc["sections"][1])
    check_trl(doc["sections"][2], doc["sections"][1], proc.stdout)


def check_report(proc, out):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "report.md").read_text(encoding="utf-8").strip() == proc.stdout.strip()
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["passed"] is True and passed(doc)
    env = doc["environment"]
    assert env["mode"] == "tiny" and env["torch"] == torch.__version__ and env["driver"] == "none"
    assert [s["name"] for s in doc["sections"]] == ["kernels", "engine", "trl"]
    trl_status = "ok" if _importable("trl") else "skipped"
    assert [s["status"] for s in doc["sections"]] == ["ok", "ok", trl_status]
    assert all(0 < s["seconds"] <= s["limit_s"] + 20 for s in doc["sections"])
    assert "# vgrpo GPU acceptance report (tiny)" in proc.stdout and "## kernels: ok" in proc.stdout


def check_kernels(kernels):
    rows = [r for r in kernels["rows"] if r["status"] == "ok"]
    impls = {r["impl"] for r in rows}
    ours = {
        f"{b}-{k}{m}" for b in ("torch", "triton") for k in ("logprobs", "fused") for m in ("", "-blocked")
    }
    assert {"naive"} | ours <= impls
    assert {r["weight_grad"] for r in rows if r["impl"] in ours} == {"buffer", "blocked"}
    assert {(r["dtype"], r["H"], r["N"]) for r in rows} == {
        (d, h, n) for d in ("bfloat16", "float32") for h, n in TINY_SIZES
    }
    for r in rows:
        assert r["seconds"] > 0 and r["tflops"] > 0 and 0 < r["matmul_tflops"] and r["rate_fraction"] > 0
        assert r["finite"] and all(math.isfinite(r[k]) for k in ("loss_err", "grad_h_err", "grad_w_err"))
        if r["impl"] != "liger":
            assert r["logp_err"] is not None
        if r["impl"] != "naive" or r["dtype"] == "float32":  # naive bf16 rounds its logits to bf16
            tol = 2e-2 if r["dtype"] == "bfloat16" else 1e-3
            assert r["loss_err"] < tol and r["grad_w_err"] < 3 * tol, r
    for r in rows:  # the largest fp32 tensor of a step (counted by a dispatch mode off CUDA)
        full = r["V"] * r["H"]
        if r["impl"] in ours and r["dtype"] == "bfloat16":
            assert (r["largest_fp32"] < full) == r["impl"].endswith("-blocked"), r
        elif r["impl"] in ours:  # an fp32 weight's gradient is itself an fp32 [V, H] tensor
            assert r["largest_fp32"] >= full, r
        elif r["impl"] == "naive":
            assert r["largest_fp32"] >= r["N"] * r["V"], r  # the full logits
    names = [c["name"] for c in kernels["checks"]]
    assert sum("matches fp32" in n for n in names) == 8 * 2 * len(TINY_SIZES)  # vgrpo impls x dtypes x sizes
    assert all(c["passed"] is True for c in kernels["checks"] if "matches fp32" in c["name"])
    blocked = [c for c in kernels["checks"] if "holds no fp32 [V, H] tensor" in c["name"]]
    assert len(blocked) == 4 * len(TINY_SIZES) and all(c["passed"] is True for c in blocked)  # bf16 only
    picks = [n for n in kernels["notes"] if "weight_grad='auto' picks" in n]
    assert any(n.startswith("bfloat16") and "picks blocked" in n for n in picks)
    assert any(n.startswith("float32") and "picks buffer" in n for n in picks)
    targets = [
        c
        for c in kernels["checks"]
        if c["name"].startswith("triton-fused") and not c["name"].endswith(("matches fp32", "[V, H] tensor"))
    ]
    assert targets and all(c["passed"] is None for c in targets)  # speed targets are not judged at tiny size


def check_engine(engine):
    rows = {r["variant"]: r for r in engine["rows"]}
    assert [name for name, _ in VARIANTS] == list(rows)[: len(VARIANTS)]
    for r in rows.values():
        assert r["steps"] == 3 and r["completion tokens"] == 2 * 2 * 8  # fixed-length completions
        phases = [r[f"{p} s"] for p in ("generate", "old/ref log-probs", "policy fwd+bwd", "optimizer")]
        assert all(p > 0 for p in phases) and sum(phases) <= r["total s"] * 1.01
        assert r["completion tokens/s"] > 0
        assert r["finite"] and all(math.isfinite(x) for x in r["loss"] + r["grad_norm"])
        assert all(g > 0 for g in r["grad_norm"])
    finite = [c for c in engine["checks"] if c["name"].endswith("loss and grad norm finite")]
    assert len(finite) == len(rows) and all(c["passed"] is True for c in finite)
    assert {"fused vs naive log-probs", "grad checkpointing on vs off"} <= {
        c["name"] for c in engine["checks"]
    }
    # the hooks for work on other branches: a variant when this build's config has the key, else a line
    assert any("shared" in n for n in engine["notes"] + list(rows))
    assert any("vLLM" in n for n in engine["notes"] + list(rows))
    assert any("TRL" in n and "trl section" in n for n in engine["notes"])


def check_trl(trl, engine, stdout):
    """TRL's three steps on the engine's workload, next to the engine's first variant and their ratios."""
    if trl["status"] == "skipped":  # a build without the dev extra
        assert trl["notes"] == [gpu_trl.SKIPPED] and not trl["rows"] and gpu_trl.SKIPPED in stdout
        return
    assert trl["sizes"]["trl"] == _version("trl") != "missing"
    assert trl["sizes"]["G"] == 2 and trl["sizes"]["new_tokens"] == 8 and trl["sizes"]["num_iterations"] == 1
    ours, theirs, ratio = trl["rows"]
    assert [ours["variant"], theirs["variant"], ratio["variant"]] == [
        f"vgrpo, {VARIANTS[0][0]}",
        gpu_trl.TRL_ROW,
        gpu_trl.RATIO_ROW,
    ]
    engine_row = next(r for r in engine["rows"] if r["variant"] == VARIANTS[0][0])
    assert ours["total s"] == engine_row["total s"] and ours["steps"] == engine_row["steps"] == 3
    assert theirs["steps"] == 3 and theirs["completion tokens"] == 2 * 2 * 8  # fixed-length, as vgrpo's
    assert len(theirs["step times"]) == 3 and all(t > 0 for t in theirs["step times"])
    assert theirs["total s"] > 0 and theirs["completion tokens/s"] > 0 and theirs["setup_s"] > 0
    assert theirs["finite"] and all(math.isfinite(x) for x in theirs["loss"] + theirs["grad_norm"])
    assert all(g > 0 for g in theirs["grad_norm"])  # drawn rewards: real advantages, a real gradient
    assert ours["peak MiB"] == theirs["peak MiB"] == ratio["peak MiB"] == "n/a"  # no CUDA here
    assert ratio["total s"] == pytest.approx(ours["total s"] / theirs["total s"])
    assert ratio["completion tokens/s"] == pytest.approx(
        ours["completion tokens/s"] / theirs["completion tokens/s"]
    )
    checks = {c["name"]: c for c in trl["checks"]}
    assert checks[f"{gpu_trl.TRL_ROW}: loss and grad norm finite"]["passed"] is True
    assert checks["vgrpo vs TRL"]["passed"] is None and "n/a (no CUDA)" in checks["vgrpo vs TRL"]["value"]
    assert f"({ratio['total s']:.2f}x)" in checks["vgrpo vs TRL"]["value"]
    assert "## trl: ok" in stdout and f"| {gpu_trl.RATIO_ROW} |" in stdout


def test_a_failed_check_fails_the_report():
    doc = {
        "environment": {
            "mode": "tiny",
            "date": "d",
            "device": "cpu",
            "driver": "none",
            "torch": "t",
            "cuda_runtime": None,
            "triton": "x",
            "transformers": "y",
            "vgrpo": "z",
            "python": "3",
            "optional": {},
        },
        "budget_s": 10.0,
        "seconds": 1.0,
        "sections": [
            {
                "name": "kernels",
                "status": "ok",
                "seconds": 1.0,
                "limit_s": 5.0,
                "sizes": {},
                "rows": [],
                "notes": [],
                "error": None,
                "checks": [{"name": "a", "passed": False, "value": "1 > 0"}],
            },
        ],
    }
    assert not passed(doc)
    doc["passed"] = False
    assert "[**FAIL**] a: 1 > 0" in markdown(doc)
    doc["sections"][0]["checks"][0]["passed"] = None
    doc["sections"][0]["status"] = "timeout"
    assert not passed(doc)


def test_without_cuda_and_without_tiny_exits_2_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "vgrpo.bench", "gpu", "--out", str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_engine_model_has_qwen25_vl_3b_architecture_and_sees_256_visual_tokens_per_scene():
    from PIL import Image

    from vgrpo.bench.gpu_engine import IMAGE_SIDE, MODEL_3B, RandomInitAdapter

    # on the meta device: no memory, no initialisation time
    model, processor = RandomInitAdapter("meta").load(MODEL_3B, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    # Qwen2.5-VL-3B-Instruct's published size: 3.75 B parameters (lm_head tied to the embeddings)
    assert abs(params - 3.75e9) / 3.75e9 < 0.005
    assert model.lm_head.weight.shape == (151_936, 2048) and model.dtype == torch.bfloat16
    # a random model samples ids past the byte-level tokenizer's 272: they decode to nothing, not an error
    assert processor.tokenizer.decode([151_000]) == ""
    scene = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE))
    inputs = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[scene], return_tensors="pt"
    )
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 256


def _trl_section_in_process(tmp_path):
    """The trl section's code in this process at tiny size (what its own process runs), and its result."""
    assert section_main("trl", tmp_path, 120.0, tiny=True) == 0
    return SectionResult.load(tmp_path / "trl.json")


def test_without_trl_the_section_is_skipped_with_a_line_and_the_report_still_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_trl, "_importable", lambda name: name != "trl")
    result = _trl_section_in_process(tmp_path)
    assert result.status == "skipped" and result.notes == [gpu_trl.SKIPPED] and not result.rows
    doc = {"sections": [dataclasses.asdict(result)]}
    assert passed(doc)


@pytest.mark.parametrize(
    ("exc", "status", "says"),
    [
        (
            TypeError("GRPOConfig.__init__() got an unexpected keyword argument 'use_cpu'"),
            "error",
            "TypeError",
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "out of memory",
            "2.00 GiB",
        ),
    ],
)
def test_a_trl_failure_is_reported_as_such_with_the_sizes(tmp_path, monkeypatch, exc, status, says):
    """A version mismatch or an out-of-memory inside TRL ends the section with its status, sizes and version."""
    pytest.importorskip("trl")
    import vgrpo.bench.step as step

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(step, "trl_grpo_trainer", broken)
    result = _trl_section_in_process(tmp_path)
    assert result.status == status and says in result.error
    assert result.sizes["G"] == 2 and result.sizes["trl"] == _version("trl")
    if status == "error":
        assert f"TRL {_version('trl')} GRPOTrainer failed" in result.error
    else:
        assert "'G': 2" in result.error  # the sizes, in the message itself
    assert not passed({"sections": [dataclasses.asdict(result)]})


@pytest.mark.slow  # a TRL step in this process (10-25 s on 2 shared cores): `make test-slow`
def test_trl_stops_when_its_time_is_spent_and_reports_the_steps_it_measured(tmp_path):
    """At its section's limit TRL ends after the step in progress: one step measured, a line says so; without an
    engine section there is nothing to compare with, and a line says that too."""
    pytest.importorskip("trl")
    assert section_main("trl", tmp_path, 0.1, tiny=True) == 0
    result = SectionResult.load(tmp_path / "trl.json")
    assert result.status == "ok" and [r["variant"] for r in result.rows] == [gpu_trl.TRL_ROW]
    (row,) = result.rows
    assert row["steps"] == 1 and len(row["step times"]) == 1 and row["total s"] > 0
    assert row["total s"] == pytest.approx(
        row["step times"][0], abs=1e-3
    )  # the one step (rounded in the list)
    assert row["completion tokens"] == 2 * 2 * 8 and row["finite"]
    assert "TRL stopped after 1 of 3 steps (section time spent)" in result.notes
    assert any("no vgrpo figures to compare with" in n for n in result.notes)
    assert [c.passed for c in result.checks] == [True]


def test_trl_reference_patch_says_which_trl_lacks_the_hook(monkeypatch):
    pytest.importorskip("trl")
    import trl.trainer.grpo_trainer as grpo

    original = grpo.create_model_from_path
    with gpu_trl.reference_from("the copy"):
        assert grpo.create_model_from_path("any/path", dtype=torch.bfloat16) == "the copy"
    assert grpo.create_model_from_path is original
    monkeypatch.delattr(grpo, "create_model_from_path")
    with pytest.raises(RuntimeError, match=r"TRL .*no create_model_from_path"), gpu_trl.reference_from(None):
        pass


def test_ratios_are_vgrpo_over_trl_and_memory_is_na_without_cuda_figures():
    ours = {"total s": 3.0, "completion tokens/s": 400.0, "peak MiB": 30_000.0}
    theirs = {"total s": 6.0, "completion tokens/s": 200.0, "peak MiB": 40_000.0}
    r = gpu_trl.ratios(ours, theirs)
    assert r == {"variant": gpu_trl.RATIO_ROW, "total s": 0.5, "completion tokens/s": 2.0, "peak MiB": 0.75}
    assert gpu_trl.compare(ours, theirs, r).endswith("peak 30,000 vs 40,000 MiB (0.75x)")
    r = gpu_trl.ratios({**ours, "peak MiB": "n/a"}, {**theirs, "peak MiB": "n/a"})
    assert r["peak MiB"] == "n/a" and "n/a (no CUDA)" in gpu_trl.compare(ours, theirs, r)
