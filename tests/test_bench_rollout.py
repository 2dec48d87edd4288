"""`python -m vgrpo.bench rollout` runs a backend end to end and reports its figures."""

from __future__ import annotations

import json

from vgrpo.bench.__main__ import main


def test_the_hf_backend_reports_rollout_and_step_figures(capsys):
    args = ["rollout", "--backend", "hf", "--prompts", "1", "--num-generations", "2", "--max-new-tokens", "4"]
    assert main([*args, "--steps", "1", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # DeepSpeed may print a line first
    (row,) = out["rows"]
    assert row["backend"] == "hf"
    assert row["rollout_s"] > 0 and row["step_s"] > 0 and row["rollout_tokens_per_s"] > 0
    assert out["meta"]["model"] == "tiny-text" and out["meta"]["num_generations"] == 2
