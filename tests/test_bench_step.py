"""The step benchmark runs vgrpo and TRL's GRPOTrainer on the same tiny workload and reports its fields."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("trl")

ROW_FIELDS = {
    "impl",
    "step_s",
    "mean_s",
    "interval_s",
    "times",
    "peak_rss_mib",
    "step_peak_mib",
    "baseline_rss_mib",
    "completion_length",
    "memory_method",
    "threads",
}


@pytest.mark.slow  # 60 s: the three implementations, a step each (`make test-slow`)
def test_both_implementations_run_and_the_json_has_the_fields(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "vgrpo.bench",
        "step",
        "--impl",
        "all",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--prompts",
        "1",
        "--num-generations",
        "2",
        "--max-new-tokens",
        "4",
        "--workdir",
        str(tmp_path),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "step" and doc["settings"]["completions_per_step"] == 2
    rows = {r["impl"]: r for r in doc["results"]}
    assert set(rows) == {"vgrpo", "vgrpo-repeated", "trl"}
    for row in rows.values():
        assert ROW_FIELDS <= set(row), row
        assert len(row["times"]) == 2 and row["step_s"] > 0 and row["peak_rss_mib"] > 0
        assert row["completion_length"] == 4  # fixed-length generation: the same tokens per step in both
    assert set(doc["ratios"]) >= {"step_s", "peak_rss_mib"} and len(doc["targets"]) == 5
    for impl in ("vgrpo", "vgrpo-repeated"):  # the phases of a step, within it
        row = rows[impl]
        assert 0 < row["train_s"] < row["step_s"] and 0 < row["generate_s"] < row["step_s"]
        assert row["prompt_tokens"] > 16  # the image's 16 visual tokens and the question
    assert set(doc["shared_prefix_speedups"]) == {"step_s", "train_s", "generate_s", "peak_rss_mib"}


def test_the_expected_saving_and_the_shared_prefix_targets():
    from vgrpo.bench.step import expected_saving, shared_speedups, targets_met

    assert expected_saving(1300, 100, 8) == round(11200 / 2100, 3)  # the example, by hand
    assert expected_saving(100, 0, 4) == 4.0  # no completion: the prompt's G copies are all the saving
    rows = [
        {"impl": "vgrpo", "step_s": 2.0, "train_s": 1.0, "generate_s": 1.0, "peak_rss_mib": 500.0},
        {"impl": "vgrpo-repeated", "step_s": 5.0, "train_s": 3.5, "generate_s": 1.5, "peak_rss_mib": 600.0},
    ]
    assert shared_speedups(rows) == {"step_s": 2.5, "train_s": 3.5, "generate_s": 1.5, "peak_rss_mib": 0.833}
    assert all(targets_met(rows).values()) and len(targets_met(rows)) == 3
    rows[1]["train_s"] = 2.9
    assert not targets_met(rows)["training passes >= 3x faster than repeated"]


def test_trl_sees_the_same_chat_prompt_as_vgrpo(tmp_path):
    """Fairness: TRL's dataset rows render to the very text (and image slots) vgrpo encodes."""
    from trl.data_utils import prepare_multimodal_messages

    from vgrpo.bench.step import _trl_dataset, prepare
    from vgrpo.data import load_jsonl
    from vgrpo.models.tiny import load_image_only_processor
    from vgrpo.plugins import get_registry

    model_dir, data = prepare(tmp_path, 0, "count")
    processor = load_image_only_processor(model_dir)
    task = get_registry().task("count")
    params = task.params({})
    samples = load_jsonl(data, task)[:3]
    dataset = _trl_dataset(task, params, samples)
    for sample, row in zip(samples, dataset):
        ours = processor.apply_chat_template(
            task.build_prompt(sample, params), add_generation_prompt=True, tokenize=False
        )
        theirs = processor.apply_chat_template(
            prepare_multimodal_messages(row["prompt"], images=row["images"]),
            add_generation_prompt=True,
            tokenize=False,
        )
        assert theirs == ours and ours.count("<|image_pad|>") == 1
