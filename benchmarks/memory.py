"""Peak memory of building a model and its warmup steps, above the level just before the build.

CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes at start (tensor bytes, so
independent of what ran before; the caching allocator's reserve is reported beside it). CPU: the
kernel's peak RSS (VmHWM, reset at start through /proc/self/clear_refs) minus the RSS at start,
after freed memory was trimmed back to the OS. The benchmark measures CPU memory in a fresh process
per model (``--memory subprocess``), because inside one process RSS depends on what the allocator
did for earlier models (it came out up to ~25% off). ``getrusage``'s ru_maxrss is no use: it cannot
be reset, and a child process inherits its parent's value across fork + exec.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from devices import sync
from procfs import reset_peak_rss


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Hand memory freed by earlier models back to the OS, so RSS is live memory (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Peak memory of what happens between ``start()`` and ``stop()``, above the level at ``start()``.
    Other models already built stay resident but idle, so they only shift the baseline."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base: int | None = None
        self.reset = False

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            sync(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        self.base = _proc_status_bytes("VmRSS")
        self.reset = reset_peak_rss()

    def stop(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            return {"kind": "cuda_max_allocated",
                    "peak_mb": (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20,
                    "max_reserved_total_mb": torch.cuda.max_memory_reserved(self.device) / 2**20}
        hwm = _proc_status_bytes("VmHWM")
        if self.base is None or hwm is None:
            return {"kind": "unavailable"}
        return {"kind": "rss_peak_above_start" if self.reset else "rss_peak_above_start_upper_bound",
                "peak_mb": (hwm - self.base) / 2**20, "rss_at_start_mb": self.base / 2**20,
                "process_peak_rss_mb": hwm / 2**20}


def memory_cell(mem: dict | None) -> str:
    if not mem or "peak_mb" not in mem:
        return "n/a" if not mem or mem.get("kind") != "not_measured" else "–"
    return f"{'≤' if mem['kind'].endswith('upper_bound') else ''}{mem['peak_mb']:.0f} MiB"
