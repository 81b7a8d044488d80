"""The committed records of finished compare-cpu-2m runs (results/compare/cpu-2m/runs/): their save /
restore script, and that each record is a run of the spec as it stands (a record that drifted from the
spec would make ``probformer compare`` refuse the run directory it is restored into)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from probformer.experiments.compare import load_spec, plan_runs
from probformer.experiments.runs import _identity

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "results" / "compare" / "cpu-2m"
RECORD_FILES = ("train_config.json", "summary.json", "compare_run.json", "metrics.jsonl")


def _run_dir(root: Path, name: str, status: str | None) -> Path:
    run = root / "runs" / "compare-cpu-2m" / "runs" / name
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "state.pt").write_bytes(b"weights")
    (run / "train_config.json").write_text(json.dumps({"seed": 0}))
    (run / "metrics.jsonl").write_text('{"kind": "valid", "step": 50, "loss": 6.0}\n')
    if status is not None:
        (run / "summary.json").write_text(json.dumps({"status": status, "valid_loss": 5.0}, indent=2))
        (run / "compare_run.json").write_text(json.dumps({"wall_s": 1.0, "resumed": False}))
    return run


def _script(root: Path, action: str) -> subprocess.CompletedProcess:
    script = root / "results" / "compare" / "finished-runs.sh"
    return subprocess.run(["bash", str(script), action, "runs/compare-cpu-2m/runs", "results/compare/cpu-2m/runs"],
                          capture_output=True, text=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "results" / "compare" / "cpu-2m").mkdir(parents=True)
    shutil.copy(RESULT.parent / "finished-runs.sh", tmp_path / "results" / "compare")
    return tmp_path


def test_save_keeps_finished_runs_text_only_and_restore_puts_them_back(tree: Path):
    _run_dir(tree, "pt-500k-s0", "completed")
    _run_dir(tree, "bert-500k-s0", "diverged")
    _run_dir(tree, "ut-500k-s0", None)  # interrupted: a checkpoint, no summary
    done = _script(tree, "save")
    assert done.returncode == 0, done.stderr
    kept = tree / "results" / "compare" / "cpu-2m" / "runs"
    assert sorted(p.name for p in kept.iterdir()) == ["bert-500k-s0", "pt-500k-s0"]
    assert sorted(p.name for p in (kept / "pt-500k-s0").iterdir()) == sorted(RECORD_FILES)

    live = tree / "runs" / "compare-cpu-2m" / "runs"
    shutil.rmtree(live / "pt-500k-s0")
    shutil.rmtree(live / "bert-500k-s0")
    (live / "bert-500k-s0" / "checkpoint").mkdir(parents=True)  # a fresh checkout's partial rerun of it
    done = _script(tree, "restore")
    assert done.returncode == 0, done.stderr
    assert "restored the records of 2 finished runs" in done.stdout
    for name in ("pt-500k-s0", "bert-500k-s0"):
        assert sorted(p.name for p in (live / name).iterdir()) == sorted(RECORD_FILES)
        for f in RECORD_FILES:
            assert (live / name / f).read_text() == (kept / name / f).read_text()
    assert (live / "ut-500k-s0" / "checkpoint").is_dir()  # no record of it: left to resume
    again = _script(tree, "restore")
    assert "restored the records of 0 finished runs" in again.stdout


def test_unknown_action_fails(tree: Path):
    done = _script(tree, "push")
    assert done.returncode == 2 and "usage" in done.stderr


def test_committed_records_are_runs_of_the_current_spec(monkeypatch):
    monkeypatch.chdir(ROOT)
    records = sorted((RESULT / "runs").iterdir()) if (RESULT / "runs").is_dir() else []
    assert records, "results/compare/cpu-2m/runs holds no records"
    spec = load_spec(preset="compare-cpu-2m", overrides=[
        f"hparams_from.{arch}=results/sweeps/{arch}-2m/best.json" for arch in ("pt", "bert", "ut")])
    planned = {Path(run.config.out_dir).name: run for run in plan_runs(spec, spec.train["data"]["vocab_size"],
                                                                        "runs/compare-cpu-2m")}
    for record in records:
        assert record.name in planned, f"{record.name} is not a run of compare-cpu-2m"
        assert sorted(p.name for p in record.iterdir()) == sorted(RECORD_FILES)
        stored = json.loads((record / "train_config.json").read_text())
        assert _identity(stored) == _identity(planned[record.name].config.to_dict()), record.name
        summary = json.loads((record / "summary.json").read_text())
        assert summary["status"] in ("completed", "diverged")
        assert summary["tokens_seen"] >= spec.token_budget
        curve = [json.loads(line) for line in (record / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in curve if r["kind"] == "valid"][-1] == 500


@pytest.mark.parametrize("scale", ["0.5", "1", "2"])
def test_committed_lr_check_records_of_compare_cpu_20m_are_runs_of_its_spec(scale, monkeypatch):
    """results/compare/cpu-20m/lr-check/runs-x<scale>: each record is the run run.sh's lr check plans
    (compare-cpu-20m at 1M, seed 0, the sweeps' points with lr_scale), so a restored record is read back."""
    monkeypatch.chdir(ROOT)
    kept = ROOT / "results" / "compare" / "cpu-20m" / "lr-check" / f"runs-x{scale}"
    records = sorted(kept.iterdir()) if kept.is_dir() else []
    if not records:
        pytest.skip(f"no finished lr-check run at x{scale} committed yet")
    overrides = [f"hparams_from.{arch}=results/sweeps/{arch}-2m/best.json" for arch in ("pt", "bert", "ut")]
    if scale != "1":
        overrides += [f"lr_scale.{arch}={scale}" for arch in ("pt", "bert", "ut")]
    spec = load_spec(preset="compare-cpu-20m", overrides=overrides)
    planned = {Path(run.config.out_dir).name: run for run in plan_runs(spec, 4096, "unused")}
    for record in records:
        assert sorted(p.name for p in record.iterdir()) == sorted(RECORD_FILES)
        stored = json.loads((record / "train_config.json").read_text())
        assert _identity(stored) == _identity(planned[record.name].config.to_dict()), record.name
        assert json.loads((record / "summary.json").read_text())["status"] in ("completed", "diverged")
