"""probformer.experiments.sweep (``probformer sweep``): spec validation, grid coverage, failed trials, resume
after Ctrl-C and after a kill, and two worker processes sharing one SQLite study."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from probformer.cli import main
from probformer.config import ConfigError
from probformer.experiments.sweep import SweepSpec, load_sweep_spec, run_sweep, sweep_preset_names

PT_TINY = {"arch": "pt", "hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2,
           "max_distance": 2}


@pytest.fixture
def train_section(tiny_data_section) -> dict:
    return {"model": dict(PT_TINY), "data": tiny_data_section, "steps": 6, "batch_size": 8, "eval_interval": 3,
            "eval_batches": 2, "checkpoint_interval": 2, "log_interval": 2, "tensorboard": False, "progress": False,
            "test_eval": False, "device": "cpu", "threads": 1}


def spec_of(train_section: dict, tmp_path: Path, **kw) -> SweepSpec:
    values = {"search_space": {"optim.lr": [1e-3, 1e-2, 3e-2]}, "train": train_section, "sampler": "grid",
              "n_trials": None, "out_dir": str(tmp_path / "sweep"), "study_name": "t"}
    values.update(kw)
    return SweepSpec(**values)


def fake_train(losses: dict[float, float | None], calls: list):
    """A train() stand-in: loss by lr, None = diverged; records (lr, resume, out_dir)."""

    def train(config, *, resume=False, on_eval=None, log=print):
        calls.append((config.optim.lr, resume, config.out_dir))
        loss = losses[config.optim.lr]
        if loss is None:
            return {"status": "diverged", "reason": "non-finite training loss (nan) at step 3"}
        return {"status": "completed", "valid_loss": loss, "step": config.total_steps}

    return train


def test_grid_runs_every_point_once_and_writes_best(train_section, tmp_path):
    calls: list = []
    spec = spec_of(train_section, tmp_path)
    study = run_sweep(spec, train_fn=fake_train({1e-3: 3.0, 1e-2: 2.5, 3e-2: 2.8}, calls), log=lambda *_: None)
    assert sorted(c[0] for c in calls) == [1e-3, 1e-2, 3e-2]
    assert len({c[2] for c in calls}) == 3  # one run dir per trial
    best = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert best["optim"] == {"lr": 1e-2} and best["model"]["arch"] == "pt" and best["value"] == 2.5
    with open(tmp_path / "sweep" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    # Re-running a finished study trains nothing more.
    run_sweep(spec, train_fn=fake_train({}, calls), log=lambda *_: None)
    assert len(calls) == 3 and len(study.trials) == 3


def test_enqueued_points_run_first_and_once(train_section, tmp_path):
    lrs: list[float] = []

    def train(config, *, resume=False, on_eval=None, log=print):
        lrs.append(config.optim.lr)
        return {"status": "completed", "valid_loss": 3.0 - config.optim.lr, "step": config.total_steps}

    space = {"optim.lr": {"low": 1e-3, "high": 3e-2, "log": True}}
    spec = spec_of(train_section, tmp_path, search_space=space, sampler="random", n_trials=2,
                   enqueue=[{"optim.lr": 2e-2}])
    study = run_sweep(spec, train_fn=train, log=lambda *_: None)
    assert study.trials[0].params == {"optim.lr": 2e-2} and lrs[0] == 2e-2 and len(lrs) == 2
    # Run again with a larger budget: the enqueued point is not tried a second time.
    more = spec_of(train_section, tmp_path, search_space=space, sampler="random", n_trials=4, enqueue=spec.enqueue)
    run_sweep(more, train_fn=train, log=lambda *_: None)
    assert len(lrs) == 4 and lrs.count(2e-2) == 1
    for bad, match in (([{"optim.beta": 1.0}], r"enqueue\[0\].optim.beta: not a search_space key"),
                       ([{"optim.lr": 1.0}], r"enqueue\[0\].optim.lr: 1.0 is outside the search space"),
                       ([{}], "enqueue: expected a list")):
        with pytest.raises(ConfigError, match=match):
            spec_of(train_section, tmp_path, search_space=space, sampler="tpe", n_trials=3, enqueue=bad)
    with pytest.raises(ConfigError, match="enqueue: not with sampler grid"):
        spec_of(train_section, tmp_path, enqueue=[{"optim.lr": 1e-2}])
    steps = {"optim.lr": {"low": 1e-3, "high": 3e-2, "step": 1e-3}}
    with pytest.raises(ConfigError, match="2.5e-03|0.0025 is outside the search space"):  # off the step grid
        spec_of(train_section, tmp_path, search_space=steps, sampler="tpe", n_trials=3, enqueue=[{"optim.lr": 2.5e-3}])
    spec_of(train_section, tmp_path, search_space=steps, sampler="tpe", n_trials=3, enqueue=[{"optim.lr": 7e-3}])


def test_diverged_trial_fails_with_reason_and_the_study_goes_on(train_section, tmp_path):
    calls: list = []
    study = run_sweep(spec_of(train_section, tmp_path), train_fn=fake_train({1e-3: 3.0, 1e-2: 2.5, 3e-2: None}, calls),
                      log=lambda *_: None)
    states = {t.params["optim.lr"]: t for t in study.trials}
    assert states[3e-2].state.name == "FAIL"
    assert "diverged: non-finite training loss" in states[3e-2].user_attrs["fail_reason"]
    assert [states[lr].state.name for lr in (1e-3, 1e-2)] == ["COMPLETE", "COMPLETE"]
    # A failed-for-a-reason trial counts as finished: a rerun does not retry it.
    run_sweep(spec_of(train_section, tmp_path), train_fn=fake_train({}, calls), log=lambda *_: None)
    assert len(calls) == 3


def test_interrupted_trial_is_requeued_and_resumes_its_run_dir(train_section, tmp_path):
    spec = spec_of(train_section, tmp_path, sampler="random", n_trials=3,
                   search_space={"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}})
    seen: list = []

    def interrupt_second(config, **kw):
        seen.append(config.optim.lr)
        if len(seen) == 2:
            (Path(config.out_dir) / "checkpoint").mkdir(parents=True)  # what the killed run left behind
            raise KeyboardInterrupt
        return {"status": "completed", "valid_loss": 1.0 + config.optim.lr, "step": 6}

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, train_fn=interrupt_second, log=lambda *_: None)
    study = optuna.load_study(study_name="t", storage=spec.storage_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    first_value, interrupted_lr = study.trials[0].value, study.trials[1].params["optim.lr"]

    resumed: list = []

    def record(config, *, resume=False, **kw):
        resumed.append((config.optim.lr, resume, Path(config.out_dir).name))
        return {"status": "completed", "valid_loss": 1.0 + config.optim.lr, "step": 6}

    study = run_sweep(spec, train_fn=record, log=lambda *_: None)
    # The interrupted point is trained first, in its original run dir, resuming its checkpoint.
    assert resumed[0] == (interrupted_lr, True, "1")
    assert len(resumed) == 2  # plus one new trial: 3 finished in all
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3 and study.trials[0].value == first_value


def test_spec_errors_name_the_key(train_section, tmp_path):
    with pytest.raises(ConfigError, match="optim.lrr"):
        spec_of(train_section, tmp_path, search_space={"optim.lrr": [1e-3]})
    with pytest.raises(ConfigError, match="every search_space entry must be a list"):
        spec_of(train_section, tmp_path, search_space={"optim.lr": {"low": 1e-3, "high": 1e-1}})
    with pytest.raises(ConfigError, match="low < high"):
        spec_of(train_section, tmp_path, sampler="tpe", n_trials=2,
                search_space={"optim.lr": {"low": 1e-1, "high": 1e-3, "log": True}})
    with pytest.raises(ConfigError, match="model.hidden_sizes"):
        spec_of(train_section, tmp_path, search_space={"model.hidden_sizes": [16]})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"search_space": {"optim.lr": [1e-3]}, "trails": 3}))
    with pytest.raises(ConfigError, match="trails: unknown sweep key"):
        load_sweep_spec(path)
    assert main(["sweep", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_bundled_sweep_presets_load():
    assert {"sweep-pt-cpu", "sweep-bert-cpu", "sweep-ut-cpu", "sweep-pt-n32-cpu", "sweep-pt-n64-cpu", "sweep-pt-2m",
            "sweep-bert-2m", "sweep-ut-2m"} <= set(sweep_preset_names())
    for name in sweep_preset_names():
        spec = load_sweep_spec(preset=name)  # every key and search-space value checked against TrainConfig
        assert spec.planned_trials >= 4 and spec.train["model"]["arch"] in name


# -- real processes --------------------------------------------------------------------------------
def write_spec(path: Path, train_section: dict, out_dir: Path, **kw) -> Path:
    values = {"study_name": "procs", "out_dir": str(out_dir), "sampler": "random", "n_trials": 4,
              "heartbeat_interval": 1, "grace_period": 3,
              "search_space": {"optim.lr": {"low": 3e-3, "high": 3e-2, "log": True}},
              "train": {**train_section, "steps": 24}}
    values.update(kw)
    path.write_text(yaml.safe_dump(values))
    return path


def cli(spec: Path) -> list[str]:
    return [sys.executable, "-m", "probformer", "sweep", "--config", str(spec)]


def trial_states(db: Path) -> list[tuple[int, str]]:
    """The trials table; empty while optuna is still creating the database (it exists before its tables do)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error) or "locked" in str(error):
            return []
        raise


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
def test_two_workers_share_one_study(train_section, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", train_section, tmp_path / "sweep")
    procs = [subprocess.Popen(cli(spec), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
    study = optuna.load_study(study_name="procs", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 4
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both processes ran trials
    run_dirs = [t.user_attrs["out_dir"] for t in complete]
    assert len(set(run_dirs)) == len(run_dirs)
    assert all((Path(d) / "summary.json").exists() for d in run_dirs)
    lrs = [t.params["optim.lr"] for t in complete]
    assert len(set(lrs)) == len(lrs), lrs  # same sampler_seed in both workers, yet no point proposed twice


@pytest.mark.slow
def test_killed_sweep_keeps_finished_trials_and_resumes_the_killed_one(train_section, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", train_section, tmp_path / "sweep", n_trials=3)
    db = tmp_path / "sweep" / "study.db"
    proc = subprocess.Popen(cli(spec), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it while its second trial runs and has written a checkpoint.
    deadline = time.time() + 240
    while time.time() < deadline:
        states = trial_states(db)
        if len(states) >= 2 and states[0][1] == "COMPLETE" and (tmp_path / "sweep/trials/1/checkpoint").is_dir():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the sweep never reached its second trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = trial_states(db)
    assert before[0][1] == "COMPLETE" and before[1][1] == "RUNNING"
    finished_value = optuna.load_study(study_name="procs", storage=f"sqlite:///{db}").trials[0].value

    out = subprocess.run(cli(spec), env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="procs", storage=f"sqlite:///{db}")
    trials = study.trials
    assert trials[0].state.name == "COMPLETE" and trials[0].value == finished_value  # nothing lost
    retry = [t for t in trials if t.user_attrs.get("resume_of") == 1]
    assert trials[1].state.name == "FAIL" and retry[0].user_attrs["retry_of"] == 1
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == trials[1].params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    # The retry continued the killed run's directory from its checkpoint.
    log = (tmp_path / "sweep" / "trials" / "1" / "metrics.jsonl").read_text()
    assert '"final"' in log
    assert "resuming" in out.stdout
