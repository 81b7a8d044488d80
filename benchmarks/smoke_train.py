"""One optimizer step (more with --set steps=K) of a preset through `probformer train` on this machine,
recorded as JSON: the model builds, trains and evaluates to a finite loss; how long that takes and the
process's peak memory. Issue 10 asks for this of the 0.4B PT preset on the project's 2-core, 24 GB CPU
machine:

    .venv/bin/python benchmarks/smoke_train.py --preset ladder-pt-400m     # ~3 min, ~7.8 GiB on 2 cores

The default overrides make it one AdamW step of one 64-token sequence on the CPU with activation
checkpointing and a one-batch evaluation (the preset's shape, vocabulary and parametrization are kept;
its token budget, gradient accumulation and checkpoints are not). Later ``--set`` win. The corpus is
tokenised into the cache first and timed apart, so ``train_s`` is the model's own time.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from devices import device_name, resolve_device, slug
from memory import _proc_status_bytes

from probformer.config import ConfigError, load_config

SMOKE_OVERRIDES = (
    "data.seq_len=64", "batch_size=1", "grad_accum=1", "token_budget=null", "steps=1",
    "activation_checkpointing=true", "eval_batches=1", "test_eval=false", "checkpoint_interval=0",
    "progress=false", "tensorboard=false",
)


def smoke(preset: str, overrides: list[str], device: torch.device, out_dir: Path) -> dict:
    from probformer.training.trainer import corpus_for, train

    config = load_config(preset=preset, overrides=[
        *SMOKE_OVERRIDES, f"device={device.type}", f"out_dir={out_dir}", *overrides])
    start = time.perf_counter()
    corpus_for(config, print)
    data_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = train(config, log=print)
    train_s = time.perf_counter() - start
    loss = float(summary.get("valid_loss", math.nan))
    rss = _proc_status_bytes("VmHWM")  # the process's peak resident set: weights, AdamW state, activations
    return {
        "preset": preset, "device": device_name(device), "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(), "overrides": [*SMOKE_OVERRIDES, *overrides],
        "model": config.model, "seq_len": config.data.seq_len, "batch_size": config.batch_size,
        "parameters": summary.get("parameters"), "steps": summary.get("step"), "status": summary.get("status"),
        "valid_loss": loss, "valid_unigram_loss": summary.get("valid_unigram_loss"),
        "data_s": data_s, "train_s": train_s, "peak_rss_gib": rss / 2**30 if rss else None,
        "ok": summary.get("status") == "completed" and math.isfinite(loss),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ladder-pt-400m")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override after the smoke defaults (repeatable), e.g. --set steps=2")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/smoke-<preset>-<device>.json)")
    args = p.parse_args()
    device = resolve_device(args.device)
    out = args.out or Path(__file__).parent / "results" / f"smoke-{args.preset}-{slug(device_name(device))}.json"
    try:
        with tempfile.TemporaryDirectory(prefix="probformer-smoke-") as run_dir:
            result = smoke(args.preset, args.overrides, device, Path(run_dir))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rss = f"{result['peak_rss_gib']:.1f} GiB" if result["peak_rss_gib"] else "unknown"
    print(f"{args.preset} on {result['device']}: {result['parameters']:,} parameters, {result['steps']} step(s), "
          f"valid loss {result['valid_loss']:.3f}, train {result['train_s']:.0f} s (data {result['data_s']:.0f} s), "
          f"peak RSS {rss} -> {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
