"""The device a benchmark runs on: its name, precision, synchronisation and peak FLOP/s (for MFU).

MFU = achieved model FLOP/s / the device's peak. On a GPU the peak is the datasheet's dense
(no 2:4 sparsity) bf16 tensor-core rate, since the benchmark runs under bf16 autocast. A CPU has no
datasheet figure we can look up, so its peak is an *estimate* of fp32 FMA throughput (the CPU
benchmark runs in fp32): threads used x clock x fp32 FLOP per cycle per core, the last from the
vector extensions /proc/cpuinfo lists (AVX-512: 2 FMA units x 16 lanes x 2; AVX2 + FMA: 2 x 8 x 2;
...). The clock is the nominal one /proc/cpuinfo reports; turbo and virtualisation shift it, so
CPU MFU is a rough figure and is labelled as an estimate everywhere.
"""

from __future__ import annotations

import contextlib
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class PeakFlops:
    flops: float  # FLOP/s
    basis: str  # what the number is, e.g. "datasheet dense bf16 (NVIDIA H100 SXM)" or "estimated fp32 ..."
    estimated: bool  # True for a CPU estimate


# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparse figures halved where a datasheet
# only prints those). Matched in order against the lower-cased torch.cuda device name, first hit wins.
GPU_PEAK_BF16: tuple[tuple[str, str, float], ...] = (
    (r"h100.*nvl", "H100 NVL", 835e12),
    (r"h100.*pcie", "H100 PCIe", 756e12),
    (r"h100|h800", "H100 SXM", 989e12),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"gh200|h200", "H200 / GH200", 989e12),
    (r"b200", "B200", 2250e12),
    (r"a100|a800", "A100", 312e12),
    (r"l40s", "L40S", 362e12),
    (r"l40\b", "L40", 181e12),
    (r"\bl4\b", "L4", 121e12),
    (r"a10g", "A10G (taken as the A10 datasheet; AWS publishes none)", 125e12),
    (r"\ba10\b", "A10", 125e12),
    (r"a6000", "RTX A6000", 155e12),
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    return torch.device(name)


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if info:
                    break
                continue
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def cpu_fp32_flops_per_cycle(flags: set[str]) -> int:
    """fp32 FLOP per cycle per core from the ISA flags, assuming two FMA pipes (Zen 2+, Skylake-SP+)."""
    if "avx512f" in flags:
        return 2 * 16 * 2
    if "avx2" in flags and "fma" in flags:
        return 2 * 8 * 2
    if "avx" in flags:
        return 2 * 8  # separate add and mul pipes, no FMA
    return 2 * 4  # SSE


def peak_flops(device: torch.device, threads: int, override: float | None = None) -> PeakFlops | None:
    """The MFU denominator, or None where it is unknown (an unlisted GPU without ``override``)."""
    if override:
        return PeakFlops(override, "given with --peak-flops", estimated=False)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for pattern, label, flops in GPU_PEAK_BF16:
            if re.search(pattern, name):
                return PeakFlops(flops, f"datasheet dense bf16 tensor-core peak ({label})", estimated=False)
        return None
    info = _cpuinfo()
    try:
        ghz = float(info["cpu MHz"]) / 1e3
    except (KeyError, ValueError):
        return None
    per_cycle = cpu_fp32_flops_per_cycle(set(info.get("flags", "").split()))
    return PeakFlops(threads * ghz * 1e9 * per_cycle,
                     f"estimated fp32 peak: {threads} threads x {ghz:.2f} GHz (nominal) x {per_cycle} FLOP/cycle",
                     estimated=True)


def autocast_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext  # fp32 on CPU, as the trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
