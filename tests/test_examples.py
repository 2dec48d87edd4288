"""Every YAML config shipped under examples/ validates against the config models, and the data it names
exists unless `vgrpo data synth` writes it (examples/data/ is generated, and ignored by git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgrpo.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(p for p in EXAMPLES.rglob("*.yaml") if "accelerate" not in p.parts)
GENERATED = EXAMPLES / "data"


def test_there_are_example_configs():
    assert any(p.name == "tiny.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_validates(path):
    config = load_config(path)
    assert config.tasks, "an example config should train something"
    for entry in config.tasks:
        assert Path(entry.data[0]).is_absolute()  # resolved against the YAML file's folder


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_data_named_by_an_example_config_exists(path):
    config = load_config(path)
    files = [f for entry in config.tasks for f in entry.data]
    files += [f for split in config.eval.data.values() for f in split]
    shipped = [Path(f) for f in files if not Path(f).resolve().is_relative_to(GENERATED)]
    missing = [str(f) for f in shipped if not f.is_file()]
    assert not missing, f"{path.name} names data that is neither shipped nor generated: {missing}"


def test_the_third_party_mixture_uses_the_example_plugins_with_the_builtins():
    config = load_config(EXAMPLES / "mixture-with-third-party.yaml")
    assert {"rec", "ovd", "count", "math", "acme.docqa"} == {t.task for t in config.tasks}
    weighted = {name for t in config.tasks for name in (t.rewards or {})}
    assert {"acme.repetition_penalty", "acme.length_penalty"} <= weighted
    assert {"vgrpo-acme-docqa>=0.1", "vgrpo-acme-rewards>=0.1"} <= set(config.required_plugins)
