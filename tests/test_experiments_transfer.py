"""probformer.experiments.transfer (``probformer transfer``): the planned points, resumability, the verdict
and the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

from probformer.config import ConfigError
from probformer.experiments.sweep import SweepSpec
from probformer.experiments.transfer import TransferSpec, load_transfer_spec, run_transfer

PT_BASE = {"arch": "pt", "hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2,
           "max_distance": 2, "parametrization": "mup"}


@pytest.fixture
def sweep_dir(tiny_data_section, tmp_path) -> Path:
    """What `probformer sweep` leaves behind: spec.yaml and best.json (written by hand, no training)."""
    train = {"model": dict(PT_BASE), "data": tiny_data_section, "steps": 4, "batch_size": 8, "eval_interval": 4,
             "eval_batches": 1, "tensorboard": False, "progress": False, "test_eval": False, "device": "cpu",
             "threads": 1}
    spec = SweepSpec(search_space={"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                                   "model.output_mult": {"low": 0.25, "high": 4.0, "log": True}},
                     train=train, out_dir=str(tmp_path / "sweep"), n_trials=4)
    out = tmp_path / "sweep"
    out.mkdir()
    from dataclasses import asdict

    (out / "spec.yaml").write_text(yaml.safe_dump(asdict(spec)))
    (out / "best.json").write_text(json.dumps({"optim": {"lr": 0.01}, "model": {"arch": "pt", "output_mult": 2.0},
                                               "params": {"optim.lr": 0.01, "model.output_mult": 2.0},
                                               "value": 3.0, "trial": 7, "study": "s"}))
    return out


def surface(config) -> float:
    """Stand-in loss: optimum at lr 0.01 and output_mult 1.0 (so x/2 on output_mult beats the benchmark)."""
    import math

    return 3.0 + abs(math.log2(config.optim.lr / 0.01)) * 0.1 + abs(math.log2(config.model["output_mult"])) * 0.1 \
        + 0.001 * config.seed


def test_benchmark_and_each_hp_times_and_over_factor(sweep_dir, tmp_path):
    seen = []

    def fake_train(config, *, resume=False, log=print, **kw):
        seen.append((config.model["hidden_size"], config.optim.lr, config.model["output_mult"], config.seed))
        return {"status": "completed", "valid_loss": surface(config)}

    spec = TransferSpec(sweep_dir=str(sweep_dir), widths=[32], seeds=[0, 1], out_dir=str(tmp_path / "tr"))
    rows = run_transfer(spec, train_fn=fake_train, log=lambda *_: None)
    assert len(rows) == 5 * 2 and len(set(seen)) == 10
    assert {(lr, om) for _, lr, om, _ in seen} == {(0.01, 2.0), (0.005, 2.0), (0.02, 2.0), (0.01, 1.0), (0.01, 4.0)}
    assert {w for w, *_ in seen} == {32}  # grown from N0 = 16 with with_width
    report = (tmp_path / "tr" / "report.md").read_text()
    assert "best perturbed point model.output_mult/2 is 0.1000 lower, beyond seed noise" in report
    assert (tmp_path / "tr" / "transfer.png").stat().st_size > 10_000
    # one run directory per (variant, seed), one level under n<width> (a label's '/' is not a folder)
    run_dirs = sorted(p.name for p in (tmp_path / "tr" / "n32").iterdir())
    assert len(run_dirs) == 10 and "optim.lr-div2-s1" in run_dirs and "model.output_multx2-s0" in run_dirs
    # Finished runs are read back, not retrained.
    run_transfer(spec, train_fn=lambda *a, **k: pytest.fail("retrained a finished run"), log=lambda *_: None)


def test_spec_errors(sweep_dir, tmp_path):
    with pytest.raises(ConfigError, match="best.json not found"):
        TransferSpec(sweep_dir=str(tmp_path), widths=[32])
    with pytest.raises(ConfigError, match="perturb: 'optim.eps'"):
        TransferSpec(sweep_dir=str(sweep_dir), widths=[32], perturb=["optim.eps"])
    with pytest.raises(ConfigError, match="factor"):
        TransferSpec(sweep_dir=str(sweep_dir), widths=[32], factor=1.0)
    with pytest.raises(ConfigError, match="widths: required"):
        load_transfer_spec(overrides=[f"sweep_dir={sweep_dir}"])


def test_bundled_transfer_presets_load(tmp_path, monkeypatch):
    """Every preset's keys and values are valid; before its sweep has run it says which command to run."""
    from probformer.experiments.transfer import transfer_preset_names

    assert {"transfer-pt-cpu", "transfer-pt-n64-cpu", "transfer-pt-n64-8x-cpu"} <= set(transfer_preset_names())
    repo = Path(__file__).resolve().parents[1]
    # The 8x preset reads the committed sweep: it loads on a fresh checkout, at N = 512, in fp32.
    monkeypatch.chdir(repo)
    spec = load_transfer_spec(preset="transfer-pt-n64-8x-cpu")
    config = spec.run_config(512, spec.best["params"], 0, "benchmark")
    assert (config.precision, config.model["hidden_size"], config.optim.lr) == ("fp32", 512, 0.02)
    monkeypatch.chdir(tmp_path)  # no runs/ here: the sweeps have not run
    for name in transfer_preset_names():
        with pytest.raises(ConfigError, match=r"sweep_dir: (runs/sweep-pt-n(32|64)-cpu|results/sweeps/pt-n64-cpu)"
                                              r"/best.json not found .*probformer sweep"):
            load_transfer_spec(preset=name)


def test_train_overrides_the_sweeps_train_section(sweep_dir, tmp_path):
    """``train`` pins settings the sweep left to a default (a sweep recorded before auto meant bf16)."""
    seen = []

    def fake_train(config, *, resume=False, log=print, **kw):
        seen.append((config.precision, config.batch_size))
        return {"status": "completed", "valid_loss": surface(config)}

    spec = TransferSpec(sweep_dir=str(sweep_dir), widths=[32], seeds=[0], out_dir=str(tmp_path / "tr"),
                        train={"precision": "fp32", "batch_size": 4, "threads": 1})  # threads: not named
    run_transfer(spec, train_fn=fake_train, log=lambda *_: None)
    assert set(seen) == {("fp32", 4)}
    with pytest.raises(ConfigError, match="bogus"):
        TransferSpec(sweep_dir=str(sweep_dir), widths=[32], train={"bogus": 1})
    with pytest.raises(ConfigError, match="train.model"):
        TransferSpec(sweep_dir=str(sweep_dir), widths=[32], train={"model": {"hidden_size": 8}})
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        TransferSpec(sweep_dir=str(sweep_dir), widths=[32], train=["precision"])
    for per_run in ({"optim": {"lr": 0.5}}, {"seed": 3}, {"out_dir": "x"}):  # the test sets these itself
        with pytest.raises(ConfigError, match="set by the transfer test for every run"):
            TransferSpec(sweep_dir=str(sweep_dir), widths=[32], train=per_run)
    report = (tmp_path / "tr" / "report.md").read_text()
    assert "Every run also sets, over the sweep's train section: batch_size = 4, precision = fp32.\n\n#" in report
