"""probformer.sizing.units: memory sizes as users write them."""

from __future__ import annotations

import pytest

from probformer.sizing.units import parse_memory


def test_parse_memory_units():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("24GiB") == 24 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5g") == 1_500_000_000
    assert parse_memory("4096") == 4096
    for bad in ("", "GB", "80 XB", "-1GB"):
        with pytest.raises(ValueError, match="memory size"):
            parse_memory(bad)
