"""End-to-end training: CLI run, exact resume, divergence and failure paths (tiny configs, real corpus)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from probformer.config import load_config
from probformer.training.metrics_log import read_metrics
from probformer.training.trainer import train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus-cache")


def tiny(cache_dir: Path, out_dir: Path, *overrides: str):
    return load_config(preset="tiny", overrides=[f"data.cache_dir={cache_dir}", f"out_dir={out_dir}", "progress=false",
                                                 "tensorboard=false", *overrides])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probformer", *args], capture_output=True, text=True, timeout=600)


def test_cli_tiny_run_lowers_validation_loss(cache_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "eval_interval=20", "--set", "progress=false")
    assert proc.returncode == 0, proc.stderr
    assert "unigram baseline" in proc.stdout
    valid = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [20, 40, 60]
    # the read-out bias starts at log unigram frequencies: training must beat the context-free baseline
    assert valid[-1]["loss"] < valid[0]["loss"] < math.log(512)
    assert valid[-1]["loss"] < valid[-1]["unigram_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 60
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    assert (out / "checkpoint" / "optimizer.pt").exists()
    assert any((out / "tensorboard").iterdir())  # TensorBoard events next to metrics.jsonl


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(cache_dir, tmp_path):
    common = ("steps=40", "eval_interval=10", "checkpoint_interval=20", "test_eval=false")
    full = train(tiny(cache_dir, tmp_path / "full", *common))

    def stop_at_30(step, _metrics):
        if step == 30:
            raise Interrupt

    cut = tiny(cache_dir, tmp_path / "cut", *common)
    with pytest.raises(Interrupt):
        train(cut, on_eval=stop_at_30)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())["step"] == 20
    resumed = train(cut, resume=True)

    keys = ("valid_loss", "valid_accuracy", "step", "tokens_seen")
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_second", "parameters")}  # noqa: E731
                          for r in rows if r["kind"] in ("train", "valid")]
    assert strip(read_metrics(tmp_path / "cut" / "metrics.jsonl")) == strip(read_metrics(tmp_path / "full" / "metrics.jsonl"))


def test_diverging_run_reports_status_not_traceback(cache_dir, tmp_path):
    result = train(tiny(cache_dir, tmp_path / "div", "optim.lr=1e12", "optim.grad_clip=0", "model.init_std_input=1e30"))
    assert result["status"] == "diverged" and "non-finite" in result["reason"]
    final = [r for r in read_metrics(tmp_path / "div" / "metrics.jsonl") if r["kind"] == "final"]
    assert final and final[0]["status"] == "diverged"
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(tmp_path / "d2"),
                   "--set", "optim.lr=1e12", "--set", "model.init_std_input=1e30", "--set", "progress=false")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert '"status": "diverged"' in proc.stdout


def test_missing_data_path_is_a_clear_error(tmp_path):
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.source={tmp_path / 'nope.txt'}", "--out-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: data source") and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny(cache_dir, out, "steps=10", "eval_interval=10", "test_eval=false"))
    (out / "checkpoint" / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "steps=20", "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "checkpoint" in proc.stderr and "corrupt" in proc.stderr


def test_resume_with_a_different_tokenizer_is_refused(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny(cache_dir, out, "steps=10", "eval_interval=10", "test_eval=false"))
    state_file = out / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["tokenizer_sha256"] = "0" * 64  # as if the corpus cache had been rebuilt with other token ids
    state_file.write_text(json.dumps(state))
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "steps=20", "--resume")
    assert proc.returncode == 2 and "different tokenizer" in proc.stderr
