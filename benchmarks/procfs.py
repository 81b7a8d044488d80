"""Linux /proc helpers the benchmarks share, with no heavy imports (data_prep.py's method processes
must not pay for torch)."""

from __future__ import annotations


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS (Linux >= 4.0: ``clear_refs`` 5);
    False where the kernel does not allow it (the peak then counts from the process's start)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False
