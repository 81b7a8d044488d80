"""Learning curves: validation loss against tokens seen, read from runs' ``metrics.jsonl``, and the point
where a run leaves the unigram plateau.

Every model starts on the unigram solution: the read-out bias is initialised to the log unigram
frequencies of the training split (``unigram_bias_init``) and the rest of the read-out near zero, so at
step 0 the masked-token loss *is* the unigram baseline, the loss of a model that ignores context. A run
can sit on that plateau for a long time (BERT at the compare-cpu budget had barely left it after 80
steps), and a final loss alone does not say whether a model is still there or just slow. So this reads
a run's evaluations as a curve and reports the first token count at which its loss is below the
unigram loss of the *same* masked targets by a margin (:func:`plateau_exit`).

``probformer curves RUN_DIR...`` plots any runs together and prints that point per run; ``probformer
compare`` uses the same reading for its learning-curve table and plot.

Tokens seen at an evaluation after step s = s x batch_size x grad_accum x seq_len (what the trainer
counts as ``tokens_seen``), from the run's ``train_config.json``; the ``tokens`` field of a ``valid``
record is the number of *scored* targets, not this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probformer.config import ConfigError
from probformer.figures import pyplot, save_figure
from probformer.training.metrics_log import info_record, read_metrics

DEFAULT_MARGIN = 0.1  # nats below the unigram loss that count as "off the plateau"
VALID = "valid"  # the in-domain validation split; any other name is an eval_texts entry

__all__ = [
    "DEFAULT_MARGIN",
    "VALID",
    "Curve",
    "baseline_label",
    "loss_keys",
    "loss_label",
    "plateau_exit",
    "plot_curves",
    "read_evaluations",
    "run_status",
    "run_task",
    "table",
]


def loss_keys(text: str) -> tuple[str, str]:
    """The (loss, unigram loss) keys of ``text`` in an evaluation dict: ``valid_loss`` or ``eval_<name>_loss``."""
    prefix = "valid" if text == VALID else f"eval_{text}"
    return f"{prefix}_loss", f"{prefix}_unigram_loss"


def _number(value: Any) -> float:
    return float(value)  # the metrics log writes a non-finite loss as the string "nan" / "inf"


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per evaluation of the run in ``run_dir``, by step: ``step``, ``tokens`` (training tokens
    seen so far: the record's ``tokens_seen``, real tokens without padding; a run logged before records
    carried it, step x batch x seq_len), ``valid_loss``, ``valid_unigram_loss`` and, per eval text,
    ``eval_<name>_loss`` and ``eval_<name>_unigram_loss``. A step logged twice (a resumed run replays
    steps after its checkpoint) keeps its last record."""
    run = Path(run_dir)
    metrics, config_path = run / "metrics.jsonl", run / "train_config.json"
    if not metrics.is_file() or not config_path.is_file():
        raise ConfigError(f"{run}: not a training run directory (needs metrics.jsonl and train_config.json)")
    config = json.loads(config_path.read_text())
    tokens_per_step = config["batch_size"] * config.get("grad_accum", 1) * config["data"]["seq_len"]
    by_step: dict[int, dict[str, Any]] = {}
    for record in read_metrics(metrics):  # a torn last line (a run killed mid-write) is skipped, with a warning
        kind = record.get("kind", "")
        if kind != VALID and not kind.startswith("eval_"):
            continue
        step = int(record["step"])
        entry = by_step.setdefault(step, {"step": step, "tokens": step * tokens_per_step})
        if "tokens_seen" in record:
            entry["tokens"] = int(record["tokens_seen"])
        entry[f"{kind}_loss"] = _number(record["loss"])
        entry[f"{kind}_unigram_loss"] = _number(record["unigram_loss"])
    return [by_step[s] for s in sorted(by_step)]


@dataclass(frozen=True)
class Curve:
    """One run's loss on one text against tokens seen (evaluations without that text, or with a
    non-finite loss, left out)."""

    label: str
    steps: tuple[int, ...]
    tokens: tuple[int, ...]
    loss: tuple[float, ...]
    unigram: tuple[float, ...]  # the unigram baseline of the same targets (fixed masks: one value per run)

    @classmethod
    def of(cls, label: str, evaluations: Sequence[dict[str, Any]], text: str = VALID) -> Curve:
        key, unigram_key = loss_keys(text)
        points = [e for e in evaluations if key in e and math.isfinite(e[key])]
        return cls(label, tuple(e["step"] for e in points), tuple(e["tokens"] for e in points),
                   tuple(e[key] for e in points), tuple(e[unigram_key] for e in points))


