"""probformer.training.checkpoint: nothing a checkpoint holds is ever executed; RNG states are plain
tensors; corrupt files and a full disk are one-line errors that say what is kept.

The code-execution test crafts an ``rng.pt`` whose unpickling would create a marker file (checked: an
unsafe load does create it), then resumes from it through the CLI.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from probformer.training import checkpoint as checkpoint_module
from probformer.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_tensors,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from probformer.training.trainer import train

SRC = Path(__file__).resolve().parents[1] / "src"


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def finished_run(tiny_run_config, tmp_path_factory) -> Path:
    """A tiny run of 10 steps with its final checkpoint (read-only: tests change copies)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_run_config(out, "steps=10", "eval_interval=10", "test_eval=false"), log=quiet)
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def resume_cli(run: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``probformer train --resume`` of ``run`` with its own config (plus ``overrides``), through the CLI."""
    args = [sys.executable, "-m", "probformer", "train", "--config", str(run / "train_config.json"),
            "--out-dir", str(run), "--resume"]
    for item in overrides:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)


class _RunsAShellCommand:
    """Pickles as a call of os.system: what an attacker's rng.pt would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_crafted_rng_file_is_refused_not_executed(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    crafted = {"format": 2, "torch": _RunsAShellCommand(f"touch {shlex.quote(str(marker))}")}
    torch.save(crafted, run / "checkpoint" / "rng.pt")
    # The crafted file is a real threat: an unsafe load runs its command.
    probe = tmp_path / "probe.pt"
    torch.save({"x": _RunsAShellCommand(f"touch {shlex.quote(str(tmp_path / 'probe-ran'))}")}, probe)
    torch.load(probe, weights_only=False)  # the test's own file, to prove the threat
    assert (tmp_path / "probe-ran").exists()

    proc = resume_cli(run, "steps=20")
    assert not marker.exists()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: checkpoint file ")
    assert "rng.pt holds objects other than tensors and numbers; it is not loaded" in proc.stderr


def _is_constant(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _loads_of(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, why) of each deserialising call that could run code: torch.load without weights_only=True,
    pickle / dill / cloudpickle / joblib loads, numpy loads allowing pickles."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name, keywords = node.func.attr, {k.arg: k.value for k in node.keywords}
        if owner == "torch" and name == "load" and not _is_constant(keywords.get("weights_only"), True):
            found.append((node.lineno, "torch.load without weights_only=True"))
        elif owner in ("pickle", "dill", "cloudpickle", "joblib", "marshal") and name in ("load", "loads", "Unpickler"):
            found.append((node.lineno, f"{owner}.{name}"))
        elif (owner in ("np", "numpy") and name == "load" and "allow_pickle" in keywords
              and not _is_constant(keywords["allow_pickle"], False)):
            found.append((node.lineno, "numpy load allowing pickles"))
    return found


def test_no_unsafe_deserialisation_in_the_package():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        problems += [f"{path.relative_to(SRC)}:{n}: weights_only=False"
                     for n, line in enumerate(text.splitlines(), 1) if "weights_only=False" in line.replace(" ", "")]
        problems += [f"{path.relative_to(SRC)}:{n}: {why}" for n, why in _loads_of(ast.parse(text))]
    assert not problems, problems
    assert _loads_of(ast.parse("torch.load(f)\npickle.loads(b)\ntorch.load(f, weights_only=True)")) == [
        (1, "torch.load without weights_only=True"), (2, "pickle.loads")]  # the scan itself finds them


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), [random.random() for _ in range(3)]


def test_rng_states_are_plain_tensors_that_load_safely(tmp_path):
    np.random.randn()  # a cached Gaussian in numpy's state, to carry over too
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    set_rng_state(load_tensors(tmp_path / "rng.pt"))  # weights_only=True, nothing allowed beyond tensors
    assert _draws() == expected


def test_an_older_rng_file_with_numpy_arrays_is_still_read(tmp_path):
    older = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(older, tmp_path / "rng.pt")
    expected = _draws()
    with pytest.raises(CheckpointError, match="not loaded"):
        load_tensors(tmp_path / "rng.pt")  # numpy arrays are not plain tensors ...
    set_rng_state(load_tensors(tmp_path / "rng.pt", checkpoint_module._legacy_rng_globals()))  # ... but allowed here
    assert _draws() == expected


@pytest.mark.parametrize("name", ["optimizer.pt", "rng.pt"])
def test_a_zeroed_torch_file_is_corrupt_without_torchs_advice(finished_run, tmp_path, name):
    run = copy_of(finished_run, tmp_path)
    file = run / "checkpoint" / name
    file.write_bytes(bytes(file.stat().st_size))
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(run / "checkpoint")
    message = str(caught.value)
    assert message.startswith(f"checkpoint file {file} is corrupt") and "weights_only" not in message
    assert "\n" not in message


def test_a_full_disk_says_the_previous_checkpoint_is_kept(tiny_run_config, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def disk_full_after_the_first_checkpoint(obj, file, *args, **kwargs):
        calls.append(file)
        if len(calls) > 2:  # the first checkpoint writes optimizer.pt and rng.pt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_after_the_first_checkpoint)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as caught:
        train(tiny_run_config(out, "steps=20", "checkpoint_interval=5", "eval_interval=20"), log=quiet)
    message = str(caught.value)
    assert "could not write the checkpoint of step 10" in message and os.strerror(errno.ENOSPC) in message
    assert f"the previous checkpoint {out / 'checkpoint'} (step 5) is intact" in message
    assert json.loads((find_checkpoint(out) / "trainer_state.json").read_text())["step"] == 5
    assert not (out / "checkpoint.tmp").exists() and not (out / ".train.lock").exists()


def test_a_checkpoint_keeps_its_tokenizer(finished_run):
    state = json.loads((finished_run / "checkpoint" / "trainer_state.json").read_text())
    tokenizer = (finished_run / "checkpoint" / "tokenizer.json").read_bytes()
    assert checkpoint_module.read_tokenizer(finished_run / "checkpoint") == tokenizer
    assert state["tokenizer_sha256"] == hashlib.sha256(tokenizer).hexdigest()
    assert (finished_run / "model" / "tokenizer.json").read_bytes() == tokenizer
