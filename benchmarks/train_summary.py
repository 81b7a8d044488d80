"""Summarise a short `probformer train` run for benchmarks/gpu_check.sh: tokens/s, model FLOP/s and
MFU after the compile window, peak GPU memory (nvidia-smi samples), losses. Writes JSON, prints lines.

    python benchmarks/train_summary.py RUN_DIR NVSMI_SAMPLES.csv OUT.json --wall-s 123 --status ok
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from devices import device_name, peak_flops

from probformer.models import model_classes
from probformer.sizing.budget import training_flops_per_token


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def peak_memory_mib(samples: Path) -> float | None:
    """Largest memory.used reading (MiB, whole device: CUDA context and allocator reserve included)."""
    if not samples.exists():
        return None
    values = [float(line.split(",")[0]) for line in samples.read_text().splitlines() if line.strip()[:1].isdigit()]
    return max(values) if values else None


def summarise(run_dir: Path, samples: Path, wall_s: float, status: str) -> dict:
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    config = json.loads((run_dir / "train_config.json").read_text()) if (run_dir / "train_config.json").exists() else {}
    out: dict = {"stage": "train", "status": status, "wall_s": wall_s, "run_dir": str(run_dir),
                 "steps_logged": [r["step"] for r in train]}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        out["device"] = device_name(device)
        peak = peak_flops(device, threads=1)
        out["peak_flops"] = vars(peak) if peak else None
    else:
        peak = None
    out["peak_gpu_memory_used_mib"] = peak_memory_mib(samples)
    for key in ("batch_size", "grad_accum", "compile", "activation_checkpointing", "precision", "steps"):
        out[key] = config.get(key)
    out["seq_len"] = config.get("data", {}).get("seq_len")
    out["model"] = config.get("model")
    # The first logged window holds compilation (and the first steps' allocator growth): leave it out.
    steady = [r["tokens_per_second"] for r in train[1:]] or [r["tokens_per_second"] for r in train]
    if steady:
        out["tokens_per_s"] = {"median": statistics.median(steady), "windows": [r["tokens_per_second"] for r in train],
                               "first_window_excluded": len(train) > 1}
    if config.get("model") and out.get("seq_len"):
        model = dict(config["model"])
        arch = model.pop("arch")
        model.setdefault("vocab_size", config.get("data", {}).get("vocab_size", 4096))  # filled from the data
        model_config = model_classes(arch)[0](**model)
        data = config.get("data", {})
        mask_prob = data.get("mask_prob") or (0.30 if data.get("mask_style") == "pt2023" else 0.15)
        flops = training_flops_per_token(arch, model_config, out["seq_len"], mask_prob)
        out["model_flops_per_token"] = flops
        out["parameters"] = next((r["parameters"] for r in records if r["kind"] == "info"), None)
        if steady:
            out["model_tflop_per_s"] = out["tokens_per_s"]["median"] * flops / 1e12
            out["mfu"] = out["model_tflop_per_s"] * 1e12 / peak.flops if peak else None
    if train:
        out["train_loss_last"] = train[-1]["loss"]
    valid = [r for r in records if r["kind"] == "valid"]
    if valid:
        out["valid_loss_last"], out["unigram_loss"] = valid[-1]["loss"], valid[-1].get("unigram_loss")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("samples", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--wall-s", type=float, required=True)
    p.add_argument("--status", required=True)
    args = p.parse_args()
    summary = summarise(args.run_dir, args.samples, args.wall_s, args.status)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    tps, mfu = summary.get("tokens_per_s", {}).get("median"), summary.get("mfu")
    rate = f"{tps:,.0f} tokens/s (median after the first window)" if tps else "no tokens/s logged"
    util = f"{summary['model_tflop_per_s']:.1f} model TFLOP/s, MFU {mfu:.1%}" if mfu is not None else "MFU n/a"
    print(f"train: status {summary['status']}, {summary['wall_s']:.0f}s wall, {rate}, {util}, "
          f"peak GPU memory used {summary['peak_gpu_memory_used_mib'] or 'n/a'} MiB, "
          f"last train loss {summary.get('train_loss_last', 'n/a')}, "
          f"valid loss {summary.get('valid_loss_last', 'n/a')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
