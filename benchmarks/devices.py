"""The device a benchmark runs on: its name, synchronisation and peak FLOP/s per precision (for MFU).

MFU = achieved model FLOP/s / the device's peak in the precision the model ran in. On a GPU the
bf16 peak is the datasheet's dense (no 2:4 sparsity) bf16 tensor-core rate; no fp32 peak is
tabulated (MFU of fp32 runs on a GPU is left out). A CPU has no datasheet figure we can look up, so
its peaks are *estimates*: threads used x clock x FLOP per cycle per core, from the vector
extensions /proc/cpuinfo lists. fp32: FMA throughput (AVX-512: 2 FMA units x 16 lanes x 2; AVX2 +
FMA: 2 x 8 x 2; ...; AMD Zen 4 runs AVX-512 on 256-bit datapaths, so 2 x 8 x 2 there). bf16:
AVX512-BF16's dot product (VDPBF16PS: every fp32 lane accumulates a pair of bf16 products) runs at
2x the fp32 FMA rate; AMX-BF16 at 1024 FLOP per cycle (Intel's figure); a CPU without bf16 units
emulates bf16 matmuls, so its "bf16 peak" is the fp32 estimate. The clock is the nominal one
/proc/cpuinfo reports; turbo and virtualisation shift it, so CPU MFU is a rough figure and is
labelled as an estimate everywhere.
"""

from __future__ import annotations

import platform
import re
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


def _half_width_avx512(info: dict[str, str]) -> bool:
    """AMD family 25 (Zen 3 / Zen 4) with AVX-512 is Zen 4: 512-bit ops run as two 256-bit halves."""
    return info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"


def cpu_fp32_flops_per_cycle(flags: set[str], half_width_avx512: bool = False) -> int:
    """fp32 FLOP per cycle per core from the ISA flags, assuming two FMA pipes (Zen 2+, Skylake-SP+)."""
    if "avx512f" in flags:
        return 2 * 8 * 2 if half_width_avx512 else 2 * 16 * 2
    if "avx2" in flags and "fma" in flags:
        return 2 * 8 * 2
    if "avx" in flags:
        return 2 * 8  # separate add and mul pipes, no FMA
    return 2 * 4  # SSE


def cpu_bf16_flops_per_cycle(flags: set[str], half_width_avx512: bool = False) -> tuple[int, str] | None:
    """bf16 matmul FLOP per cycle per core of the CPU's bf16 units and what they are, or None (none)."""
    if "amx_bf16" in flags:
        return 1024, "AMX-BF16 tiles"  # Intel: 1024 bf16 FLOP / cycle / core (Sapphire Rapids)
    if "avx512_bf16" in flags:
        return 2 * cpu_fp32_flops_per_cycle(flags, half_width_avx512), "AVX512-BF16 dot products, 2x fp32 FMA"
    return None


def peak_flops(device: torch.device, threads: int, override: float | None = None,
               precision: str | None = None) -> PeakFlops | None:
    """The MFU denominator for ``precision`` (``fp32`` / ``bf16``; default: the device's usual one,
    bf16 on CUDA, fp32 on CPU), or None where it is unknown (an unlisted GPU without ``override``,
    fp32 on a GPU)."""
    if override:
        return PeakFlops(override, "given with --peak-flops", estimated=False)
    if device.type == "cuda":
        if precision == "fp32":
            return None
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
    flags, half = set(info.get("flags", "").split()), _half_width_avx512(info)
    per_cycle, what = cpu_fp32_flops_per_cycle(flags, half), "fp32"
    if half and "avx512f" in flags:
        what += " (AVX-512 on 256-bit datapaths, AMD Zen 4)"
    if precision == "bf16":
        bf16 = cpu_bf16_flops_per_cycle(flags, half)
        if bf16:
            per_cycle, what = bf16[0], f"bf16 ({bf16[1]})"
        else:
            what += " (no bf16 units: bf16 matmuls are emulated)"
    return PeakFlops(threads * ghz * 1e9 * per_cycle,
                     f"estimated {what} peak: {threads} threads x {ghz:.2f} GHz (nominal) x {per_cycle} FLOP/cycle",
                     estimated=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
