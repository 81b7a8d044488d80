"""Resumable checkpoints, written atomically.

A checkpoint directory holds the model (``model.safetensors`` + ``config.json``, loadable with
``from_pretrained``), ``optimizer.pt`` (optimizer + scheduler state), ``rng.pt`` (torch, CUDA, numpy
and Python RNG states), ``trainer_state.json`` (step, data position, last metrics) and
``train_config.json``. It is written to ``checkpoint.tmp`` and swapped in by rename, so a run killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAME = "checkpoint"
FILES = ("model.safetensors", "config.json", "optimizer.pt", "rng.pt", "trainer_state.json", "train_config.json")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message names the file."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, trainer_state: dict, train_config: dict) -> Path:
    final = out_dir / NAME
    tmp, old = out_dir / f"{NAME}.tmp", out_dir / f"{NAME}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2))
    for name in FILES:
        with open(tmp / name, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(out_dir: Path) -> Path | None:
    """The latest complete checkpoint (a crash between the two renames leaves ``checkpoint.old``)."""
    for candidate in (out_dir / NAME, out_dir / f"{NAME}.old"):
        if candidate.is_dir():
            return candidate
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG states in place; return the trainer state."""
    missing = [name for name in FILES if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        from safetensors.torch import load_file

        state = load_file(path / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        params = dict(model.named_parameters(remove_duplicate=False))
        loaded = {params[k].data_ptr() for k in state if k in params}
        untied_missing = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
        if untied_missing or unexpected:  # a tied weight (saved once) is not missing
            raise ValueError(f"missing {untied_missing[:3]}, unexpected {list(unexpected)[:3]}")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path / 'model.safetensors'} is corrupt or does not match the model: "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    try:
        opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
        set_rng_state(rng)
        trainer_state = json.loads((path / "trainer_state.json").read_text())
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    return trainer_state
