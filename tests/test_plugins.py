"""Discovery with fake distributions on a temporary path: nothing is pip-installed."""

from __future__ import annotations

import json

import pytest

import vgrpo
from vgrpo import cli
from vgrpo.plugins import load_plugins


def test_a_good_plugin_is_listed_with_distribution_and_version(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    assert reg.errors == []
    [info] = reg.plugins
    assert (info.name, info.distribution, info.version, info.tasks) == (
        "acme-echo",
        "acme-echo",
        "1.0.0",
        ["acme.echo"],
    )
    task = reg.task("acme.echo")
    [s] = vgrpo.score(task, ["<think>a</think><answer>hi</answer>"], [vgrpo.Sample(id="1", solution="hi")])
    assert s.rewards == {"accuracy": 1.0, "format": 1.0} and s.reward == 2.0


@pytest.mark.parametrize(
    "source, expected",
    [
        ("raise ImportError('no module named torchvision')", "ImportError: no module named torchvision"),
        ("def broken(:\n    pass", "SyntaxError"),
        ("import sys\nsys.exit(3)", "SystemExit"),
    ],
)
def test_a_broken_plugin_is_reported_and_the_others_still_load(fake_site, source, expected):
    fake_site.task_plugin("acme-good", "acme.good")
    fake_site.add("acme-broken", "0.3", source=source)
    reg = load_plugins(path=[str(fake_site.root)])
    assert [p.name for p in reg.plugins] == ["acme-good"]
    [err] = reg.errors
    assert (err.entry_point, err.distribution, err.version) == ("acme-broken", "acme-broken", "0.3")
    assert expected in err.error
    assert reg.task("acme.good").name == "acme.good"


def test_strict_mode_makes_problems_fatal(fake_site, monkeypatch):
    fake_site.add("acme-broken", source="raise RuntimeError('boom')")
    with pytest.raises(vgrpo.PluginLoadError, match="acme-broken.*boom"):
        load_plugins(path=[str(fake_site.root)], strict=True)
    monkeypatch.setenv("VGRPO_STRICT_PLUGINS", "1")
    with pytest.raises(vgrpo.PluginLoadError):
        load_plugins(path=[str(fake_site.root)])


def test_the_same_task_name_from_two_distributions_names_both(fake_site):
    fake_site.task_plugin("acme-one", "acme.echo")
    fake_site.task_plugin("acme-two", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    assert "acme.echo" not in reg.tasks
    with pytest.raises(vgrpo.NameConflictError) as info:
        reg.task("acme.echo")
    assert "acme-one" in str(info.value) and "acme-two" in str(info.value)
    # a row under each entry point that claims the name, not only under the one that loaded last
    assert [e.entry_point for e in reg.errors] == ["acme-one", "acme-two"]
    assert all("acme-one" in e.error and "acme-two" in e.error for e in reg.errors)
    assert all("acme.echo" not in p.tasks for p in reg.plugins)


REWARD_PLUGIN = (
    "import vgrpo\n"
    "@vgrpo.reward('acme.length')\n"
    "def length(completion):\n"
    '    """1.0 for an empty completion."""\n'
    "    return float(not completion)\n"
    "@vgrpo.hookimpl\ndef vgrpo_rewards():\n    return [length]\n"
)


def test_the_same_reward_name_from_two_distributions_is_reported_like_a_task_conflict(fake_site, capsys):
    """Both distributions named, in a row under each; the name unusable; and a use of it (the weights of a
    config, of `vgrpo score --weights`) says so and names both, instead of "unknown reward"."""
    from vgrpo.config import TrainConfig
    from vgrpo.integrations.trl import reward_funcs
    from vgrpo.scoring import resolve_weights

    fake_site.add("acme-brevity", "0.3", source=REWARD_PLUGIN)
    fake_site.add("acme-rewards", "1.2", source=REWARD_PLUGIN)
    fake_site.task_plugin("acme-echo", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    both = ("acme-brevity 0.3 (entry point 'acme-brevity')", "acme-rewards 1.2 (entry point 'acme-rewards')")
    rows = [(e.entry_point, e.version) for e in reg.errors]
    assert rows == [("acme-brevity", "0.3"), ("acme-rewards", "1.2")]
    for err in reg.errors:
        assert all(who in err.error for who in both)
        assert "unusable until one of them is uninstalled" in err.error
    assert "acme.length" not in reg.rewards and all(p.rewards == [] for p in reg.plugins)
    with pytest.raises(vgrpo.NameConflictError) as info:
        reg.reward("acme.length")
    assert all(who in str(info.value) for who in both)

    task = reg.task("acme.echo")
    with pytest.raises(vgrpo.NameConflictError) as info:
        resolve_weights(task, {"accuracy": 1.0, "acme.length": 0.5}, reg.rewards)
    assert str(info.value).startswith("reward weights for task 'acme.echo': reward name 'acme.length'")
    assert all(who in str(info.value) for who in both)
    config = TrainConfig.model_validate(
        {"tasks": [{"task": "acme.echo", "data": ["x.jsonl"], "rewards": {"acme.length": 0.5}}]}
    )
    with pytest.raises(vgrpo.NameConflictError, match="acme-brevity 0.3 .* and acme-rewards 1.2"):
        reward_funcs(config, registry=reg)

    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = [e for e in doc["errors"] if "acme.length" in e["error"]]
    assert [(e["entry_point"], e["distribution"]) for e in rows] == [
        ("acme-brevity", "acme-brevity"),
        ("acme-rewards", "acme-rewards"),
    ]
    assert cli.main(["score", "acme.echo", "--weights", '{"accuracy": 1, "acme.length": 0.5}']) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "reward name 'acme.length' is provided by" in err and all(who in err for who in both)
    assert "unknown reward" not in err


def test_misspelled_reward_names_suggest_the_closest_one(fake_site, capsys):
    from vgrpo.scoring import resolve_weights

    fake_site.add("acme-brevity", source=REWARD_PLUGIN)
    fake_site.task_plugin("acme-echo", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    with pytest.raises(vgrpo.UnknownNameError, match="'acme.lenght' \\(did you mean 'acme.length'"):
        reg.reward("acme.lenght")
    task = reg.task("acme.echo")
    with pytest.raises(vgrpo.ParamsError, match="unknown reward 'acme.lenght' .*did you mean 'acme.length'"):
        resolve_weights(task, {"acme.lenght": 1}, reg.rewards)
    with pytest.raises(vgrpo.ParamsError, match="unknown reward 'acuracy' .*did you mean 'accuracy'"):
        resolve_weights(task, {"acuracy": 1}, reg.rewards)
    assert cli.main(["score", "acme.echo", "--weights", '{"acme.lenght": 1}']) == 2
    assert "did you mean 'acme.length'" in " ".join(capsys.readouterr().err.split())
    assert cli.main(["score", "acme.ecko"]) == 2  # task names too
    assert "did you mean 'acme.echo'" in " ".join(capsys.readouterr().err.split())


def test_a_distribution_found_twice_on_the_path_loads_once(fake_site, tmp_path):
    second = tmp_path / "second"
    second.mkdir()
    module = fake_site.task_plugin("acme-echo", "acme.echo")
    fake_site.task_plugin("acme-echo", "acme.echo", module=module, root=second)
    reg = load_plugins(path=[str(fake_site.root), str(second)])
    assert reg.errors == [] and len(reg.plugins) == 1


def test_disabled_plugins_are_skipped_by_name(fake_site, monkeypatch):
    fake_site.task_plugin("acme-one", "acme.one")
    fake_site.task_plugin("acme-two", "acme.two")
    fake_site.add("acme-broken", source="raise RuntimeError('boom')")
    monkeypatch.setenv("VGRPO_DISABLE_PLUGINS", "acme-broken, acme-two")
    reg = load_plugins(path=[str(fake_site.root)], strict=True)
    assert [p.name for p in reg.plugins] == ["acme-one"]
    assert sorted(reg.disabled) == ["acme-broken", "acme-two"]
    reg = load_plugins(path=[str(fake_site.root)], disabled=["acme-one"])
    assert "acme-one" in reg.disabled and "acme.one" not in reg.tasks


def test_misspelled_and_unmarked_hooks_are_reported(fake_site):
    fake_site.add(
        "acme-typo",
        source="import vgrpo\n@vgrpo.hookimpl\ndef vgrpo_task():\n    return []\n",
    )
    fake_site.add("acme-unmarked", source="def vgrpo_rewards():\n    return []\n")
    reg = load_plugins(path=[str(fake_site.root)])
    errors = {e.entry_point: e.error for e in reg.errors}
    assert (
        "unknown hook 'vgrpo_task'" in errors["acme-typo"]
        and "did you mean 'vgrpo_tasks'" in errors["acme-typo"]
    )
    assert "not marked with @vgrpo.hookimpl" in errors["acme-unmarked"]
    assert reg.plugins == []


def test_a_hook_with_arguments_outside_the_spec_is_reported(fake_site):
    fake_site.add(
        "acme-args", source="import vgrpo\n@vgrpo.hookimpl\ndef vgrpo_tasks(config):\n    return []\n"
    )
    reg = load_plugins(path=[str(fake_site.root)])
    [err] = reg.errors
    assert "config" in err.error


def test_hooks_that_raise_or_return_junk_are_reported(fake_site):
    fake_site.add(
        "acme-raises", source="import vgrpo\n@vgrpo.hookimpl\ndef vgrpo_tasks():\n    raise ValueError('x')\n"
    )
    fake_site.add(
        "acme-junk",
        source="import vgrpo\n@vgrpo.hookimpl\ndef vgrpo_rewards():\n    return ['not a reward']\n",
    )
    reg = load_plugins(path=[str(fake_site.root)])
    errors = {e.entry_point: e.error for e in reg.errors}
    assert "raised ValueError" in errors["acme-raises"]
    assert "expected a vgrpo.Reward" in errors["acme-junk"]


def test_invalid_tasks_are_rejected_at_registration_with_the_plugin_named(fake_site):
    fake_site.task_plugin("acme-bare", "echo")  # third-party names must be dotted
    bad_template = fake_site.task_source("acme.tpl").replace('user="{question}"', 'user="{question} {nope}"')
    fake_site.add("acme-tpl", source=bad_template)
    bad_parse = fake_site.task_source("acme.parse").replace(
        "return vgrpo.extract_answer(completion)", "raise RuntimeError('parser bug')"
    )
    fake_site.add("acme-parse", source=bad_parse)
    reg = load_plugins(path=[str(fake_site.root)])
    errors = {e.entry_point: e.error for e in reg.errors}
    assert "must be dotted" in errors["acme-bare"]
    assert "nope" in errors["acme-tpl"] and "template" in errors["acme-tpl"]
    assert "parser bug" in errors["acme-parse"]
    assert reg.tasks == {}


def test_plugin_rewards_are_registered_and_must_be_dotted(fake_site):
    source = (
        "import vgrpo\n"
        "@vgrpo.reward('acme.short', range=(-1.0, 0.0))\n"
        "def short(completion):\n    return -min(1.0, len(completion) / 100)\n"
        "@vgrpo.reward('short')\n"
        "def bare(completion):\n    return 0.0\n"
        "@vgrpo.hookimpl\ndef vgrpo_rewards():\n    return [short, bare]\n"
    )
    fake_site.add("acme-rewards", source=source)
    reg = load_plugins(path=[str(fake_site.root)])
    assert list(reg.rewards) == ["acme.short"]
    assert "must be dotted" in reg.errors[0].error
    assert reg.reward("acme.short").range == (-1.0, 0.0)


def test_required_plugins_check_versions(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    reg.require(["acme-echo>=1.0", "acme_echo==1.0.0"])  # satisfied; names normalise
    with pytest.raises(vgrpo.MissingPluginsError) as info:
        reg.require(["acme-echo>=2.0", "vgrpo-nonexistent"])
    msg = str(info.value)
    assert "acme-echo>=2.0 (installed: 1.0.0)" in msg
    assert "vgrpo-nonexistent (not installed)" in msg
    assert "acme-echo==1.0.0" in msg  # the installed list
    with pytest.raises(vgrpo.MissingPluginsError, match="not a valid requirement"):
        reg.require(["acme echo >>> 1"])


def test_unknown_task_suggests_the_closest_name(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    reg = load_plugins(path=[str(fake_site.root)])
    with pytest.raises(vgrpo.UnknownNameError, match="did you mean 'acme.echo'"):
        reg.task("acme.ecko")


def test_cli_plugins_json_lists_plugins_and_errors(fake_site, capsys):
    fake_site.task_plugin("acme-echo", "acme.echo")
    fake_site.add("acme-broken", "0.2", source="raise ImportError('missing dependency')")
    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {p["name"]: p for p in doc["plugins"]}
    assert rows["acme-echo"]["tasks"] == ["acme.echo"] and rows["acme-echo"]["version"] == "1.0.0"
    assert set(rows["acme-echo"]) >= {"name", "distribution", "version", "tasks", "rewards"}
    broken = [e for e in doc["errors"] if e["entry_point"] == "acme-broken"]
    assert broken and broken[0]["version"] == "0.2" and "missing dependency" in broken[0]["error"]
    assert cli.main(["--strict-plugins", "plugins"]) == 1


def test_marked_hooks_with_any_misspelling_are_reported(fake_site):
    fake_site.add("acme-typo2", source="import vgrpo\n@vgrpo.hookimpl\ndef vgpro_tasks():\n    return []\n")
    reg = load_plugins(path=[str(fake_site.root)])
    [err] = reg.errors
    assert "unknown hook 'vgpro_tasks'" in err.error and "did you mean 'vgrpo_tasks'" in err.error


def test_a_reward_conflict_does_not_hide_a_task_of_the_same_name(fake_site):
    reward = "@vgrpo.reward('acme.x')\ndef r(completion):\n    return 0.0\n"
    first = (
        fake_site.task_source("acme.x") + reward + "@vgrpo.hookimpl\ndef vgrpo_rewards():\n    return [r]\n"
    )
    fake_site.add("acme-h", source=first)
    fake_site.add(
        "acme-i", source="import vgrpo\n" + reward + "@vgrpo.hookimpl\ndef vgrpo_rewards():\n    return [r]\n"
    )
    reg = load_plugins(path=[str(fake_site.root)])
    rows = {p.name: p for p in reg.plugins}
    assert rows["acme-h"].tasks == ["acme.x"] and rows["acme-h"].rewards == []
    assert "acme.x" in reg.tasks and "acme.x" not in reg.rewards


def test_required_plugins_must_have_loaded(fake_site, monkeypatch):
    fake_site.task_plugin("acme-off", "acme.off")
    fake_site.add("acme-broken", "1.0", source="raise ImportError('no')")
    monkeypatch.setenv("VGRPO_DISABLE_PLUGINS", "acme-off")
    reg = load_plugins(path=[str(fake_site.root)])
    with pytest.raises(vgrpo.MissingPluginsError) as info:
        reg.require(["acme-off>=1.0", "acme-broken"])
    assert "acme-off>=1.0 (installed 1.0.0, but disabled" in str(info.value)
    assert "acme-broken (installed 1.0, but its plugin failed to load" in str(info.value)
