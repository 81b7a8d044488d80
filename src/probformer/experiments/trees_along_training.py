"""How PT's trees form with training: the parse evaluation of each snapshot a run saved, and of its
final model, in one table and plot (``probformer parse-eval RUN FILE --snapshots ...``).

A step's result is saved with the inputs it depends on (treebank, selection, model), and a saved step
whose inputs match is reused: an interrupted or extended evaluation (more snapshots later) redoes
nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from probformer.inspection.errors import InspectionError
from probformer.inspection.loading import load_model
from probformer.inspection.treebank import (
    ParseEvalReport,
    along_run_markdown,
    markdown,
    parse_eval,
    plot_along_run,
    report_from_dict,
    run_models,
)
from probformer.training.metrics_log import read_metrics


def parse_eval_along_run(run: str | Path, file: str | Path, select_on: str | Path | None, select_first: int | None,
                         steps: Sequence[int] | None, out_dir: str | Path | None = None, batch_size: int = 32,
                         progress: bool = True) -> tuple[str, list[tuple[int, ParseEvalReport]]]:
    """(the Markdown table, (step, result) per model) for the run's snapshots at ``steps`` (None: all)
    and its final model; with ``out_dir`` each step's uas.json / uas.md and the run's
    uas_by_step.md / .json / .png are written there."""
    if select_on is None and select_first is None:
        raise InspectionError("--snapshots compares the chosen reading per model: give --select-on or --select-first")
    out = Path(out_dir) if out_dir else None
    inputs = {"file": str(Path(file).resolve()), "select_on": str(Path(select_on).resolve()) if select_on else None,
              "select_first": select_first}
    results = []
    for step, directory in run_models(run, steps):
        key = {**inputs, "model": str(directory.resolve())}
        saved = out / f"step-{step:06d}" / "uas.json" if out is not None else None
        data = _saved_result(saved)
        if data.get("inputs") == key:
            print(f"step {step}: reusing {saved}", file=sys.stderr)
            result = report_from_dict(data)
        else:
            print(f"step {step}: {directory}", file=sys.stderr)
            result = parse_eval(load_model(directory, require_arch="pt"), file, select_on, select_first, batch_size,
                                progress=progress)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                partial = saved.with_suffix(".json.tmp")  # renamed into place whole: a kill leaves no torn file
                partial.write_text(json.dumps({"inputs": key, **result.to_dict()}, indent=1))
                os.replace(partial, saved)
        if saved is not None:
            (saved.parent / "uas.md").write_text(markdown(result))
        results.append((step, result))
    text = along_run_markdown(results, _tokens_per_step(Path(run)), _valid_losses(Path(run)))
    if out is not None:
        (out / "uas_by_step.md").write_text(text)
        (out / "uas_by_step.json").write_text(json.dumps([{"step": s, **r.to_dict()} for s, r in results], indent=1))
        plot_along_run(results, out / "uas_by_step.png")
    return text, results


def _saved_result(path: Path | None) -> dict:
    """A step's saved result, or {} (none yet, or torn by a kill mid-write: then it is redone)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f"{path}: damaged, evaluating that step again", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def _tokens_per_step(run: Path) -> int | None:
    config_file = run / "train_config.json"
    if not config_file.is_file():
        return None
    c = json.loads(config_file.read_text())
    return c["batch_size"] * c["grad_accum"] * c["data"]["seq_len"]


def _valid_losses(run: Path) -> dict[int, float]:
    metrics_file = run / "metrics.jsonl"
    rows = read_metrics(metrics_file) if metrics_file.is_file() else []
    return {int(r["step"]): float(r["loss"]) for r in rows if r["kind"] == "valid"}
