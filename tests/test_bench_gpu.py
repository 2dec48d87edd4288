"""``python -m vgrpo.bench gpu``: the --tiny harness runs every section on CPU (Triton through its interpreter) and
reports real numbers; without CUDA and without --tiny it refuses in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from vgrpo.bench.gpu import markdown, passed
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


def check_report(proc, out):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "report.md").read_text(encoding="utf-8").strip() == proc.stdout.strip()
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["passed"] is True and passed(doc)
    env = doc["environment"]
    assert env["mode"] == "tiny" and env["torch"] == torch.__version__ and env["driver"] == "none"
    assert [s["name"] for s in doc["sections"]] == ["kernels", "engine"]
    assert all(s["status"] == "ok" and 0 < s["seconds"] <= s["limit_s"] + 20 for s in doc["sections"])
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
