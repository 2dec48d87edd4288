"""Configurable shared rewards: a reward declares a params model, a mixture entry sets it per task with
``{weight, params}`` (a plain number still being the weight), validated with the key path named, and the
params reach every place rewards are called: in-process scoring, reward workers, ``vgrpo score`` and TRL."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pydantic
import pytest
import yaml

import vgrpo
from vgrpo import cli
from vgrpo.config import TrainConfig, dump_config, load_config
from vgrpo.errors import ParamsError
from vgrpo.mixture import build_mixture
from vgrpo.plugins import load_plugins
from vgrpo.reward_pool import RewardPool
from vgrpo.rewards import RewardWeights
from vgrpo.scoring import resolve_weights, score, score_rollout

#: A reward-only plugin: a per-item penalty with a word limit and a batched reward with a word to look for.
PARAMS_PLUGIN = '''
import pydantic
import vgrpo

class WordsParams(pydantic.BaseModel):
    max_words: int = pydantic.Field(100, gt=0, description="Words allowed before the penalty starts.")

@vgrpo.reward("acme.words", range=(-1.0, 0.0), params=WordsParams)
def words(completion, reward_params):
    """0 up to max_words words, then -0.1 per extra word, down to -1."""
    return -min(1.0, max(0, len(completion.split()) - reward_params.max_words) / 10)

class SaysParams(pydantic.BaseModel):
    word: str = "bye"

@vgrpo.reward("acme.says", batched=True, params=SaysParams)
def says(completions, reward_params):
    """1.0 when the completion contains the word, else 0.0."""
    return [1.0 if reward_params.word in c else 0.0 for c in completions]

@vgrpo.hookimpl
def vgrpo_rewards():
    return [words, says]
'''

#: 6 whitespace-separated words; contains "six" and "hi", not "bye".
COMPLETION = "<think>one two three four five six</think><answer>hi</answer>"
SAMPLE = vgrpo.Sample(id="a", question="Say hi", solution="hi")


@pytest.fixture
def registry(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    fake_site.add("acme-params", source=PARAMS_PLUGIN)
    registry = load_plugins()
    assert not registry.errors, registry.errors
    return registry


def _config(tmp_path: Path, rewards) -> TrainConfig:
    data = tmp_path / "echo.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Say hi", "solution": "hi"}) + "\n")
    return TrainConfig.model_validate(
        {"tasks": [{"task": "acme.echo", "data": str(data), "rewards": rewards}]}
    )


CONFIGURED = {
    "accuracy": 1,
    "acme.words": {"weight": 0.5, "params": {"max_words": 2}},
    "acme.says": {"weight": 2.0, "params": {"word": "six"}},
}


# -- declaring params ------------------------------------------------------------------------------------
class Limit(pydantic.BaseModel):
    limit: int = 3


def test_a_reward_declares_params_and_receives_them_validated_by_name():
    @vgrpo.reward("acme.limit", params=Limit)
    def limit(completion, reward_params):
        """1.0 when the completion is at most `limit` characters."""
        assert isinstance(reward_params, Limit)
        return 1.0 if len(completion) <= reward_params.limit else 0.0

    assert limit.params is Limit and limit.args == ("completion", "reward_params")
    assert limit([None], [SAMPLE], None, ["abcd"]) == [0.0]  # the defaults
    assert limit([None], [SAMPLE], None, ["abcd"], reward_params={"limit": 4}) == [1.0]
    assert limit.with_params({"limit": 4})([None], [SAMPLE], None, ["abcd"]) == [1.0]
    assert vgrpo.testing.call_reward(limit.with_params({"limit": 10}), completion="abcd") == 1.0
    assert limit.make_params() == Limit() and limit.make_params({"limit": 5}) == Limit(limit=5)


def test_declaring_params_wrongly_fails_when_the_reward_is_made():
    with pytest.raises(TypeError, match="takes 'reward_params' but declares no params model"):
        vgrpo.reward("acme.a")(lambda completion, reward_params: 0.0)
    with pytest.raises(TypeError, match="declares params=Limit but its function takes no 'reward_params'"):
        vgrpo.reward("acme.b", params=Limit)(lambda completion: 0.0)

    class Required(pydantic.BaseModel):
        limit: int

    with pytest.raises(TypeError, match=r"needs a default: \['limit'\]"):
        vgrpo.reward("acme.c", params=Required)(lambda completion, reward_params: 0.0)
    with pytest.raises(TypeError, match="pydantic BaseModel subclass"):
        vgrpo.reward("acme.d", params=dict)(lambda completion, reward_params: 0.0)  # type: ignore[arg-type]


def test_rewards_without_params_are_unchanged():
    assert vgrpo.format_reward.params is None and vgrpo.format_reward.make_params() is None
    assert vgrpo.format_reward.with_params(None) is vgrpo.format_reward
    reward = vgrpo.Reward(
        "acme.plain", lambda completion: 1.0, (0.0, 1.0), "Always 1."
    )  # positional, as before
    assert reward([None], [SAMPLE], None, ["x"]) == [1.0]
    with pytest.raises(ParamsError, match="reward 'acme.plain' takes no params"):
        reward([None], [SAMPLE], None, ["x"], reward_params={"limit": 1})


# -- the config's mixture ------------------------------------------------------------------------------------
def test_params_set_in_a_mixture_change_the_values_in_process_and_in_reward_workers(registry, tmp_path):
    [entry] = build_mixture(_config(tmp_path, CONFIGURED), registry)
    assert entry.weights == {"accuracy": 1.0, "acme.words": 0.5, "acme.says": 2.0}
    assert entry.weights.params["acme.words"].max_words == 2
    expected = {"accuracy": 1.0, "format": 1.0, "acme.words": -0.4, "acme.says": 1.0}  # 6 words, 4 over 2

    def rollout(pool=None):
        failures: Counter[str] = Counter()
        scored = score_rollout(
            [entry],
            [0, 0],
            [COMPLETION] * 2,
            [SAMPLE] * 2,
            [6.0, 6.0],
            plugin_rewards=registry.rewards,
            pool=pool,
            failures=failures,
        )
        assert not failures, failures
        return scored

    in_process = rollout()
    assert in_process.rewards == [pytest.approx(1.0 - 0.2 + 2.0)] * 2
    [direct] = score(
        entry.task, [COMPLETION], [SAMPLE], entry.params, entry.weights, plugin_rewards=registry.rewards
    )
    assert direct.rewards == pytest.approx(expected)
    pool = RewardPool(workers=1, timeout_s=60.0)
    try:
        assert rollout(pool).rewards == in_process.rewards  # the params reached the worker's own registry
        [worker] = pool.score(entry.task, [COMPLETION], [SAMPLE], entry.params, CONFIGURED)  # the config form
    finally:
        pool.close()
    assert worker.rewards == pytest.approx(expected) and not worker.errors
    # the defaults (max_words 100, word "bye") when no params are given
    [plain] = score(
        entry.task,
        [COMPLETION],
        [SAMPLE],
        weights={"acme.words": 1, "acme.says": 1},
        plugin_rewards=registry.rewards,
    )
    assert plain.rewards["acme.words"] == 0.0 and plain.rewards["acme.says"] == 0.0


def test_the_plain_number_form_still_means_the_weight(registry, tmp_path):
    config = _config(tmp_path, {"accuracy": 2, "format": 0.5, "acme.words": 1})
    assert yaml.safe_load(dump_config(config))["tasks"][0]["rewards"] == {
        "accuracy": 2.0,
        "format": 0.5,
        "acme.words": 1.0,
    }
    [entry] = build_mixture(config, registry)
    assert entry.weights == {"accuracy": 2.0, "format": 0.5, "acme.words": 1.0} and entry.weights.params == {}
    [s] = score(
        entry.task, [COMPLETION], [SAMPLE], entry.params, entry.weights, plugin_rewards=registry.rewards
    )
    assert s.reward == pytest.approx(2.5)
    default = build_mixture(_config(tmp_path, None), registry)[0].weights
    assert default == {"accuracy": 1.0, "format": 1.0} and isinstance(default, RewardWeights)
    dumped = yaml.safe_load(dump_config(_config(tmp_path, CONFIGURED)))["tasks"][0]["rewards"]
    assert dumped["acme.words"] == {"weight": 0.5, "params": {"max_words": 2}}


@pytest.mark.parametrize(
    "rewards, message",
    [
        (
            {"acme.words": {"weight": 1, "params": {"max_words": "many"}}},
            r"^tasks\[0\]\.rewards\.acme\.words\.params\.max_words: Input should be a valid integer.*"
            r"Valid params of reward 'acme\.words': max_words \(default 100\)$",
        ),
        (
            {"acme.words": {"weight": 1, "params": {"max_words": 0}}},
            r"tasks\[0\]\.rewards\.acme\.words\.params\.max_words: Input should be greater than 0",
        ),
        (
            {"acme.words": {"weight": 1, "params": {"max_wrds": 3}}},
            r"tasks\[0\]\.rewards\.acme\.words\.params\.max_wrds: unknown param \(did you mean 'max_words'\?\)",
        ),
        (
            {"accuracy": {"weight": 1, "params": {"limit": 3}}},
            r"tasks\[0\]\.rewards\.accuracy\.params: reward 'accuracy' takes no params",
        ),
    ],
)
def test_bad_params_fail_when_the_mixture_is_built_naming_the_key(registry, tmp_path, rewards, message):
    with pytest.raises(ParamsError, match=message):
        build_mixture(_config(tmp_path, rewards), registry)


@pytest.mark.parametrize(
    "rewards, message",
    [
        (
            "{acme.words: {weight: 1, parms: {max_words: 3}}}",
            r"tasks\.0\.rewards: .*acme\.words\.parms: unknown key \(did you mean 'params'\?\)",
        ),
        ("{acme.words: {params: {max_words: 3}}}", r"tasks\.0\.rewards: .*acme\.words\.weight: required"),
        ("{acme.words: {weight: .nan}}", r"acme\.words\.weight: expected a finite number as the weight"),
        (
            "{acme.words: {weight: 1, params: [3]}}",
            r"tasks\.0\.rewards: .*acme\.words\.params: expected a mapping",
        ),
        (
            "{accuracy: lots}",
            r"tasks\.0\.rewards: .*accuracy: expected a finite number as the weight, got 'lots'",
        ),
    ],
)
def test_a_bad_shape_fails_when_the_config_loads(tmp_path, rewards, message):
    path = tmp_path / "run.yaml"
    path.write_text(f"tasks:\n  - task: count\n    data: x.jsonl\n    rewards: {rewards}\n")
    with pytest.raises(ParamsError, match=message):
        load_config(path)


def test_resolve_weights_keeps_already_resolved_params_and_rejects_bad_direct_ones(registry):
    task = registry.task("acme.echo")
    resolved = resolve_weights(task, CONFIGURED, registry.rewards)
    again = resolve_weights(task, resolved, registry.rewards)
    assert again == resolved and again.params == resolved.params
    assert resolved.to_config() == {
        "accuracy": 1.0,
        "acme.words": {"weight": 0.5, "params": {"max_words": 2}},
        "acme.says": {"weight": 2.0, "params": {"word": "six"}},
    }
    with pytest.raises(ParamsError, match=r"^rewards\.acme\.words\.params\.max_words: "):
        resolve_weights(task, {"acme.words": {"weight": 1, "params": {"max_words": -1}}}, registry.rewards)


# -- vgrpo score, TRL ---------------------------------------------------------------------------------------
def _score_cli(capsys, monkeypatch, *args):
    line = json.dumps({"completion": COMPLETION, "solution": "hi"})
    monkeypatch.setattr(sys, "stdin", io.StringIO(line + "\n"))
    code = cli.main(["score", "acme.echo", *args])
    captured = capsys.readouterr()
    return code, [json.loads(x) for x in captured.out.splitlines()], captured.err


def test_vgrpo_score_weights_accept_the_same_form(registry, capsys, monkeypatch):
    code, [row], _ = _score_cli(capsys, monkeypatch, "--weights", json.dumps(CONFIGURED))
    assert (
        code == 0
        and row["rewards"]["acme.words"] == pytest.approx(-0.4)
        and row["rewards"]["acme.says"] == 1.0
    )
    assert row["reward"] == pytest.approx(2.8)
    bad = {"acme.words": {"weight": 1, "params": {"max_words": "x"}}}
    code, rows, err = _score_cli(capsys, monkeypatch, "--weights", json.dumps(bad))
    assert code == 2 and rows == []
    assert "--weights.acme.words.params.max_words: Input should be a valid integer" in err


def test_trl_reward_functions_use_the_configured_params(registry, tmp_path):
    from vgrpo.integrations.trl import reward_funcs

    funcs = {f.__name__: f for f in reward_funcs(_config(tmp_path, CONFIGURED), registry=registry)}
    assert funcs["acme.echo/acme.words"].weight == 0.5
    columns = {"task": ["acme.echo"], "solution": [json.dumps("hi")]}
    assert funcs["acme.echo/acme.words"]([None], [COMPLETION], **columns) == [pytest.approx(-0.4)]
    assert funcs["acme.echo/acme.says"]([None], [COMPLETION], **columns) == [1.0]
    with pytest.raises(ParamsError, match=r"tasks\[0\]\.rewards\.acme\.words\.params\.max_words"):
        reward_funcs(
            _config(tmp_path, {"acme.words": {"weight": 1, "params": {"max_words": 0}}}), registry=registry
        )


# -- what the CLI shows -------------------------------------------------------------------------------------
def test_tasks_show_and_plugins_show_the_params_schema_with_defaults(registry, capsys):
    assert cli.main(["tasks", "show", "acme.echo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"name", "range", "default_weight", "description"} <= set(info["rewards"][0])  # the keys it had
    assert info["rewards"][0]["params"] == [] and info["rewards"][0]["params_schema"] is None
    shared = {r["name"]: r for r in info["plugin_rewards"]}
    described = "Words allowed before the penalty starts."
    assert shared["acme.words"]["params"] == [
        {"name": "max_words", "type": "integer", "default": 100, "description": described}
    ]
    assert shared["acme.words"]["params_schema"]["properties"]["max_words"]["default"] == 100

    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [row] = [p for p in doc["plugins"] if p["distribution"] == "acme-params"]
    assert set(row) == {"name", "distribution", "version", "tasks", "rewards", "model_adapters"}  # unchanged
    assert row["rewards"] == ["acme.words", "acme.says"]
    details = {r["name"]: r for r in doc["rewards"]}  # the additive top-level key
    assert details["acme.says"]["params_schema"]["properties"]["word"]["default"] == "bye"
    assert (
        details["acme.words"]["range"] == [-1.0, 0.0]
        and details["acme.words"]["distribution"] == "acme-params"
    )
    assert details["acme.words"]["params"][0]["default"] == 100

    assert cli.main(["tasks", "show", "acme.echo"]) == 0
    text = capsys.readouterr().out
    assert "params of reward acme.words" in text and "max_words" in text and "100" in text
    assert cli.main(["plugins"]) == 0
    assert "reward acme.words (params: max_words=100)" in " ".join(capsys.readouterr().out.split())


# -- the docs --------------------------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "writing-a-reward.md"


def test_the_reward_pages_params_section_runs(tmp_path: Path):
    text = DOC.read_text(encoding="utf-8")
    heading = "## 5. Params: one reward, set per task"
    assert heading in text
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    module, tests = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert module.startswith("# acme_length/penalties.py") and tests.startswith("# tests/test_penalties.py")
    (tmp_path / "acme_length").mkdir()
    (tmp_path / "acme_length" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "acme_length" / "penalties.py").write_text(module, encoding="utf-8")
    (tmp_path / "test_penalties.py").write_text(tests, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_penalties.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout


def test_a_tasks_own_reward_may_declare_params_too():
    class Tolerance(pydantic.BaseModel):
        off_by: int = pydantic.Field(0, ge=0, description="How far from the solution still counts.")

    @vgrpo.reward("close", params=Tolerance)
    def close(parsed, sample, reward_params):
        """1.0 when the answer is within off_by of the solution."""
        return (
            1.0 if parsed is not None and abs(int(parsed) - sample.solution) <= reward_params.off_by else 0.0
        )

    class Near(vgrpo.Task):
        name = "acme.near"
        description = "Answer a number."
        template = vgrpo.PromptTemplate(user="{question}")
        rewards = (close,)
        default_weights = {"close": 1.0}
        example = {"id": "e", "question": "2?", "solution": 2}
        example_completion = "<answer>2</answer>"

        def parse(self, completion, params):
            return vgrpo.extract_answer(completion)

        def metric(self, predictions, samples, params):
            return {}

    task, sample = Near(), vgrpo.Sample(id="a", solution=5)
    assert [s.reward for s in score(task, ["<answer>6</answer>"], [sample])] == [0.0]  # default off_by 0
    weights = {"close": {"weight": 2, "params": {"off_by": 1}}}
    assert [s.reward for s in score(task, ["<answer>6</answer>"], [sample], weights=weights)] == [2.0]
    with pytest.raises(ParamsError, match=r"^rewards\.close\.params\.off_by: Input should be greater than"):
        score(
            task, ["<answer>6</answer>"], [sample], weights={"close": {"weight": 1, "params": {"off_by": -1}}}
        )
