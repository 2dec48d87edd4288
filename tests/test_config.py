"""Config: YAML + dotted overrides, unknown keys rejected with the valid names, values checked."""

from __future__ import annotations

import pytest
import yaml

import vgrpo
from vgrpo.config import dump_config, load_config


def write(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(
        tmp_path, {"tasks": [{"task": "rec", "data": "rec/train.jsonl", "params": {"coords": "abs"}}]}
    )
    cfg = load_config(
        path,
        [
            "grpo.loss_type=grpo",
            "optim.lr=3e-6",
            "tasks.0.params.coords=norm1000",
            "tasks.0.weight=2",
            "model.lora.enabled=true",
            "generation.top_k=5",
        ],
    )
    assert cfg.grpo.loss_type == "grpo" and cfg.optim.lr == 3e-6 and cfg.generation.top_k == 5
    assert (
        cfg.tasks[0].params == {"coords": "norm1000"}
        and cfg.tasks[0].weight == 2.0
        and cfg.model.lora.enabled
    )
    assert cfg.tasks[0].data == [str(tmp_path / "rec/train.jsonl")]  # relative to the YAML file


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["grpo.los_type=grpo"], "unknown config key 'grpo.los_type' (did you mean 'loss_type'?)"),
        (["grpo.loss_type=ppo"], "grpo.loss_type: Input should be 'grpo', 'bnpo', 'dr_grpo' or 'dapo'"),
        (["optim.lr=0"], "optim.lr: Input should be greater than 0"),
        (["optimizer.lr=1"], "unknown config key 'optimizer' (did you mean 'optim'?)"),
        (["grpo.num_generations=1"], "grpo.num_generations"),
        (["seed"], "expected key.sub=value"),
        (["tasks.3.weight=1"], "has 0 items"),
    ],
)
def test_bad_overrides_name_the_key_and_the_allowed_values(overrides, expected):
    with pytest.raises(vgrpo.ParamsError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)


def test_unknown_yaml_keys_list_the_valid_ones(tmp_path):
    path = write(tmp_path, {"grpo": {"betta": 0.1}, "tasks": [{"task": "rec", "data": ["a"], "wieght": 2}]})
    with pytest.raises(vgrpo.ParamsError) as info:
        load_config(path)
    msg = str(info.value)
    assert "grpo.betta" in msg and "'beta'" in msg
    assert "tasks.0.wieght" in msg and "did you mean 'weight'" in msg


def test_a_task_listed_twice_is_an_error():
    with pytest.raises(vgrpo.ParamsError, match="appear more often"):
        load_config(None, ["tasks=[{task: rec, data: a}, {task: rec, data: b}]"])


def test_bad_files(tmp_path):
    with pytest.raises(vgrpo.ParamsError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("grpo: [unclosed")
    with pytest.raises(vgrpo.ParamsError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(vgrpo.ParamsError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["grpo.beta=0.04", "optim.betas=[0.9, 0.95]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_eval_section_resolves_its_data_and_checks_pass_k(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "tasks: [{task: rec, data: d/train.jsonl}, {task: count, data: [c.jsonl]}]\n"
        "eval: {data: {rec: d/val.jsonl, count: [v1.jsonl, /abs/v2.jsonl]}, every: 5}\n"
    )
    cfg = load_config(tmp_path / "c.yaml", ["eval.num_samples=4", "eval.pass_k=1,4"])
    assert cfg.eval.data == {
        "rec": [str(tmp_path / "d/val.jsonl")],
        "count": [str(tmp_path / "v1.jsonl"), "/abs/v2.jsonl"],
    }
    assert (cfg.eval.every, cfg.eval.num_samples, cfg.eval.pass_k) == (5, 4, [1, 4])
    assert load_config(None).eval.num_samples == 1 and load_config(None).eval.every == 0  # greedy, off
    with pytest.raises(vgrpo.ParamsError, match=r"between 1 and num_samples \(1\).*needs num_samples > 1"):
        load_config(None, ["eval.pass_k=[4]"])
    with pytest.raises(vgrpo.ParamsError, match=r"between 1 and num_samples \(4\), got \[0, 5\]") as err:
        load_config(None, ["eval.num_samples=4", "eval.pass_k=0,2,5"])
    assert "eval.pass_k: " in str(err.value) and "batch_size" not in str(
        err.value
    )  # the field, not the section
    with pytest.raises(vgrpo.ParamsError, match=r"eval.pass_k: .*empty item in '1,,4'"):
        load_config(None, ["eval.num_samples=4", "eval.pass_k=1,,4"])  # not silently [1, 4]
    assert load_config(None, ["eval.num_samples=4", "eval.pass_k= 1 , 4 "]).eval.pass_k == [1, 4]
    with pytest.raises(vgrpo.ParamsError, match=r"eval.every"):
        load_config(None, ["eval.every=-1"])


def test_eval_data_must_name_a_task_of_the_mixture():
    with pytest.raises(vgrpo.ParamsError, match=r"eval.data: \['ovd'\] not in tasks \['rec'\]"):
        load_config(None, ["tasks=[{task: rec, data: a}]", "eval.data={ovd: [b]}"])


def test_a_bare_key_of_exactly_one_section_is_a_shorthand():
    from vgrpo.config import load_config

    config = load_config(None, ["max_steps=3", "resume=never", "num_generations=2"])
    assert (
        config.optim.max_steps == 3
        and config.checkpoint.resume == "never"
        and config.grpo.num_generations == 2
    )
    with pytest.raises(vgrpo.ParamsError, match=r"ambiguous.*checkpoint\.every.*|ambiguous.*logging\.every"):
        load_config(None, ["every=5"])  # logging.every, checkpoint.every, eval.every
    with pytest.raises(vgrpo.ParamsError, match="unknown config key .max_stepz."):
        load_config(None, ["max_stepz=3"])
