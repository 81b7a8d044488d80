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

FINISHED = ("completed", "diverged")
# What must match for an existing run directory to count as this run (not cache paths, logging, device).
IDENTITY_KEYS = ("model", "optim", "data", "seed", "batch_size", "grad_accum", "token_budget", "eval_batches",
                 "unigram_bias_init")


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    ident = {k: config.get(k) for k in IDENTITY_KEYS}
    ident["data"] = {k: v for k, v in (ident["data"] or {}).items() if k != "cache_dir"}
    return json.loads(json.dumps(ident))


def check_run_dir(config: TrainConfig) -> None:
    """Refuse to reuse a run directory that was trained with another configuration."""
    stored = Path(config.out_dir) / "train_config.json"
    if not stored.exists():
        return
    old, new = _identity(json.loads(stored.read_text())), _identity(config.to_dict())
    if old != new:
        diff = [k for k in IDENTITY_KEYS if old[k] != new[k]]
        raise ConfigError(f"{config.out_dir} holds a run with a different {', '.join(diff)} than this spec asks "
                          f"for; use another out_dir or delete that run directory")


def train_or_reuse(config: TrainConfig, train_fn: Callable[..., dict[str, Any]], log=print,
                   info_name: str = "run_info.json") -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, info) of the run in ``config.out_dir``: read back if finished, else trained (resumed from
    its checkpoint if it has one). ``info`` holds the wall time of the training call and whether it resumed."""
    from probformer.training.checkpoint import find_checkpoint

    run_dir = Path(config.out_dir)
    check_run_dir(config)
    summary_path, info_path = run_dir / "summary.json", run_dir / info_name
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is None or summary.get("status") not in FINISHED:
        resume = find_checkpoint(run_dir) is not None
        start = time.perf_counter()
        summary = train_fn(config, resume=resume, log=log)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not summary_path.exists():  # the trainer writes it; keep the record for any train_fn
            summary_path.write_text(json.dumps(summary, indent=2, default=str))
        info_path.write_text(json.dumps({"wall_s": time.perf_counter() - start, "resumed": resume}))
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return summary, info
