"""Faults and recovery: no code runs from a checkpoint, no run loses or mixes another's data, a damaged
checkpoint is skipped, and every fault ends in a clear message (docs/training.md, "Faults and recovery")."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil

import pytest

from vgrpo.checkpoint import MANIFEST, latest_intact_checkpoint
from vgrpo.config import load_config
from vgrpo.errors import CheckpointError, TrainingError
from vgrpo.synth import synthesize
from vgrpo.trainer import Trainer

TIMING = {"step_time_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data"), n_per_task=6, seed=0, tasks=["count", "math"])


def _config(data, out, *extra):
    tasks = ",".join(f"{{task: {t}, data: {p}}}" for t, p in data.items())
    return load_config(
        None,
        [
            f"output_dir={out}",
            "grpo.num_generations=2",
            "optim.prompts_per_step=1",
            "optim.lr=1e-3",
            "generation.max_completion_length=4",
            "logging.tensorboard=false",
            "checkpoint.every=1",
            "logging.completions_every=1",
            "checkpoint.save_total_limit=null",
            f"tasks=[{tasks}]",
            *extra,
        ],
    )


def _rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _steps(out):
    return [r["step"] for r in _rows(out)]


@pytest.fixture(scope="module")
def two_steps(data, tmp_path_factory):
    """A run of 2 steps with a checkpoint after each, to copy from."""
    out = tmp_path_factory.mktemp("base") / "run"
    Trainer(_config(data, out, "optim.max_steps=2")).train()
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_pickle_payload_in_every_file_runs_nothing(two_steps, data, tmp_path):
    run = _copy(two_steps, tmp_path / "run")
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    ckpt = run / "checkpoint-2"
    for f in ckpt.rglob("*"):
        if f.is_file():
            f.write_bytes(evil)
    with pytest.raises(CheckpointError):
        Trainer(_config(data, run, "optim.max_steps=3", f"checkpoint.resume={ckpt}")).train()
    # the layout before manifests and JSON: trainer_state.pt and rank-0.pt, read with weights_only=True
    legacy = _copy(two_steps / "checkpoint-1", tmp_path / "legacy" / "checkpoint-1")
    for name in (
        "trainer_state.json",
        "trainer_state.safetensors",
        "rank-0.json",
        "rank-0.safetensors",
        MANIFEST,
    ):
        (legacy / name).unlink()
    (legacy / "trainer_state.pt").write_bytes(evil)
    (legacy / "rank-0.pt").write_bytes(evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        Trainer(_config(data, tmp_path / "legacy", "optim.max_steps=3")).train()
    assert not marker.exists()


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_continues_exactly(two_steps, data, tmp_path):
    straight = tmp_path / "straight"
    Trainer(_config(data, straight, "optim.max_steps=3")).train()
    run = _copy(two_steps, tmp_path / "run")
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as a full disk or a kill would leave it
    (run / "checkpoint-3").write_text("not a folder")
    assert latest_intact_checkpoint(run) == run / "checkpoint-1"
    Trainer(_config(data, run, "optim.max_steps=3")).train()
    assert _steps(run) == [1, 2, 3]
    for a, b in zip(_rows(straight), _rows(run)):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }
    completions = [json.loads(x)["step"] for x in (run / "completions.jsonl").read_text().splitlines()]
    assert completions == sorted(completions) and set(completions) == {1, 2, 3}  # step 2 is not there twice


def test_resume_never_into_an_old_run_refuses_and_overwrite_moves_it_aside(two_steps, data, tmp_path):
    run = _copy(two_steps, tmp_path / "run")
    with pytest.raises(TrainingError, match="already holds a run"):
        Trainer(_config(data, run, "optim.max_steps=1", "checkpoint.resume=never")).train()
    Trainer(
        _config(
            data,
            run,
            "optim.max_steps=1",
            "checkpoint.resume=never",
            "checkpoint.overwrite=true",
            "checkpoint.save_total_limit=1",
        )
    ).train()
    assert _steps(run) == [1] and sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    (aside,) = (run / "previous-runs").iterdir()  # the old run, whole: nothing deleted
    assert sorted(p.name for p in aside.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [json.loads(x)["step"] for x in (aside / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_pruning_deletes_only_this_runs_checkpoints(two_steps, data, tmp_path):
    run = _copy(two_steps, tmp_path / "run")
    for name in ("checkpoint-9", "checkpoint-0"):  # another run's, with a higher and a lower step
        other = _copy(two_steps / "checkpoint-2", run / name)
        manifest = json.loads((other / MANIFEST).read_text())
        (other / MANIFEST).write_text(json.dumps({**manifest, "run_id": "someone-else"}))
    Trainer(
        _config(
            data,
            run,
            "optim.max_steps=3",
            f"checkpoint.resume={run / 'checkpoint-2'}",
            "checkpoint.save_total_limit=1",
        )
    ).train()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-3"]  # ours pruned
    (aside,) = (run / "previous-runs").iterdir()  # the other run's checkpoint after the resumed step: kept
    assert json.loads((aside / "checkpoint-9" / MANIFEST).read_text())["run_id"] == "someone-else"


def test_a_second_run_on_the_same_output_dir_is_refused_and_a_stale_lock_is_taken_over(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".vgrpo.lock").write_text(
        json.dumps({"pid": 1, "host": os.uname().nodename, "started": "earlier"})
    )
    with pytest.raises(TrainingError, match="in use by another run .pid 1"):
        Trainer(_config(data, run, "optim.max_steps=1")).train()
    (run / ".vgrpo.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    Trainer(_config(data, run, "optim.max_steps=1")).train()  # that process is gone: taken over
    assert _steps(run) == [1] and not (run / ".vgrpo.lock").exists()  # released at the end


def test_killed_before_the_first_checkpoint_starts_over_with_the_old_files_kept_aside(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 1}\n{"step": 2}\n{"step": 3, "lo'
    )  # and a line cut by the kill
    Trainer(_config(data, run, "optim.max_steps=2")).train()
    assert _steps(run) == [1, 2]
    (aside,) = (run / "previous-runs").iterdir()
    assert (aside / "metrics.jsonl").read_text().startswith('{"step": 1}')


def test_a_full_disk_says_so_and_leaves_no_partial_checkpoint(data, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="No space left on device.*GiB free"):
        Trainer(_config(data, run, "optim.max_steps=1")).train()
    assert not list(run.glob(".tmp-checkpoint-*")) and not list(run.glob("checkpoint-*"))


def test_a_resume_refuses_config_changes_that_break_exactness_and_applies_the_others(
    two_steps, data, tmp_path
):
    run = _copy(two_steps, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"grpo.num_generations: 2 → 4.*allow_config_change=true"):
        Trainer(_config(data, run, "optim.max_steps=3", "grpo.num_generations=4")).train()
    with pytest.raises(CheckpointError, match=r"model.shared_prefix: 'auto' → 'off'"):  # not bit-exact
        Trainer(_config(data, run, "optim.max_steps=3", "model.shared_prefix=off")).train()
    with pytest.raises(CheckpointError, match=r"tasks\[0\].task"):  # the task order
        reordered = dict(reversed(list(data.items())))
        Trainer(_config(reordered, run, "optim.max_steps=3")).train()
    assert _steps(run) == [1, 2]  # nothing ran
    Trainer(
        _config(data, run, "optim.max_steps=3", "optim.lr=2e-3")
    ).train()  # applied: the schedule rescales
    straight = tmp_path / "straight"
    Trainer(_config(data, straight, "optim.max_steps=3")).train()
    assert _rows(run)[2]["lr"] == pytest.approx(2 * _rows(straight)[2]["lr"])
    allowed = _copy(two_steps, tmp_path / "allowed")
    Trainer(
        _config(
            data,
            allowed,
            "optim.max_steps=3",
            "grpo.num_generations=4",
            "checkpoint.allow_config_change=true",
        )
    ).train()
    assert _steps(allowed) == [1, 2, 3]


HANGING_TASK = '''
import os
import signal
import threading
import time
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(completion, sample):
    """Hangs on training records; while it does, the run gets SIGTERM twice: to finish the step, to stop now."""
    if not sample.id.startswith("train"):  # the checks at registration
        return 0.0
    for delay in (0.5, 1.5):
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()
    time.sleep(600)
    return 0.0

class Hangs(vgrpo.Task):
    name = "acme.hangs"
    description = "A task whose reward hangs in the training process."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy,)
    default_weights = {"accuracy": 1.0}
    example = {"id": "0", "question": "q", "solution": "a"}
    example_completion = "a"
    def parse(self, completion, params):
        return completion
    def metric(self, predictions, samples, params):
        return {}

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Hangs()]
'''


def test_a_second_signal_stops_a_reward_hanging_in_process_within_seconds(fake_site, tmp_path, monkeypatch):
    import time

    from vgrpo.cli import main
    from vgrpo.reward_pool import RewardPool

    monkeypatch.setattr(RewardPool, "__init__", lambda *a, **k: pytest.fail("workers=0 scores in process"))
    fake_site.add("acme-hangs", source=HANGING_TASK)
    data = tmp_path / "hangs.jsonl"
    data.write_text(json.dumps({"id": "train-0", "question": "q", "solution": "a"}) + "\n")
    config = tmp_path / "hangs.yaml"
    config.write_text("seed: 0\n")
    start = time.monotonic()
    code = main(
        [
            "train",
            str(config),
            f"output_dir={tmp_path / 'run'}",
            f"tasks=[{{task: acme.hangs, data: {data}}}]",
            "rewards.workers=0",
            "grpo.num_generations=2",
            "optim.prompts_per_step=1",
            "generation.max_completion_length=2",
            "logging.tensorboard=false",
        ]
    )
    assert code == 143 and time.monotonic() - start < 60
    assert not (tmp_path / "run" / ".vgrpo.lock").exists()


@pytest.mark.parametrize(
    "override", ["optim.lr=inf", "seed=-1", "optim.betas=[2,2]", "rewards.timeout_s=inf", "optim.lr=nan"]
)
def test_config_values_that_cannot_work_are_refused_with_the_key_named(override):
    from vgrpo.errors import ParamsError

    with pytest.raises(ParamsError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])


def test_a_non_utf8_config_and_an_unwritable_output_dir_get_a_message_before_any_model_loads(data, tmp_path):
    from vgrpo.errors import ParamsError

    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("seed: 0  # café\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="not UTF-8"):
        load_config(bad)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TrainingError, match="cannot be written"):
        Trainer(_config(data, blocker / "run", "optim.max_steps=1")).train()


def test_when_no_image_of_a_task_opens_the_run_stops_with_a_message(tmp_path):
    from vgrpo.errors import DataError

    (tmp_path / "broken.png").write_bytes(b"not a png")
    records = tmp_path / "count.jsonl"
    records.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(i),
                    "image": "broken.png",
                    "question": "How many?",
                    "solution": 1,
                    "image_size": [8, 8],
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    with pytest.raises(DataError, match="could not be used"):
        Trainer(_config({"count": records}, tmp_path / "run", "optim.max_steps=1")).train()


def test_an_image_too_large_to_decode_or_too_thin_is_refused_before_decoding(tmp_path):
    from PIL import Image

    from vgrpo.errors import DataError
    from vgrpo.prompts import open_images
    from vgrpo.task import Sample

    Image.new("RGB", (4000, 3000)).save(tmp_path / "big.png")
    Image.new("RGB", (4000, 3000)).save(tmp_path / "big.jpg")
    Image.new("RGB", (2000, 4)).save(tmp_path / "thin.png")
    with pytest.raises(DataError, match="more than the 1,000,000 decoded"):
        open_images(Sample(id="a", images=(str(tmp_path / "big.png"),)), max_decode_pixels=1_000_000)
    (jpeg,) = open_images(Sample(id="b", images=(str(tmp_path / "big.jpg"),)), max_decode_pixels=1_000_000)
    assert jpeg.width * jpeg.height <= 1_000_000 and jpeg.width > jpeg.height  # reduced while decoding
    with pytest.raises(DataError, match="aspect ratio"):
        open_images(Sample(id="c", images=(str(tmp_path / "thin.png"),)))


def test_a_very_long_question_is_cut_from_the_left_and_counted(data, tmp_path):
    long = tmp_path / "math.jsonl"
    long.write_text(
        json.dumps({"id": "0", "question": "blah " * 20000 + "What is 2 + 3?", "solution": "5"}) + "\n"
    )
    run = tmp_path / "run"
    Trainer(_config({"math": long}, run, "optim.max_steps=1", "generation.max_prompt_length=64")).train()
    (row,) = _rows(run)
    assert row["counters/truncated_prompts"] == 1
    (completion,) = {json.loads(x)["id"] for x in (run / "completions.jsonl").read_text().splitlines()}
    assert completion == "0"


def test_data_check_reports_what_training_would_skip_or_cut(tmp_path):
    from PIL import Image

    from vgrpo.data import check_jsonl
    from vgrpo.plugins import get_registry

    Image.new("RGB", (2000, 4)).save(tmp_path / "thin.png")
    Image.new("RGB", (9000, 8000)).save(tmp_path / "huge.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    rows = [
        {"id": "thin", "image": "thin.png", "question": "How many?", "solution": 1},
        {"id": "huge", "image": "huge.png", "question": "How many?", "solution": 1},
        {"id": "long", "image": "ok.png", "question": "word " * 5000, "solution": 1},
        {"id": "fine", "image": "ok.png", "question": "How many?", "solution": 1},
    ]
    path = tmp_path / "count.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = check_jsonl(path, get_registry().task("count"), decode=True)
    by_line = {p.line: p for p in problems}
    assert sorted(by_line) == [1, 2, 3]
    assert "aspect ratio" in by_line[1].reason and "pixels training decodes" in by_line[2].reason
    assert by_line[3].field == "question" and "cuts" in by_line[3].reason


def test_data_check_takes_the_task_params_the_config_would_set(tmp_path, capsys):
    from vgrpo.cli import main

    path = (
        tmp_path / "rec.jsonl"
    )  # a box in 0-1000 coordinates of a record with no image to read its size from
    path.write_text(json.dumps({"id": "a", "question": "Where?", "solution": [10, 10, 20, 20]}) + "\n")
    assert main(["data", "check", "--task", "rec", str(path), "--json"]) == 0
    capsys.readouterr()
    assert (
        main(["data", "check", "--task", "rec", str(path), "--json", "--params", '{"coords": "norm1000"}'])
        == 1
    )
    assert json.loads(capsys.readouterr().out)["problems"]
    assert main(["data", "check", "--task", "rec", str(path), "--params", '{"coords": "degrees"}']) == 2


def test_resuming_a_checkpoint_from_elsewhere_never_mixes_with_or_deletes_the_run_already_there(
    two_steps, data, tmp_path
):
    other = _copy(two_steps, tmp_path / "other")  # run B, in the output_dir
    Trainer(
        _config(data, other, "optim.max_steps=3", f"checkpoint.resume={two_steps / 'checkpoint-1'}")
    ).train()
    assert _steps(other) == [2, 3]  # only the resumed run's rows
    (aside,) = (other / "previous-runs").iterdir()  # run B, whole
    assert sorted(p.name for p in aside.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [json.loads(x)["step"] for x in (aside / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resuming_an_earlier_checkpoint_sets_the_abandoned_later_ones_aside(two_steps, data, tmp_path):
    run = _copy(two_steps, tmp_path / "run")
    Trainer(_config(data, run, "optim.max_steps=2", f"checkpoint.resume={run / 'checkpoint-1'}")).train()
    (aside,) = (run / "previous-runs").iterdir()
    assert [p.name for p in aside.iterdir()] == ["checkpoint-2"]  # the old step 2, kept
    assert _steps(run) == [1, 2] and (run / "checkpoint-2").is_dir()  # the new step 2


def test_vgrpo_score_runs_rewards_in_a_worker_under_a_time_limit(fake_site, tmp_path, capsys):
    from vgrpo.cli import main

    fake_site.add(
        "acme-hangs", source=HANGING_TASK
    )  # its reward hangs on records whose id starts with "train"
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps({"completion": "a", "solution": "a", "id": i}) + "\n"
                             for i in ("train-0", "train-1")))  # fmt: skip
    import time

    start = time.monotonic()
    code = main(["score", "acme.hangs", str(cases), "--timeout-s", "3"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and time.monotonic() - start < 60  # the hanging (and self-killing) reward is contained
    assert len(rows) == 2 and all(("timeout" in r["error"] or "crash" in r["error"]) for r in rows)
    assert all(r["rewards"]["accuracy"] == 0.0 for r in rows)  # its declared minimum
