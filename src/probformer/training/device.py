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


def cpu_bf16_units() -> str | None:
    """The bf16 matrix units this CPU has, as this torch build detects them (``AMX-BF16``,
    ``AVX512-BF16``), or None. Without them bf16 matmuls are emulated and slower than fp32."""
    detectors = (("AMX-BF16", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in detectors:
        detect = getattr(torch.cpu, probe, None)  # private in torch, hence looked up, not imported
        try:
            if detect is not None and detect():
                return name
        except RuntimeError:  # a build without the CPU feature probe
            continue
    return None


def uses_bf16(precision: str, device: torch.device) -> bool:
    """``precision: auto`` is bf16 autocast where it is fast: CUDA, and a CPU with bf16 units (2.5-3x
    fp32's GEMM rate on AVX512-BF16; docs/results/bf16.md shows it trains the same). ``fp32`` forces fp32."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_bf16_units() is not None)


def describe_precision(precision: str, device: torch.device) -> str:
    """One line for the run's log: what ``precision`` means on ``device`` here, and why."""
    bf16 = uses_bf16(precision, device)
    what = "bf16 autocast (fp32 softmaxes and loss)" if bf16 else "fp32"
    if precision != "auto":
        return f"precision: {what} (precision={precision})"
    if device.type == "cpu":
        units = cpu_bf16_units()
        why = f"this CPU has {units} units" if units else "this CPU has no bf16 units (AVX512-BF16 or AMX)"
        return f"precision: {what} (auto: {why}; precision=fp32 forces fp32)"
    return f"precision: {what} (auto on {device.type})"


def autocast_for(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """bf16 autocast (matmuls in bf16; the models keep softmaxes and the loss in fp32) or nothing."""
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
