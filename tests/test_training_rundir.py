"""probformer.training.rundir: a run directory is never overwritten by accident, never shared by two
trains at once (two real processes), and an experiment's run killed before its first checkpoint is
started again rather than refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from probformer.cli.main import build_parser
from probformer.config import ConfigError
from probformer.training.metrics_log import read_metrics
from probformer.training.rundir import LOCK_FILE
from probformer.training.trainer import train


def quiet(*_args, **_kwargs) -> None:
    pass


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "probformer", "train", *args]


def config_args(config) -> list[str]:
    """CLI arguments that give ``config`` (a tiny_run_config) back: its keys as --set items."""
    data = ",".join(f"{k}: {json.dumps(v)}" for k, v in config.to_dict()["data"].items())
    return ["--preset", "tiny", "--set", f"data={{{data}}}", "--set", "progress=false", "--set", "tensorboard=false",
            "--out-dir", config.out_dir]


def test_a_run_directory_in_use_is_refused_with_one_line(tiny_run_config, tmp_path):
    out = tmp_path / "run"
    args = config_args(tiny_run_config(out))
    first = subprocess.Popen(cli(*args, "--set", "steps=100000", "--set", "eval_interval=100000"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "metrics.jsonl").exists():  # it holds the lock and trains
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first train never started"
            time.sleep(0.1)
        second = subprocess.run(cli(*args, "--resume"), capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.count("\n") == 1
        assert f"{out} is in use by another probformer train (pid {first.pid} on " in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "interrupted" in stderr
    assert not (out / LOCK_FILE).exists()  # released with the run
    assert all(r["kind"] in ("info", "train") for r in read_metrics(out / "metrics.jsonl"))  # one writer only


def test_a_non_empty_run_directory_needs_resume_or_overwrite(tiny_run_config, tmp_path):
    out = tmp_path / "run"
    config = tiny_run_config(out, "steps=5", "eval_interval=5", "test_eval=false")
    train(config, log=quiet)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as caught:
        train(config, log=quiet)
    message = str(caught.value)
    assert message.startswith(f"{out} already holds a completed run (step 5);")
    assert "--resume" in message and "another --out-dir" in message and "--overwrite" in message
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched

    (out / "snapshots").mkdir()
    (out / "snapshots" / "stale").write_text("of the old run")
    logs: list[str] = []
    result = train(tiny_run_config(out, "steps=3", "eval_interval=3", "test_eval=false"), overwrite=True,
                   log=logs.append)
    assert result["status"] == "completed" and any(line.startswith("--overwrite: clearing") for line in logs)
    assert not (out / "snapshots").exists()  # nothing of the old run left mixed in
    assert json.loads((out / "summary.json").read_text())["step"] == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "final"] == [3]

    with pytest.raises(ConfigError, match="give one of them"):
        train(config, resume=True, overwrite=True, log=quiet)
    assert build_parser().parse_args(["train", "--overwrite"]).overwrite
    with pytest.raises(SystemExit):  # argparse: not allowed with each other
        build_parser().parse_args(["train", "--overwrite", "--resume"])


def test_overwrite_clears_only_a_run_directory(tiny_run_config, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    with pytest.raises(ConfigError, match=r"is not a run directory .* it is not cleared"):
        train(tiny_run_config(out, "steps=3"), overwrite=True, log=quiet)
    assert (out / "notes.txt").read_text() == "not a run"


def test_an_out_dir_that_is_a_file_is_a_clear_error(tiny_run_config, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        train(tiny_run_config(tmp_path / "file", "steps=3"), log=quiet)


class Interrupt(Exception):
    pass


def test_a_run_killed_before_its_first_checkpoint_starts_over(tiny_run_config, tmp_path):
    # --resume of it, and an experiment's train_or_reuse of it: both train it from scratch (its partial
    # files cleared), neither is refused as a non-empty directory.
    from probformer.experiments.runs import train_or_reuse

    def stop_at_5(step, _metrics):
        if step == 5:
            raise Interrupt

    def resume(config) -> dict:
        return train(config, resume=True, log=quiet)

    def reuse(config) -> dict:
        return train_or_reuse(config, train, log=quiet)[0]

    for name, go_on in [("cli", resume), ("experiment", reuse)]:
        config = tiny_run_config(tmp_path / name, "steps=10", "eval_interval=5", "checkpoint_interval=10",
                                 "test_eval=false")
        with pytest.raises(Interrupt):
            train(config, on_eval=stop_at_5, log=quiet)
        assert (tmp_path / name / "metrics.jsonl").exists() and not (tmp_path / name / "checkpoint").exists()
        assert go_on(config)["status"] == "completed"
        assert [r["step"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["kind"] == "valid"] == [5, 10]
