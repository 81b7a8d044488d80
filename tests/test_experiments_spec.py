"""probformer.experiments.spec: loading experiment specs (errors name the key) and the bundled spec presets,
kept apart from the training presets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from probformer.config import ConfigError, preset_names
from probformer.experiments import spec


@dataclass
class ToySpec:
    widths: list[int]
    train: dict = field(default_factory=dict)
    out_dir: str = "runs/toy"


def test_spec_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="widthz: unknown toy key; allowed: out_dir, train, widths"):
        spec.spec_from_values(ToySpec, "toy", {"widths": [1], "widthz": [2]})
    with pytest.raises(ConfigError, match="widths: required"):
        spec.load_spec(ToySpec, "toy", overrides=["out_dir=x"])
    with pytest.raises(ConfigError, match="sweep preset 'nope' not found; available: .*sweep-pt-cpu"):
        spec.load_spec(ToySpec, "sweep", preset="nope")
    path = tmp_path / "toy.yaml"
    path.write_text("widths: [16]\ntrain: {steps: 3}\n")
    loaded = spec.load_spec(ToySpec, "toy", path, overrides=["train.batch_size=4"], explicit={"out_dir": None})
    assert loaded == ToySpec(widths=[16], train={"steps": 3, "batch_size": 4})
    assert spec.read_spec(ToySpec, "toy", spec.write_spec(loaded, tmp_path / "spec.yaml")) == loaded


def test_experiment_specs_are_not_training_presets():
    assert "tiny" in preset_names()
    assert not [n for n in preset_names() if n.startswith(("sweep-", "lr-curves-", "transfer-", "compare-"))]
    assert {"sweep-pt-cpu", "sweep-pt-n64-cpu"} <= set(spec.preset_names("sweep"))
    assert spec.preset_names("lr-curves") == [
        "lr-curves-pt-cpu", "lr-curves-pt-n64-4x-tokens-cpu", "lr-curves-pt-n64-8x-cpu", "lr-curves-pt-n64-cpu",
        *(f"lr-curves-pt-n64-depth-t{t}-cpu" for t in (2, 3, 5, 8))]
    assert spec.preset_names("compare") == ["compare-cpu", "compare-cpu-20m", "compare-cpu-2m", "compare-gpu-20m"]
    assert {"sweep-pt-2m", "sweep-bert-2m", "sweep-ut-2m"} <= set(spec.preset_names("sweep"))
