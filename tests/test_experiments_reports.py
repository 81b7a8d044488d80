"""probformer.experiments.reports: CSV round trips (missing numbers written empty, read back typed)."""

from __future__ import annotations

import math

from probformer.experiments.reports import read_rows, write_csv


def test_csv_writes_missing_numbers_empty_and_reads_them_back_typed(tmp_path):
    rows = [{"width": 32, "loss": 6.123456789012345, "ok": True, "note": "a,b"},
            {"width": 64, "loss": float("nan"), "ok": False, "note": None}]
    path = write_csv(tmp_path / "t.csv", rows)
    assert path.read_text().splitlines()[2] == "64,,False,"
    back = read_rows(path, {"width": int, "loss": float, "ok": bool})
    assert back[0] == {"width": 32, "loss": 6.123456789012345, "ok": True, "note": "a,b"}  # floats exact
    assert back[1]["width"] == 64 and math.isnan(back[1]["loss"]) and back[1]["ok"] is False
