"""A run directory: one train at a time, and never a new run mixed into an old one.

- :func:`run_dir_lock`: a lock file in the directory, held for the run's whole life (data/cache.py's
  ``flock``; the kernel releases it when the process dies). A second ``probformer train`` into the same
  directory is refused at once, naming the holder.
- :func:`open_run_dir`: what a train may do with what is already there. Without ``resume`` the
  directory must be empty (or missing): a run's files are never overwritten by accident; ``overwrite``
  clears them first, so that nothing of the old run (its summary, model, snapshots) is left mixed in.
  With ``resume``, the checkpoint to continue (the trainer then checks the config against it); a
  directory without one starts from scratch, its partial run's files cleared.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from probformer.config import ConfigError
from probformer.data.cache import LockHeld, locked, make_directory
from probformer.training.checkpoint import find_checkpoint

LOCK_FILE = ".train.lock"
# A directory holding one of these is a run directory: --overwrite may clear it, and nothing else.
RUN_MARKERS = ("train_config.json", "metrics.jsonl", "summary.json", "checkpoint", "checkpoint.old")


def usable_out_dir(out_dir: Path) -> Path:
    """``out_dir``, made if missing; a ConfigError if it (or a parent) is a file."""
    return make_directory(out_dir, "out_dir", "give --out-dir a directory", ConfigError)


@contextmanager
def run_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the block, or raise a ConfigError at once if another process holds it."""
    usable_out_dir(out_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(out_dir / LOCK_FILE, blocking=False,
                                       holder=f"pid {os.getpid()} on {socket.gethostname()}"))
        except LockHeld as err:
            raise ConfigError(f"{out_dir} is in use by another probformer train ({err.holder or 'unknown process'}); "
                              "wait for it to finish, or train into another --out-dir") from None
        yield


def contents(out_dir: Path) -> list[str]:
    """What ``out_dir`` holds, by name (its lock file aside)."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE)


def describe(out_dir: Path, names: list[str]) -> str:
    """What a non-empty ``out_dir`` holds, in a few words ("a completed run (step 60)", "a run with a checkpoint")."""
    summary = out_dir / "summary.json"
    if summary.is_file():
        try:
            record = json.loads(summary.read_text())
            return f"a {record.get('status', 'finished')} run (step {record.get('step', '?')})"
        except ValueError:
            pass
    if find_checkpoint(out_dir) is not None:
        return "an unfinished run with a checkpoint"
    if any(name in RUN_MARKERS for name in names):
        return "an unfinished run without a checkpoint"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"files of its own ({shown})"


def clear_run_dir(out_dir: Path) -> None:
    """Remove everything in the run directory ``out_dir`` but its lock; a ConfigError if it is not one."""
    names = contents(out_dir)
    if not any(name in RUN_MARKERS for name in names):
        raise ConfigError(f"{out_dir} is not a run directory (it holds {describe(out_dir, names)}, and none of "
                          f"{', '.join(RUN_MARKERS)}); it is not cleared: train into another --out-dir")
    for name in names:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def open_run_dir(out_dir: Path, *, resume: bool, overwrite: bool, log: Callable[[str], None]) -> Path | None:
    """Make ``out_dir`` ready for a train (hold its lock first); return the checkpoint to resume, or
    None to start from scratch. A ConfigError names the choices when it holds a run we may not touch."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in out_dir and --overwrite replaces it: give one of them")
    usable_out_dir(out_dir)
    names = contents(out_dir)
    if resume:
        checkpoint = find_checkpoint(out_dir)
        if checkpoint is None:
            log(f"no checkpoint in {out_dir}: starting from scratch")
            if names:
                clear_run_dir(out_dir)
        return checkpoint
    if names and not overwrite:
        raise ConfigError(f"{out_dir} already holds {describe(out_dir, names)}; continue it with --resume, train "
                          "into another --out-dir, or replace it with --overwrite")
    if names:
        log(f"--overwrite: clearing {out_dir} ({describe(out_dir, names)})")
        clear_run_dir(out_dir)
    return None