def plateau_exit(curve: Curve, margin: float = DEFAULT_MARGIN) -> int | None:
    """Index of the first evaluation whose loss is below its unigram loss by more than ``margin`` (None:
    never). The first such point, not the last crossing: a run that falls back is still reported as
    having left (its curve shows the rest)."""
    for i, (loss, unigram) in enumerate(zip(curve.loss, curve.unigram, strict=True)):
        if loss < unigram - margin:
            return i
    return None


def run_task(run_dir: str | Path) -> str:
    """The task the run in ``run_dir`` trained (its info record's; ``fill-mask`` for runs logged before
    records named it)."""
    info = info_record(Path(run_dir) / "metrics.jsonl")
    return str(info.get("task", "fill-mask")) if info is not None else "fill-mask"


def _by_kind(tasks: Sequence[str], mlm: str, task: str, mixed: str) -> str:
    """``mlm`` when every run is a masked LM, ``task`` when none is, ``mixed`` otherwise."""
    kinds = set(tasks)
    return mlm if kinds == {"fill-mask"} else task if "fill-mask" not in kinds else mixed


def loss_label(tasks: Sequence[str]) -> str:
    """The y-axis label for runs of ``tasks``: masked-LM loss, a task's label loss, or plain loss."""
    return _by_kind(tasks, "MLM loss (nats)", "label cross-entropy (nats)", "loss (nats)")


def baseline_label(tasks: Sequence[str]) -> str:
    """What the dashed line of a run of ``tasks`` is: a masked LM's unigram loss, or a task run's loss of
    the label prior (its evaluation records keep it under the same key)."""
    return _by_kind(tasks, "unigram baseline", "label-prior baseline",
                    "baseline (unigram for MLM runs, label prior for task runs)")


def plot_curves(curves: Sequence[Curve], path: str | Path, *, margin: float = DEFAULT_MARGIN,
                title: str = "", ylabel: str = "MLM loss (nats)",
                baseline: str = "unigram baseline") -> dict[str, dict[str, Any]]:
    """Loss against tokens seen (log x), one colour per curve, each with its baseline (``baseline_label``)
    dashed and its plateau exit marked. Returns what was drawn, per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drawn: dict[str, dict[str, Any]] = {}
    for i, curve in enumerate(curves):
        color = f"C{i % 10}"
        ax.plot(curve.tokens, curve.loss, color=color, marker="o", ms=3, lw=1.5, label=curve.label)
        if curve.unigram:
            ax.axhline(curve.unigram[-1], color=color, ls="--", lw=0.8, alpha=0.7)
        exit_at = plateau_exit(curve, margin)
        if exit_at is not None:
            ax.plot([curve.tokens[exit_at]], [curve.loss[exit_at]], marker="v", ms=9, color=color, mec="black")
        drawn[curve.label] = {"tokens": list(curve.tokens), "loss": list(curve.loss),
                              "exit": None if exit_at is None else curve.tokens[exit_at]}
    ax.plot([], [], "k--", lw=0.8, label=f"{baseline} (each run's colour)")
    ax.plot([], [], "v", color="white", mec="black", ms=9, label=f"first point {margin:g} nats below it")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return drawn


def exit_text(curve: Curve, margin: float) -> str:
    i = plateau_exit(curve, margin)
    if i is None:
        return f"not within {curve.tokens[-1]:,} tokens" if curve.tokens else "no evaluation"
    return f"after {curve.tokens[i]:,} tokens (step {curve.steps[i]})"


def run_status(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    return json.loads(summary.read_text()).get("status", "?") if summary.is_file() else "unfinished"


def table(curves: Sequence[Curve], statuses: Sequence[str], text: str, margin: float) -> str:
    width = max([len("run"), *(len(c.label) for c in curves)])
    lines = [f"{'run':<{width}}  {'status':<10}  {'evals':>5}  {'tokens seen':>11}  {text + ' loss':>11}  "
             f"{'unigram':>7}  leaves the unigram plateau ({text} loss < unigram - {margin:g})"]
    for curve, status in zip(curves, statuses, strict=True):
        last = (f"{curve.tokens[-1]:>11,}  {curve.loss[-1]:>11.4f}  {curve.unigram[-1]:>7.4f}" if curve.tokens
                else f"{'-':>11}  {'-':>11}  {'-':>7}")
        lines.append(f"{curve.label:<{width}}  {status:<10}  {len(curve.tokens):>5}  {last}  "
                     f"{exit_text(curve, margin)}")
    return "\n".join(lines)
