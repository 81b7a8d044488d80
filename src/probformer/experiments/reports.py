"""What the experiment commands write: CSV tables (and reading them back) and JSON (figures:
:mod:`probformer.figures`).

One format for all of them: a CSV has a fixed column list and writes a missing number (NaN, None) as
an empty cell (what a spreadsheet reads as missing); :func:`read_rows` types the columns back, so a
report can be re-rendered from a committed ``results.csv`` without the runs that made it
(``--rerender``, after a change to how verdicts are judged).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_rows", "write_csv", "write_json"]


def _cell(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """``rows`` as a CSV with ``columns`` (default: every key, in first-seen order); NaN and None empty."""
    path = Path(path)
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return path


def _parse(kind: Callable[[str], Any], text: str) -> Any:
    if kind is bool:
        return text == "True"
    if text == "":
        return math.nan if kind is float else None
    return kind(text)


def read_rows(path: str | Path, types: Mapping[str, Callable[[str], Any]]) -> list[dict[str, Any]]:
    """A CSV written by :func:`write_csv`, with the columns in ``types`` converted (float: an empty cell
    is NaN; int / str: None; bool: ``True``); other columns stay strings."""
    with Path(path).open(newline="") as handle:
        return [{k: _parse(types[k], v) if k in types else v for k, v in row.items()} for row in csv.DictReader(handle)]


def write_json(path: str | Path, value: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(value, indent=2, default=str))
    return path
