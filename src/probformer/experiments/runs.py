"""Train a config into its ``out_dir`` once: a finished run is read back, an interrupted one resumed.

Shared by the experiment commands (``compare``, ``transfer``) whose plans are lists of runs: rerunning
the command redoes nothing that finished and continues what was cut off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probformer.config import ConfigError, TrainConfig
from probformer.training.config_changes import changed_keys, flatten, ignored, with_defaults
from probformer.training.metrics_log import info_record

FINISHED = ("completed", "diverged")
# Every TrainConfig field is in exactly one of these two (tests/test_experiments_runs.py checks it, so a new
# field must be placed): the one definition of what makes a run's result this result, read when an
# experiment reuses a run directory (check_run_dir), when lr-curves reuses a reference's rows or lr-depth
# lines up its T's (lr_curves.result_settings), and when transfer names the overrides its report rests on.
# (eval_interval is one: a task run keeps the best of its evaluations, and an evaluation is where the
# validation divergence rule looks; `steps` counts only where token_budget or task.epochs do not
# override it, see :func:`unused_keys`.)
RESULT_KEYS = ("model", "task", "data", "optim", "seed", "batch_size", "grad_accum", "steps", "token_budget",
               "eval_interval", "eval_batches", "unigram_bias_init", "precision")
# Where a run is written, how it is watched, and how it is run: the same weights and final scores either
# way. (The device, compile and activation checkpointing move the last bits of a float, not what the run
# computes; log and checkpoint intervals only add points where a training-loss divergence can be caught
# before the next evaluation; data's cache_dir, within `data`, is config_changes.IGNORED; eval_texts adds
# scores of extra texts, named by paths that differ between machines, and changes no trained weight.)
NON_RESULT_KEYS = ("out_dir", "eval_texts", "checkpoint_interval", "snapshot_interval", "log_interval", "device",
                   "distributed", "compile", "activation_checkpointing", "threads", "progress", "tensorboard",
                   "test_eval")
# What must match for an existing run directory to count as this run: stricter than what a resume allows
# (training/config_changes.py), since a result must come from one configuration throughout. Precision is
# left to check_run_dir's own test, which judges it as trained rather than as written.
IDENTITY_KEYS = tuple(k for k in RESULT_KEYS if k != "precision")


def unused_keys(train: dict[str, Any]) -> set[str]:
    """Result keys that a train section (or ``TrainConfig.to_dict()``) sets but training does not read:
    ``steps`` when ``token_budget`` or ``task.epochs`` decides the length instead (config.py)."""
    overridden = train.get("token_budget") is not None or (train.get("task") or {}).get("epochs") is not None
    return {"steps"} if overridden else set()


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What of a ``TrainConfig.to_dict()`` must match for a run directory to hold this run: the
    :data:`IDENTITY_KEYS`, as the dotted keys training/config_changes.py compares (a model or data
    field added since a run was written, absent from its train_config.json, counts as its default)."""
    unused = unused_keys(config)
    return {k: v for k, v in flatten(with_defaults(config)).items()
            if k.split(".")[0] in IDENTITY_KEYS and k not in unused and not ignored(k) and v is not None}


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to reuse a run directory that was trained with another configuration."""
    stored = Path(config.out_dir) / "train_config.json"
    if not stored.exists():
        return
    old, new = json.loads(stored.read_text()), config.to_dict()
    changed = set(changed_keys(old, new)) - (unused_keys(old) & unused_keys(new))
    diff = [k for k in IDENTITY_KEYS if any(c.split(".")[0] == k for c in changed)]
    if diff:
        raise ConfigError(f"{config.out_dir} holds a run with a different {', '.join(diff)} than this spec asks "
                          f"for; use another out_dir or delete that run directory")
    # Precision is judged as trained, not as written: `precision: auto` is bf16 on one machine and fp32 on
    # another, and one table must never mix the two (docs/results/bf16.md).
    recorded = recorded_bf16(Path(config.out_dir))
    if recorded is not None:
        from probformer.training.device import resolve_device, uses_bf16

        wanted = uses_bf16(config.precision, resolve_device(config.device))
        if recorded != wanted:
            trained, asked = ("bf16", "fp32") if recorded else ("fp32", "bf16")
            raise ConfigError(f"{config.out_dir} holds a run trained in {trained}, but precision={config.precision} "
                              f"means {asked} here; set precision={trained} to reuse it, or use another out_dir")


def recorded_bf16(run_dir: Path) -> bool | None:
    """Whether the run in ``run_dir`` trained in bf16 autocast (its metrics' info record), or None when
    nothing says (no run there yet, or a record from before runs logged it)."""
    path = run_dir / "metrics.jsonl"
    info = info_record(path) if path.is_file() else None
    return bool(info["bf16"]) if info is not None and "bf16" in info else None


def resume_arguments(run_dir: Path) -> dict[str, bool]:
    """How to train into an experiment's ``run_dir``: resume its checkpoint if it has one; else start
    over, clearing what a run killed before its first checkpoint left (``overwrite``)."""
    from probformer.training.checkpoint import find_checkpoint
    from probformer.training.rundir import contents

    if find_checkpoint(run_dir) is not None:
        return {"resume": True}
    return {"resume": False, **({"overwrite": True} if contents(run_dir) else {})}


def train_or_reuse(config: TrainConfig, train_fn: Callable[..., dict[str, Any]], log=print,
                   info_name: str = "run_info.json") -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, info) of the run in ``config.out_dir``: read back if finished, else trained (resumed from
    its checkpoint if it has one). ``info`` holds the wall time of the training call and whether it resumed."""
    run_dir = Path(config.out_dir)
    check_run_dir(config)
    summary_path, info_path = run_dir / "summary.json", run_dir / info_name
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is None or summary.get("status") not in FINISHED:
        how = resume_arguments(run_dir)
        start = time.perf_counter()
        summary = train_fn(config, **how, log=log)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not summary_path.exists():  # the trainer writes it; keep the record for any train_fn
            summary_path.write_text(json.dumps(summary, indent=2, default=str))
        info_path.write_text(json.dumps({"wall_s": time.perf_counter() - start, "resumed": how["resume"]}))
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return summary, info
