"""The CLI contract: `vgrpo score`, `vgrpo tasks`, `vgrpo env`, `vgrpo eval`'s options and their errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vgrpo import cli


def score(capsys, monkeypatch, lines, *args):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    code = cli.main(["score", *args])
    captured = capsys.readouterr()
    return code, [json.loads(x) for x in captured.out.splitlines()], captured.err


def test_score_writes_one_row_per_line_in_order_and_bad_lines_become_error_rows(capsys, monkeypatch):
    lines = [
        json.dumps({"completion": "<think>1, 2, 3</think><answer>3</answer>", "solution": 3}),
        "{not json",
        json.dumps({"completion": 3, "solution": 3}),
        "",
        json.dumps({"completion": "<answer>4</answer>", "solution": -1}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"completion": "<answer>four</answer>", "solution": 4}),
    ]
    code, rows, _ = score(capsys, monkeypatch, lines, "count")
    assert code == 0 and len(rows) == 6  # the blank line is skipped
    assert rows[0] == {"parsed": 3, "rewards": {"accuracy": 1.0, "format": 1.0}, "reward": 2.0, "error": None}
    assert rows[1]["error"].startswith("line 2: invalid JSON") and rows[1]["reward"] is None
    assert "line 3" in rows[2]["error"] and "completion" in rows[2]["error"]
    assert "line 5" in rows[3]["error"] and "non-negative integer" in rows[3]["error"]
    assert "expected a JSON object" in rows[4]["error"]
    assert rows[5]["parsed"] == 4 and rows[5]["reward"] == 1.0


def test_score_weights_replace_the_defaults(capsys, monkeypatch):
    line = json.dumps({"completion": "<think></think><answer>2</answer>", "solution": 2})
    code, [row], _ = score(capsys, monkeypatch, [line], "count", "--weights", '{"accuracy": 0.5}')
    assert code == 0 and row["reward"] == 0.5


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nosuchtask"], "unknown task 'nosuchtask'"),
        (["count", "--params", "{bad json"], "--params: expected a JSON object"),
        (["count", "--params", '{"require_answer_tags": "maybe"}'], "require_answer_tags"),
        (["count", "--params", '{"colour": 1}'], "colour"),
        (["count", "--weights", '{"acc": 1}'], "unknown reward 'acc'"),
        (["count", "/nonexistent/file.jsonl"], "cannot open"),
    ],
)
def test_score_input_errors_exit_2_with_a_clear_message(capsys, monkeypatch, args, expected):
    code, rows, err = score(capsys, monkeypatch, [], *args)
    assert code == 2 and rows == []
    assert expected in " ".join(err.split())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--samples", "0"], "--samples: must be >= 1, got 0"),
        (
            ["--samples", "2", "--k", "1,,2"],
            "--k: empty item in '1,,2': expected numbers separated by commas",
        ),
        (["--samples", "2", "--k", "1,"], "--k: empty item in '1,': expected numbers separated by commas"),
        (["--samples", "2", "--k", "1,x"], "--k: input should be a valid integer, unable to parse string"),
        (["--samples", "2", "--k", "3"], "--k: every k must be between 1 and num_samples (2), got [3]"),
        (["--samples", "2", "--temperature", "0"], "--temperature: must be > 0.0, got 0.0"),
        (["--batch-size", "0"], "--batch-size: must be > 0, got 0"),
        (["--max-new-tokens", "-1"], "--max-new-tokens: must be > 0, got -1"),
    ],
)
def test_eval_option_errors_name_the_option_and_what_it_allows(capsys, args, expected):
    """Checked before the data is read; not a dump of the whole eval section under a "defaults" label."""
    code = cli.main(["eval", "--model", "tiny", "--task", "count", "--data", "/nonexistent/d.jsonl", *args])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and err.startswith(f"error: {expected}") and "defaults" not in err
    assert "'batch_size':" not in err  # not the whole section


def test_eval_options_over_a_config_are_checked_with_its_eval_section(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("eval:\n  num_samples: 4\n  pass_k: [1, 4]\n")
    assert cli.main(["eval", str(config), "--samples", "2"]) == 2  # the config's k = 4 > 2 samples
    err = " ".join(capsys.readouterr().err.split())
    assert err == "error: eval.pass_k: every k must be between 1 and num_samples (2), got [4]"


def test_score_reads_a_file_and_prints_a_table(tmp_path, capsys):
    f = tmp_path / "cases.jsonl"
    f.write_text(json.dumps({"completion": "<think>t</think><answer>7</answer>", "solution": 7}) + "\n")
    assert cli.main(["score", "count", str(f), "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "2.000" in out


def test_tasks_show_json_has_template_params_rewards_and_metric(capsys):
    assert cli.main(["tasks", "show", "count", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["distribution"] == "vgrpo-count"
    assert {p["name"]: p["default"] for p in info["params"]}["require_answer_tags"] is True
    assert [r["name"] for r in info["rewards"]] == ["accuracy", "format"]
    assert info["metric"] == ["accuracy"] and "{question}" in info["template"]["user"]
    assert cli.main(["tasks", "show", "nope"]) == 2


def test_env_json_reports_versions_and_plugins(capsys):
    assert cli.main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["python"] == sys.version.split()[0]
    assert "pluggy" in info["packages"]
    assert "vgrpo-count" in [p["distribution"] for p in info["plugins"]]


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "vgrpo"
    out = subprocess.run([str(script), "tasks", "--json"], capture_output=True, text=True, check=True).stdout
    assert "count" in [t["name"] for t in json.loads(out)["tasks"]]


def test_score_accepts_the_file_after_options(tmp_path, capsys):
    f = tmp_path / "cases.jsonl"
    f.write_text(json.dumps({"completion": "<answer>2</answer>", "solution": 2}) + "\n")
    assert cli.main(["score", "count", "--params", '{"require_answer_tags": true}', str(f)]) == 0
    assert json.loads(capsys.readouterr().out)["rewards"]["accuracy"] == 1.0
    with pytest.raises(SystemExit):
        cli.main(["score", "count", str(f), "extra-arg"])


def test_hostile_lines_become_error_rows_and_later_lines_still_score(capsys, monkeypatch):
    lines = [
        ("[" * 100_000 + "]" * 100_000).encode(),
        b'{"completion": "x", "solution": ' + b"9" * 5000 + b"}",
        b'{"completion": "x", "solution": 1, "image_size": [' + b"1" * 400 + b", 5]}",
        b"\xff\xfe not utf-8",
        json.dumps({"completion": "<answer>[/b] 1 [bold]</answer>", "solution": 1}).encode(),
    ]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n")))
    assert cli.main(["score", "count"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5
    for i, row in enumerate(rows[:4], start=1):
        assert row["error"].startswith(f"line {i}:") and row["reward"] is None
    assert rows[4]["parsed"] == 1 and rows[4]["error"] is None
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines[4].decode() + "\n"))
    assert cli.main(["score", "count", "--format", "table"]) == 0  # markup in a parsed value is shown as text


def test_plugin_errors_with_markup_do_not_break_listings(fake_site, capsys):
    fake_site.add("acme-markup", source="raise ImportError('needs torch[/cuda] extra')")
    assert cli.main(["plugins"]) == 0
    assert "torch[/cuda]" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["env"]) == 0
    assert cli.main(["plugins", "--strict-plugins"]) == 1  # global flags work after the command


def test_weights_total_is_a_float_and_dash_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(json.dumps({"completion": "<answer>1</answer>", "solution": 1}) + "\n")
    )
    assert cli.main(["score", "count", "--weights", "{}", "-"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["reward"] == 0.0 and isinstance(row["reward"], float)


def test_train_prints_a_header_with_versions_and_every_plugin_then_where_the_results_are(capsys, tmp_path):
    from importlib.metadata import version

    from vgrpo.synth import synthesize

    data = synthesize(tmp_path / "data", n_per_task=4, seed=0)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {{name_or_path: tiny}}\ntasks: [{{task: count, data: {data['count']}}}]\n"
        "grpo: {num_generations: 2}\ngeneration: {max_completion_length: 4}\n"
        "logging: {tensorboard: false}\nrewards: {workers: 0}\n"
    )
    assert cli.main(["train", str(config), f"output_dir={tmp_path / 'run'}", "max_steps=1"]) == 0
    captured = capsys.readouterr()
    assert "torch" in captured.err and "transformers" in captured.err
    for plugin in ("rec", "ovd", "count", "math"):
        assert f"plugin {plugin}: vgrpo-{plugin} {version(f'vgrpo-{plugin}')}" in captured.err
    assert str(tmp_path / "run" / "metrics.jsonl") in captured.out.replace("\n", "")


# -- exit statuses: vgrpo's own errors are one line; anything else is a bug with its traceback ---------------
from vgrpo.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    NameConflictError,
    ParamsError,
    TrainingError,
    UnknownNameError,
)


@pytest.mark.parametrize(
    "exc, code",
    [
        (ParamsError("--params: expected a JSON object"), 2),
        (DataError("expected a box", file="d.jsonl", line=3, field="solution"), 2),
        (UnknownNameError("unknown task 'nope'; installed: ['count']"), 2),
        (CheckpointError("runs/x/checkpoint-5: missing optimizer.safetensors"), 1),
        (TrainingError("the loss stayed non-finite for 3 steps"), 1),
        (NameConflictError("task 'acme.x' is provided by acme-a and acme-b"), 1),
    ],
)
def test_vgrpo_errors_are_one_error_line_with_their_exit_status(capsys, monkeypatch, exc, code):
    def fail(registry):
        raise exc

    monkeypatch.setattr("vgrpo.env.collect_env", fail)
    assert cli.main(["env"]) == code
    err = " ".join(capsys.readouterr().err.split())
    assert err == f"error: {exc}" and "Traceback" not in err


@pytest.mark.parametrize("exc", [KeyError("model_type"), RuntimeError("boom"), TypeError("unhashable")])
def test_a_bug_prints_its_traceback_and_asks_for_a_report_instead_of_posing_as_a_usage_error(
    capsys, monkeypatch, exc
):
    def fail(registry):
        raise exc

    monkeypatch.setattr("vgrpo.env.collect_env", fail)
    assert cli.main(["env"]) == cli.BUG == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and f"{type(exc).__name__}: " in err
    assert "in fail" in err  # where it happened
    last = err.strip().splitlines()[-1]
    assert "this is a bug in vgrpo (or a plugin): please report it at" in last and "`vgrpo env`" in last
    assert "error:" not in err


def test_unknown_names_and_bad_input_keep_exit_2_and_a_missing_command_is_a_usage_error(capsys):
    assert cli.main(["tasks", "show", "nope"]) == 2
    assert "error: unknown task 'nope'" in capsys.readouterr().err
    assert cli.main(["data", "check", "--task", "nope", "x.jsonl"]) == 2
    convert = ["data", "convert", "--from", "vlm-r1", "x.jsonl", "-o", "y.jsonl"]
    assert cli.main([*convert, "--task", "nope"]) == 2
    assert "VLM-R1 records convert to tasks" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_python_dash_m_vgrpo_cli_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "vgrpo.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("vgrpo ")


def test_score_weights_take_the_weight_params_form_too(capsys, monkeypatch):
    """`--weights` accepts a config's `{weight, params}` entries; count's own rewards declare no params."""
    line = json.dumps({"completion": "<think></think><answer>2</answer>", "solution": 2})
    weights = '{"accuracy": {"weight": 0.5}, "format": 0.25}'
    code, [row], _ = score(capsys, monkeypatch, [line], "count", "--weights", weights)
    assert code == 0 and row["reward"] == 0.75
    bad = '{"accuracy": {"weight": 1, "params": {"strict": true}}}'
    code, rows, err = score(capsys, monkeypatch, [line], "count", "--weights", bad)
    assert code == 2 and rows == []
    assert "--weights.accuracy.params: reward 'accuracy' takes no params" in " ".join(err.split())
    code, rows, err = score(capsys, monkeypatch, [line], "count", "--weights", '{"accuracy": {"wieght": 1}}')
    message = "--weights.accuracy.wieght: unknown key (did you mean 'weight'?)"
    assert code == 2 and message in " ".join(err.split())


def test_tasks_show_json_lists_params_of_each_reward_additively(capsys):
    assert cli.main(["tasks", "show", "count", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for r in info["rewards"]:
        assert {"name", "range", "default_weight", "description"} <= set(r)
        assert r["params"] == [] and r["params_schema"] is None  # built-in rewards have no params
    assert isinstance(info["plugin_rewards"], list)
