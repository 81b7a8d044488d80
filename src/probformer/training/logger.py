"""What a run reports: console lines, the progress bar, metrics.jsonl / TensorBoard and its files.

Rank 0 reports; every other process gets a :class:`NullLogger` whose methods do nothing, so the
training loop calls the same methods on every rank and holds no rank checks of its own
(:func:`logger_for` is the one place that asks for the rank).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from probformer.config import TrainConfig
from probformer.training.distributed import ProcessContext
from probformer.training.metrics_log import MetricsLog

Log = Callable[..., None]


class Logger:
    """What the training loop reports to. Every method here does nothing; :class:`RunLogger` acts."""

    def info(self, message: str) -> None:
        """A console line (setup, resume, divergence)."""

    def open(self, config: TrainConfig, resume_step: int | None) -> None:
        """Start metrics.jsonl (kept up to ``resume_step`` when resuming) and write train_config.json."""

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One metrics record."""

    def begin(self, total_steps: int, step: int, show_bar: bool) -> None:
        """Start the progress bar at ``step`` of ``total_steps``."""

    def advance(self) -> None:
        """One optimizer step done."""

    def show(self, **postfix: str) -> None:
        """Values shown beside the progress bar."""

    def note(self, message: str) -> None:
        """A console line printed above the progress bar (evaluation results)."""

    def end(self) -> None:
        """Close the progress bar."""

    def finish(self, step: int, result: dict[str, Any]) -> None:
        """The final record, then summary.json."""


class NullLogger(Logger):
    """Every process but rank 0's: reports nothing, writes nothing."""


class RunLogger(Logger):
    """Rank 0's logger: writes into ``out_dir`` (made on construction) and prints through ``log``."""

    def __init__(self, out_dir: Path, log: Log):
        self.out_dir, self.log = out_dir, log
        self.metrics: MetricsLog | None = None
        self.bar: tqdm | None = None
        out_dir.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        self.log(message)

    def open(self, config: TrainConfig, resume_step: int | None) -> None:
        self.metrics = MetricsLog(self.out_dir, resume_step, config.tensorboard, self.log)
        (self.out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self.metrics.write(kind, step, values)

    def begin(self, total_steps: int, step: int, show_bar: bool) -> None:
        self.bar = tqdm(total=total_steps, initial=step, disable=not show_bar, desc="train", unit="step",
                        dynamic_ncols=True)

    def advance(self) -> None:
        self.bar.update(1)

    def show(self, **postfix: str) -> None:
        self.bar.set_postfix(**postfix)

    def note(self, message: str) -> None:
        tqdm.write(message)  # printed even when the bar is disabled (progress: false)

    def end(self) -> None:
        self.bar.close()

    def finish(self, step: int, result: dict[str, Any]) -> None:
        self.metrics.write("final", step, {k: v for k, v in result.items() if k != "out_dir"})
        self.metrics.close()
        (self.out_dir / "summary.json").write_text(json.dumps(result, indent=2, default=str))


def logger_for(context: ProcessContext, out_dir: Path, log: Log) -> Logger:
    """Rank 0's :class:`RunLogger`, a :class:`NullLogger` elsewhere."""
    return RunLogger(out_dir, log) if context.is_main else NullLogger()
