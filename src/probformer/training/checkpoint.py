"""Resumable checkpoints, written atomically and read without running anything they hold.

A checkpoint directory holds the model (``model.safetensors`` + ``config.json``, loadable with
``from_pretrained``; full weights however the run was sharded), ``optimizer.pt`` (optimizer +
scheduler state), ``rng.pt`` (torch, CUDA, numpy and Python RNG states as plain tensors and numbers;
``rng-rankR.pt`` for the other processes of a distributed run), ``trainer_state.json`` (step, data
position, the open training-loss window, last metrics, the tokenizer's sha256), ``train_config.json``
and ``tokenizer.json`` (the tokenizer the run trains with, so that resuming never depends on the
corpus cache). It is written to ``checkpoint.tmp`` and swapped in by rename, so a run killed mid-write
leaves the previous checkpoint intact.

The ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
containers only. Unpickling anything else can run code the file holds, so a file that needs more is
refused (:class:`CheckpointError`), never loaded. ``rng.pt`` of older versions held numpy arrays; they
are read with numpy's array constructor allowed, which builds arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAME = "checkpoint"
FILES = ("model.safetensors", "config.json", "optimizer.pt", "rng.pt", "trainer_state.json", "train_config.json")
TOKENIZER_FILE = "tokenizer.json"  # in every checkpoint this version writes; older ones lack it
RNG_FORMAT = 2  # 2: plain tensors and numbers; older files (no "format") held numpy arrays


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message names the file."""


def _legacy_rng_globals() -> list:
    """What unpickling an older rng.pt needs beyond tensors: numpy's uint32 state array. These build an
    array from its bytes and dtype, nothing else (torch's documented allowlist for numpy arrays)."""
    from numpy._core.multiarray import _reconstruct

    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            np.dtypes.UInt32DType]


def load_tensors(file: Path, allowed: Sequence = ()) -> Any:
    """``file`` (a torch.save'd .pt) as tensors, numbers, strings and containers (``weights_only=True``,
    plus ``allowed`` globals); anything else, or a damaged file, is a CheckpointError naming it."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint file {file} holds objects other than tensors and numbers; it is not "
                              "loaded, since unpickling them could run code (the file is damaged, or was not "
                              "written by probformer)") from None
    except Exception as err:  # torch's own message advises turning weights_only off: not advice to pass on
        raise CheckpointError(f"checkpoint file {file} is corrupt ({type(err).__name__}: not a torch file "
                              "probformer wrote, or cut short)") from None


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (what ``weights_only=True`` loads)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state = {"format": RNG_FORMAT, "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("format") == RNG_FORMAT:
        n, p = state["numpy"], state["python"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
    else:  # an older checkpoint's: numpy's and Python's own state tuples
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


def _step_of(checkpoint: Path) -> str:
    try:
        return str(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return "?"


def save_checkpoint(out_dir: Path, model, model_state: dict[str, torch.Tensor], optimizer_state: dict,
                    scheduler_state: dict, rng_states: list[dict[str, Any]], trainer_state: dict,
                    train_config: dict, tokenizer_json: bytes) -> Path:
    """Write a checkpoint (rank 0 only): ``model`` gives the config, ``model_state`` the full weights
    (gathered from every rank), ``rng_states`` one RNG state per rank (dropout streams differ by rank).

    A write that fails (a full disk) removes its partial copy and raises a CheckpointError that says
    so; the previous checkpoint is untouched until the new one is complete."""
    final = out_dir / NAME
    tmp, old = out_dir / f"{NAME}.tmp", out_dir / f"{NAME}.old"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=model_state, safe_serialization=True)
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, tmp / "optimizer.pt")
        for rank, state in enumerate(rng_states):
            torch.save(state, tmp / rng_file(rank))
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "world_size": len(rng_states)}, indent=2))
        (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2))
        (tmp / TOKENIZER_FILE).write_bytes(tokenizer_json)
        for name in (*FILES, TOKENIZER_FILE):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = (f"the previous checkpoint {final} (step {_step_of(final)}) is intact" if final.is_dir()
                else "there is no earlier checkpoint")
        raise CheckpointError(f"could not write the checkpoint of step {trainer_state.get('step')} to {tmp}: "
                              f"{err.strerror or err}; {kept}; make room and continue with --resume") from None
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


def read_json(file: Path) -> dict:
    """A checkpoint's JSON file (trainer_state.json, train_config.json), or a CheckpointError naming it."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {file.parent} is incomplete: missing {file.name}") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {file} is corrupt ({type(err).__name__})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint file {file} is corrupt (not a JSON object)")
    return value


def read_tokenizer(path: Path) -> bytes | None:
    """The tokenizer.json the checkpoint's run trains with, checked against the sha256 its
    trainer_state.json records; None for a checkpoint of an older version (it holds no copy)."""
    file = path / TOKENIZER_FILE
    if not file.exists():
        return None
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != read_json(path / "trainer_state.json").get("tokenizer_sha256"):
        raise CheckpointError(f"checkpoint file {file} does not match the tokenizer sha256 its trainer_state.json "
                              "records: the checkpoint is damaged")
    return data


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
    opt = load_tensors(path / "optimizer.pt")
    if not isinstance(opt, dict) or not {"optimizer", "scheduler"} <= opt.keys():
        raise CheckpointError(f"checkpoint file {path / 'optimizer.pt'} is corrupt (no optimizer and scheduler state)")
    trainer_state = read_json(path / "trainer_state.json")
    # A rank the checkpoint has no RNG state for (it was written by fewer processes) starts
    # from rank 0's; the run is then no longer bit-exact, which only matters with dropout.
    rng_path = path / rng_file(rank) if (path / rng_file(rank)).exists() else path / rng_file(0)
    rng = load_tensors(rng_path, _legacy_rng_globals())
    if not isinstance(rng, dict) or not {"torch", "numpy", "python"} <= rng.keys():
        raise CheckpointError(f"checkpoint file {rng_path} is corrupt (no torch, numpy and Python RNG states)")
    return CheckpointContents(model_state, opt["optimizer"], opt["scheduler"], rng, trainer_state)


def check_model_state(path: Path, model, loaded_keys, missing: list[str], unexpected: list[str]) -> None:
    """Raise unless every parameter was loaded (a tied weight, saved once, is not missing)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in loaded_keys if k in params}
    untied_missing = [k for k in missing if k not in params or id(params[k]) not in loaded]
    if untied_missing or unexpected:
        raise CheckpointError(f"checkpoint {path / 'model.safetensors'} does not match the model: "
                              f"missing {untied_missing[:3]}, unexpected {list(unexpected)[:3]}")
