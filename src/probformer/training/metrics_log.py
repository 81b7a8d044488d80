"""Metrics to ``metrics.jsonl`` (one JSON object per line) and, when installed, TensorBoard.

One reader, :func:`read_metrics`, for everything that reads a run's metrics back (a resume, the
learning curves). A run killed while appending leaves a torn last line: it is skipped with a warning
saying so (the records before it stand); a torn line anywhere else means the file is damaged.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from probformer.config import ConfigError

END_OF_RUN = ("test", "final")  # the records a run writes once, when it ends


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf; keep them readable
    return value


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every record in the metrics file ``path``: a torn last line is skipped with a
    warning ("ignored its torn last line N"); any other line that is not a JSON record is a ConfigError."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines):  # a run killed while appending: its last record is torn, the rest stands
                warnings.warn(f"{path}: ignored its torn last line {number}", stacklevel=3)
                continue
            raise ConfigError(f"{path}:{number}: not a JSON record; the file is damaged")
        records.append((line, record))
    return records


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of the metrics file ``path``, in order (see :func:`read_records`)."""
    return [record for _, record in read_records(path)]


def info_record(path: Path) -> dict[str, Any] | None:
    """The run's ``info`` record (written once, at its start: device, bf16, task, ...) from the metrics
    file ``path``, or None if it has none."""
    return next((record for record in read_metrics(path) if record.get("kind") == "info"), None)


class MetricsLog:
    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool, log=print):
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Lines written after the checkpoint we resume from are replayed by the resumed run, and a
            # run that goes on past where it ended writes its end-of-run records again, later.
            with warnings.catch_warnings(record=True) as torn:
                warnings.simplefilter("always")
                records = read_records(self.path)
            for warning in torn:
                log(f"resume: {warning.message}")
            kept = [line for line, record in records
                    if record.get("step", 0) <= resume_step and record.get("kind") not in END_OF_RUN]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None:
            self.path.write_text("")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                log("tensorboard is not installed: metrics go to metrics.jsonl only "
                    "(pip install 'probformer[tensorboard]')")

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        record = {"kind": kind, "step": step, **{k: _clean(v) for k, v in values.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
