"""Resumable checkpoints, written atomically.

A checkpoint directory holds the model (``model.safetensors`` + ``config.json``, loadable with
``from_pretrained``; full weights however the run was sharded), ``optimizer.pt`` (optimizer +
scheduler state), ``rng.pt`` (torch, CUDA, numpy and Python RNG states; ``rng-rankR.pt`` for the
other processes of a distributed run), ``trainer_state.json`` (step, data position, last metrics) and
``train_config.json``. It is written to ``checkpoint.tmp`` and swapped in by rename, so a run killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
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


@dataclass
class CheckpointContents:
    """What a checkpoint holds, read from disk; the trainer applies it (it knows how the model is wrapped)."""

    model_state: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict[str, Any]  # this rank's
    trainer_state: dict


def rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def save_checkpoint(out_dir: Path, model, model_state: dict[str, torch.Tensor], optimizer_state: dict,
                    scheduler_state: dict, rng_states: list[dict[str, Any]], trainer_state: dict,
                    train_config: dict) -> Path:
    """Write a checkpoint (rank 0 only): ``model`` gives the config, ``model_state`` the full weights
    (gathered from every rank), ``rng_states`` one RNG state per rank (dropout streams differ by rank)."""
    final = out_dir / NAME
    tmp, old = out_dir / f"{NAME}.tmp", out_dir / f"{NAME}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=model_state, safe_serialization=True)
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, tmp / "optimizer.pt")
    for rank, state in enumerate(rng_states):
        torch.save(state, tmp / rng_file(rank))
    (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "world_size": len(rng_states)}, indent=2))
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


def read_checkpoint(path: Path, rank: int = 0) -> CheckpointContents:
    """Read and check every file of a checkpoint; a missing or unreadable one is a CheckpointError naming it."""
    missing = [name for name in FILES if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        from safetensors.torch import load_file

        model_state = load_file(path / "model.safetensors")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path / 'model.safetensors'} is corrupt: "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    try:
        opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        trainer_state = json.loads((path / "trainer_state.json").read_text())
        # A rank the checkpoint has no RNG state for (it was written by fewer processes) starts
        # from rank 0's; the run is then no longer bit-exact, which only matters with dropout.
        rng_path = path / rng_file(rank) if (path / rng_file(rank)).exists() else path / rng_file(0)
        rng = torch.load(rng_path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    return CheckpointContents(model_state, opt["optimizer"], opt["scheduler"], rng, trainer_state)


def check_model_state(path: Path, model, loaded_keys, missing: list[str], unexpected: list[str]) -> None:
    """Raise unless every parameter was loaded (a tied weight, saved once, is not missing)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in loaded_keys if k in params}
    untied_missing = [k for k in missing if k not in params or id(params[k]) not in loaded]
    if untied_missing or unexpected:
        raise CheckpointError(f"checkpoint {path / 'model.safetensors'} does not match the model: "
                              f"missing {untied_missing[:3]}, unexpected {list(unexpected)[:3]}")
