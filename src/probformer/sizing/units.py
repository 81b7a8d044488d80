"""Counts and sizes as people write them: ``10M`` parameters, ``24GiB`` of memory, ``1.5M`` in a label.

One parser and one formatter per unit, shared by the CLI (``probformer size --params 10M``), the
experiment specs (``budgets: [1M, 4M]``) and the reports, so that ``4M`` means the same everywhere.
Parsers raise :class:`ValueError` with the expected form; callers turn it into their own error type.
"""

from __future__ import annotations

import re
from typing import Any

_COUNT_SCALES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}
_MEMORY_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
                 "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_MEMORY = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)


def parse_count(value: Any) -> int:
    """``'10M'``, ``'1.5m'``, ``'400k'``, ``'0.4B'``, ``123456`` or ``1e6`` -> an integer >= 1."""
    text = str(value).strip()
    scale = _COUNT_SCALES.get(text[-1:].lower(), 1.0)
    try:
        number = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or not number >= 1:
        raise ValueError(f"expected a positive count like 4M, 400k or 1000000, got {value!r}")
    return round(number)


def count_label(n: int) -> str:
    """1000000 -> '1M', 1500000 -> '1.5M', 40000 -> '40k'; exact, else the plain integer."""
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        text = f"{n / scale:g}"
        if n >= scale and "e" not in text and round(float(text) * scale) == n:
            return text + suffix
    return str(n)


def parse_memory(text: str) -> int:
    """'80GB' (10^9 bytes), '24GiB' (2^30), '512MiB', '80G' or a plain byte count -> bytes."""
    match = _MEMORY.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a memory size like 80GB, 24GiB or 512MiB, got {text!r}")
    return int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").lower()])


def format_bytes(nbytes: float) -> str:
    """A byte count in binary units, three significant digits: '1.5 GiB', '12 MiB', '900 B'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"
