"""probformer.experiments.runs: an experiment reuses a run directory only for the run it asks for,
in the precision it would train in here (``precision: auto`` resolves per machine)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from probformer.config import ConfigError, TrainConfig, load_config
from probformer.experiments.runs import NON_RESULT_KEYS, RESULT_KEYS, check_run_dir, recorded_bf16, train_or_reuse


def finished_run(run_dir: Path, config, bf16: bool | None) -> None:
    """What a finished training leaves that check_run_dir reads: the config and the metrics' info record."""
    run_dir.mkdir(parents=True)
    (run_dir / "train_config.json").write_text(json.dumps(config.to_dict()))
    info = {"kind": "info", "step": 0, "device": "cpu", **({} if bf16 is None else {"bf16": bf16})}
    (run_dir / "metrics.jsonl").write_text(json.dumps(info) + "\n" + json.dumps({"kind": "train", "step": 1}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "valid_loss": 5.0}))


def config_in(run_dir: Path, precision: str):
    config = load_config(preset="tiny", overrides=[f"precision={precision}", "device=cpu"])
    config.out_dir = str(run_dir)
    return config


def test_a_run_in_another_precision_is_not_reused(tmp_path, monkeypatch):
    run = tmp_path / "run"
    finished_run(run, config_in(run, "bf16"), bf16=True)
    assert recorded_bf16(run) is True
    check_run_dir(config_in(run, "bf16"))
    with pytest.raises(ConfigError, match="trained in bf16, but precision=fp32 means fp32 here; set precision=bf16"):
        check_run_dir(config_in(run, "fp32"))
    # auto is judged as it resolves on this machine: bf16 with bf16 units, fp32 without.
    monkeypatch.setattr("probformer.training.device.cpu_bf16_units", lambda: None)
    with pytest.raises(ConfigError, match="precision=auto means fp32 here"):
        check_run_dir(config_in(run, "auto"))
    monkeypatch.setattr("probformer.training.device.cpu_bf16_units", lambda: "avx512_bf16")
    check_run_dir(config_in(run, "auto"))
    summary, _ = train_or_reuse(config_in(run, "auto"), lambda *a, **k: pytest.fail("retrained a finished run"),
                                log=lambda *_: None)
    assert summary["valid_loss"] == 5.0


def test_every_train_field_is_placed_once():
    """A TrainConfig field added later must be said to make a run's result or not: otherwise it would
    silently count as one (lr-curves references) or not (run-directory reuse)."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(RESULT_KEYS + NON_RESULT_KEYS) == sorted(fields)
    assert not set(RESULT_KEYS) & set(NON_RESULT_KEYS)


@pytest.mark.parametrize("override, named", [("steps=7", "steps"), ("optim.lr=0.5", "optim"),
                                             ("data.mask_prob=0.2", "data"), ("eval_batches=3", "eval_batches"),
                                             ("eval_interval=7", "eval_interval")])
def test_a_run_of_another_configuration_is_not_reused(tmp_path, override, named):
    run = tmp_path / "run"
    finished_run(run, config_in(run, "fp32"), bf16=False)
    other = load_config(preset="tiny", overrides=["precision=fp32", "device=cpu", override])
    other.out_dir = str(run)
    with pytest.raises(ConfigError, match=f"holds a run with a different {named} than this spec asks for"):
        check_run_dir(other)
    # how a run is watched or where it runs is not what it is
    watched = load_config(preset="tiny", overrides=["precision=fp32", "device=cpu", "log_interval=3",
                                                    "checkpoint_interval=5", "tensorboard=false", "threads=1",
                                                    "test_eval=false", "progress=false"])
    watched.out_dir = str(run)
    check_run_dir(watched)


def test_steps_that_a_token_budget_overrides_are_not_part_of_the_run(tmp_path):
    """With a token budget the run's length is the budget's; `steps` is not read, so it may differ."""
    run = tmp_path / "run"
    budget = ["precision=fp32", "device=cpu", "token_budget=4096"]
    written = load_config(preset="tiny", overrides=[*budget, "steps=500"])
    written.out_dir = str(run)
    finished_run(run, written, bf16=False)
    same = load_config(preset="tiny", overrides=[*budget, "steps=9"])
    same.out_dir = str(run)
    check_run_dir(same)
    other = load_config(preset="tiny", overrides=["precision=fp32", "device=cpu", "token_budget=8192"])
    other.out_dir = str(run)
    with pytest.raises(ConfigError, match="different token_budget"):
        check_run_dir(other)


def test_a_record_that_names_no_precision_is_not_judged(tmp_path):
    """No metrics yet (a fresh directory) or an info record without the key: nothing to compare."""
    fresh = tmp_path / "fresh"
    assert recorded_bf16(fresh) is None
    check_run_dir(config_in(fresh, "fp32"))
    old = tmp_path / "old"
    finished_run(old, config_in(old, "fp32"), bf16=None)
    assert recorded_bf16(old) is None
    check_run_dir(config_in(old, "bf16"))


def test_the_committed_records_are_reused_by_their_specs(monkeypatch):
    """Every committed compare record reads back under its own spec's precision (compare-cpu-2m's fp32,
    compare-cpu-20m's bf16), whatever this machine's auto would pick."""
    from probformer.config import config_from_dict
    from probformer.experiments.compare.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the presets name their hparams_from files relative to the repository
    for name in ("cpu-2m", "cpu-20m"):
        precision = load_spec(preset=f"compare-{name}").train["precision"]
        runs = sorted((root / "results" / "compare" / name / "runs").glob("*/train_config.json"))
        assert runs
        for record in runs:
            config = config_from_dict({**json.loads(record.read_text()), "precision": precision, "device": "cpu"})
            config.out_dir = str(record.parent)
            check_run_dir(config)
            assert recorded_bf16(record.parent) is (precision == "bf16")
