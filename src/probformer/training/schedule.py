"""Learning-rate schedules as factors on each param group's *own* lr (muP per-group factors survive)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_fraction: float, decay: str, min_ratio: float) -> float:
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine / linear decay to ``min_ratio``."""
    warmup = round(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, decay: str,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    # LambdaLR multiplies each group's initial_lr, so a hidden group's 1/m factor is kept.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_fraction, decay, min_ratio)
    )
