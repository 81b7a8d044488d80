"""``probformer size``: a model at a parameter budget or from a preset: parameters, FLOPs per token,
activation memory and the micro-batch that fits a device."""

from __future__ import annotations

import argparse
import json as json_module
from collections.abc import Sequence

from probformer.cli.arguments import count, memory
from probformer.cli.command import Command
from probformer.config import ConfigError, load_config, model_config_class, model_fields, parse_model_overrides
from probformer.models import ARCHITECTURES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=tuple(ARCHITECTURES), help="architecture (default: the preset's, else pt)")
    p.add_argument("--params", type=count, help="budget, e.g. 10M, 400k, 0.4B (total incl. embeddings)")
    p.add_argument("--preset", help="report a training preset's model (with --params: the search starts from it)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (default: the preset's, else 4096)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's, else 128)")
    p.add_argument("--width-multiple", type=int, default=1, help="search only widths that are multiples of it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="fixed model fields and the base shape, e.g. --set model.num_iterations=5")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device the memory is estimated for")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="bf16 = bf16 autocast (default: the preset's, else auto = bf16 on cuda and on a cpu "
                        "with bf16 units, as this one is checked)")
    p.add_argument("--mask-prob", type=float, help="fraction of tokens scored (default: the preset's, else 0.15)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: the preset's)")
    p.add_argument("--device-memory", type=memory, metavar="SIZE",
                   help="also the largest micro-batch that fits, e.g. 80GB (10^9 B) or 24GiB (2^30 B)")
    p.add_argument("--memory-margin", type=float, default=0.10, help="fraction of the device memory kept free")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(arch: str | None = None, params: int | None = None, preset: str | None = None, vocab_size: int | None = None,
        seq_len: int | None = None, width_multiple: int = 1, overrides: Sequence[str] = (), device: str = "cuda",
        precision: str | None = None, mask_prob: float | None = None, batch_size: int | None = None,
        device_memory: int | None = None, memory_margin: float = 0.10, json: bool = False) -> int:
    from probformer.sizing.activation_memory import Precision
    from probformer.sizing.budget import config_for_budget
    from probformer.sizing.report import build_report, render

    if params is None and preset is None:
        raise ConfigError("size: give --params (a budget, e.g. 10M) or --preset (a training preset)")
    train = load_config(preset=preset) if preset else None
    if train and arch not in (None, train.model["arch"]):
        raise ConfigError(f"size: --arch {arch} but preset {preset} is arch {train.model['arch']!r}")
    for flag, value in (("--batch-size", batch_size), ("--vocab-size", vocab_size), ("--seq-len", seq_len),
                        ("--width-multiple", width_multiple)):
        if value is not None and value < 1:
            raise ConfigError(f"size: {flag} must be >= 1, got {value}")
    if mask_prob is not None and not 0 < mask_prob <= 1:
        raise ConfigError(f"size: --mask-prob must be in (0, 1], got {mask_prob}")
    if not 0 <= memory_margin < 1:
        raise ConfigError(f"size: --memory-margin must be in [0, 1), got {memory_margin}")
    arch = train.model["arch"] if train else arch or "pt"
    fields = model_fields(arch)
    preset_model = {k: v for k, v in train.model.items() if k != "arch"} if train else {}
    base = {**preset_model, **parse_model_overrides(arch, list(overrides))}
    if vocab_size is None:
        vocab_size = train.data.vocab_size if train else 4096
    if seq_len is None:
        seq_len = train.data.seq_len if train else 128
    precision = precision or (train.precision if train else "auto")
    if precision == "auto":  # the trainer's rule (training/device.py); for cpu: this machine's bf16 units
        import torch

        from probformer.training.device import uses_bf16

        precision = "bf16" if uses_bf16("auto", torch.device(device)) else "fp32"
    mask_prob = mask_prob if mask_prob is not None else (train.data.resolved_mask_prob if train else 0.15)
    try:
        if params is not None:
            config = config_for_budget(arch, params, vocab_size=vocab_size, base=base, width_multiple=width_multiple)
            source = f"{arch} at a budget of {params:,} parameters"
        else:
            config = model_config_class(arch)(**base, vocab_size=vocab_size)
            source = f"{arch}, preset {preset}"
        report = build_report(
            arch, config, seq_len=seq_len, precision=Precision(precision, device), mask_fraction=mask_prob,
            batch_size=batch_size or (train.batch_size if train else None), device_bytes=device_memory,
            margin=memory_margin, budget=params, source=source, fields=tuple(sorted(fields)),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(json_module.dumps(report, indent=2) if json else render(report))
    return 0


SIZE = Command("size", "parameters, FLOPs/token and memory of a model at a budget or a preset", add_arguments, run,
               description="A model at a parameter budget (+-2%) or from a preset: parameters, FLOPs per token, "
                           "activation memory, the micro-batch that fits a device.")
