"""The experiments' shared scaffold: the seed-noise rule, spec loading, CSV round trips, and the committed
reports, which must be exactly what their drivers make of the committed results.csv."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from probformer.config import ConfigError, preset_names
from probformer.experiments import noise, spec
from probformer.experiments.reports import read_rows, write_csv

ROOT = Path(__file__).resolve().parents[1]


# -- the seed-noise rule -----------------------------------------------------------------------------
def test_seeds_are_mean_and_sample_std():
    s = noise.Seeds.of([6.1, 6.3, 6.2])
    assert (s.mean, s.n) == (pytest.approx(6.2), 3) and s.std == pytest.approx(0.1)  # ddof 1
    one = noise.Seeds.of([6.1])
    assert one.mean == 6.1 and math.isnan(one.std) and one.n == 1


def test_noise_is_the_standard_error_of_the_difference():
    a, b = noise.Seeds.of([1.0, 1.2, 1.1, 1.3]), noise.Seeds.of([0.9, 1.0])
    d = noise.difference(a, b)
    by_hand = math.sqrt(np.var([1.0, 1.2, 1.1, 1.3], ddof=1) / 4 + np.var([0.9, 1.0], ddof=1) / 2)
    assert d.delta == pytest.approx(1.15 - 0.95) and d.noise == pytest.approx(by_hand)
    assert d.ratio == pytest.approx(0.2 / by_hand)
    # Two seeds a side: the noise is the pooled seed std (compare's old rule, at its old 2x threshold).
    two = noise.difference(noise.Seeds(5.0, 0.03, 2), noise.Seeds(5.1, 0.04, 2))
    assert two.noise == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 2))


def test_real_beyond_k_times_the_noise_and_no_verdict_without_two_seeds():
    noise_of = math.sqrt(2 * 0.01**2 / 2)  # sides of std 0.01 at 2 seeds each
    just_inside = noise.difference(noise.Seeds(1.0 + noise.K * noise_of * 0.99, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    just_outside = noise.difference(noise.Seeds(1.0 - noise.K * noise_of * 1.01, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    assert not just_inside.real and just_outside.real and just_outside.delta < 0
    # Beyond the larger seed std but within 2 standard errors: real under lr-curves' old rule, not now.
    old_rule_real = noise.difference(noise.Seeds(1.015, 0.01, 2), noise.Seeds(1.0, 0.01, 2))
    assert old_rule_real.delta > 0.01 and not old_rule_real.real
    single = noise.difference(noise.Seeds(1.0, math.nan, 1), noise.Seeds(5.0, 0.01, 2))
    assert not single.estimated and not single.real and math.isnan(single.ratio)
    exact = noise.difference(noise.Seeds(1.0, 0.0, 2), noise.Seeds(1.5, 0.0, 2))
    assert exact.real and exact.ratio == math.inf


# -- specs -------------------------------------------------------------------------------------------
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
    assert spec.preset_names("lr-curves") == ["lr-curves-pt-cpu", "lr-curves-pt-n64-cpu"]
    assert spec.preset_names("compare") == ["compare-cpu", "compare-cpu-2m", "compare-gpu-20m"]
    assert {"sweep-pt-2m", "sweep-bert-2m", "sweep-ut-2m"} <= set(spec.preset_names("sweep"))


# -- CSV round trip ----------------------------------------------------------------------------------
def test_csv_writes_missing_numbers_empty_and_reads_them_back_typed(tmp_path):
    rows = [{"width": 32, "loss": 6.123456789012345, "ok": True, "note": "a,b"},
            {"width": 64, "loss": float("nan"), "ok": False, "note": None}]
    path = write_csv(tmp_path / "t.csv", rows)
    assert path.read_text().splitlines()[2] == "64,,False,"
    back = read_rows(path, {"width": int, "loss": float, "ok": bool})
    assert back[0] == {"width": 32, "loss": 6.123456789012345, "ok": True, "note": "a,b"}  # floats exact
    assert back[1]["width"] == 64 and math.isnan(back[1]["loss"]) and back[1]["ok"] is False


# -- the committed reports ---------------------------------------------------------------------------
COMMITTED = [
    ("lr_curves/pt-cpu", "best_lr.md", []), ("lr_curves/pt-cpu-2x", "best_lr.md", []),
    ("lr_curves/pt-cpu-beta1", "best_lr.md", []), ("lr_curves/pt-cpu-n64", "best_lr.md", []),
    ("transfer/pt-cpu", "report.md", ["--sweep-dir", "results/sweeps/pt-n32-cpu"]),
    ("transfer/pt-n64-cpu", "report.md", ["--sweep-dir", "results/sweeps/pt-n64-cpu"]),
    ("compare/cpu", "results.md", []), ("compare/cpu-2m", "results.md", []),
]


@pytest.mark.parametrize("where, report, extra", COMMITTED, ids=[c[0] for c in COMMITTED])
def test_committed_reports_are_their_results_rerendered(where, report, extra, tmp_path, monkeypatch, capsys):
    """``--rerender`` of every committed result directory gives its committed report byte for byte, so the
    verdicts there are the current rule's (lr-curves references resolve from the repository root)."""
    from probformer.cli import main

    monkeypatch.chdir(ROOT)
    committed = ROOT / "results" / where
    out = tmp_path / "out"
    shutil.copytree(committed, out)
    (out / report).unlink()
    command = where.split("/")[0].replace("_", "-")
    assert main([command, "--config", str(committed / "spec.yaml"), "--out-dir", str(out), "--rerender", *extra]) == 0
    assert (out / report).read_text() == (committed / report).read_text()
    assert capsys.readouterr().out
