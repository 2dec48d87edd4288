"""Every YAML config shipped under examples/ validates against the config models."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgrpo.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(p for p in EXAMPLES.rglob("*.yaml") if "accelerate" not in p.parts)


def test_there_are_example_configs():
    assert any(p.name == "tiny.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_validates(path):
    config = load_config(path)
    assert config.tasks, "an example config should train something"
    for entry in config.tasks:
        assert Path(entry.data[0]).is_absolute()  # resolved against the YAML file's folder
