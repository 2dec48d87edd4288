"""`vgrpo env` is a complete bug-report block; the plugin lines for the training log name distribution and
version of every plugin, its problems and the disabled ones."""

from __future__ import annotations

import json
import sys

import torch

from vgrpo import __version__, cli, env
from vgrpo.plugins import load_plugins


def _broken_and_disabled(fake_site, monkeypatch):
    fake_site.task_plugin("vgrpo-acme-long-distribution-name", "acme.echo", entry_point="acme-echo")
    fake_site.add(
        "vgrpo-acme-broken", "0.3.0", source="raise ImportError('needs acme-sdk')", entry_point="acme-broken"
    )
    fake_site.task_plugin("vgrpo-acme-off", "acme.off", entry_point="acme-off")
    monkeypatch.setenv("VGRPO_DISABLE_PLUGINS", "acme-off")


def test_env_json_names_every_key_package_even_when_missing(monkeypatch, capsys):
    real = env._version
    monkeypatch.setattr(env, "_version", lambda name: None if name == "deepspeed" else real(name))
    assert cli.main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vgrpo"] == __version__ and info["python"] == sys.version.split()[0]
    assert set(env.KEY_PACKAGES) <= set(info["packages"])
    assert info["packages"]["deepspeed"] is None and info["packages"]["torch"] == torch.__version__
    assert info["torch"]["version"] == torch.__version__ and info["torch"]["cuda_build"] == torch.version.cuda
    assert info["torch"]["cuda_available"] == torch.cuda.is_available()


def test_env_block_lists_plugins_problems_and_disabled(fake_site, monkeypatch, capsys):
    _broken_and_disabled(fake_site, monkeypatch)
    monkeypatch.setattr(env, "_version", lambda name: None if name == "deepspeed" else "1.2.3")
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    for line in (
        f"- vgrpo: {__version__}",
        "- deepspeed: not installed",
        "- transformers: 1.2.3",
        "- trl: 1.2.3",
        "- triton: 1.2.3",
        "  - vgrpo-count 0.1.0 (entry point count): tasks count",
        "  - vgrpo-acme-long-distribution-name 1.0.0 (entry point acme-echo): tasks acme.echo",
        "- plugin problems:",
        "- disabled plugins (VGRPO_DISABLE_PLUGINS): acme-off",
        "- environment: VGRPO_DISABLE_PLUGINS=acme-off",
    ):
        assert line in out.splitlines(), line
    assert "  - acme-broken (vgrpo-acme-broken 0.3.0): import failed: ImportError: needs acme-sdk" in out
    assert out.startswith("vgrpo env (paste this into bug reports)\n")
    assert f"- torch: {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}" in out


def test_plugin_summary_lines_for_the_training_log(fake_site, monkeypatch):
    _broken_and_disabled(fake_site, monkeypatch)
    lines = env.plugin_summary_lines(load_plugins())
    assert "plugin count: vgrpo-count 0.1.0 — tasks count" in lines
    assert "plugin acme-echo: vgrpo-acme-long-distribution-name 1.0.0 — tasks acme.echo" in lines
    assert any(
        line.startswith("plugin vgrpo: vgrpo ") and "model adapters qwen2_vl" in line for line in lines
    )
    assert (
        "plugin problem acme-broken (vgrpo-acme-broken 0.3.0): import failed: ImportError: needs acme-sdk"
        in lines
    )
    assert lines[-1] == "plugins disabled by VGRPO_DISABLE_PLUGINS: acme-off"


def test_version_summary_names_vgrpo_python_and_torch():
    line = env.version_summary()
    assert line.startswith(
        f"vgrpo {__version__}, python {sys.version.split()[0]}, torch {torch.__version__} ("
    )


def test_plugins_table_never_cuts_distribution_or_version(fake_site, monkeypatch, capsys):
    _broken_and_disabled(fake_site, monkeypatch)
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "acme-echo" in line)
    assert row.split()[:4] == ["acme-echo", "vgrpo-acme-long-distribution-name", "1.0.0", "task"]
    assert "disabled: acme-off" in out and "vgrpo-acme-broken" in out
