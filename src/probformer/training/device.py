"""Which device a process trains on, and in which precision."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from probformer.config import ConfigError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto``: this process's GPU (``cuda:LOCAL_RANK`` under torchrun) when there is one, else CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank or 0)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} asked for, but CUDA is not available here (torch "
                              f"{torch.__version__}); use device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {name!r} asked for, but MPS is not available here; use device=cpu or auto")
    return device


def uses_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """bf16 autocast (matmuls in bf16; the models keep softmaxes and the loss in fp32) or nothing."""
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
