"""Best learning rate against PT's MFVI iterations T, from one lr-curves result per T (issue 25).

``probformer lr-curves`` varies only the width, so depth is one lr-curves run per T (the presets
``lr-curves-pt-n64-depth-t{2,3,5,8}-cpu``) and this report puts them side by side
(``probformer lr-depth RUN_DIR...``). Per width and T: the best lr (lowest final validation loss, mean
over seeds, ± its std) and whether the runner-up lr is worse beyond seed noise
(:mod:`probformer.experiments.noise`); per width the verdict: **does the optimum move by more than one
factor-2 step across T?** Steps are counted as log2 of the ratio of the best lrs, not as grid indices,
so runs whose grids differ (a T = 2 run reused from a committed result with a narrower grid) compare.

It reads only each run's ``spec.yaml`` and ``results.csv`` (committed results will do) and checks that
the runs differ in T alone: the same data, budget and optimiser settings and otherwise the same model.
Outputs: ``depth.md`` (table and verdicts), ``depth.csv`` (one row per T and width), ``depth.png``
(validation loss against lr, one curve per T, a panel per width).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from probformer.config import ConfigError, config_from_dict, model_config_class
from probformer.experiments import noise
from probformer.experiments.lr_curves import (
    ROW_TYPES,
    curve_points,
    differing_settings,
    draw_lr_curve,
    listed_lrs,
    optimum,
    recorded_train,
    resolution_line,
    result_settings,
)
from probformer.experiments.reports import read_rows, write_csv
from probformer.experiments.spec import model_at_width
from probformer.figures import pyplot, save_figure

FIELD = "num_iterations"  # T: PT's MFVI iterations (train.model.num_iterations)
COLUMNS = ("T", "width", "best_lr", "loss", "std", "seeds", "at_grid_edge", "runner_up_lr", "runner_up_delta",
           "noise", "resolved", "run")


@dataclass(frozen=True)
class DepthRun:
    """One lr-curves result: its T, where it is, its lr grid for the parametrization and its rows of it."""

    depth: int
    path: str
    grid: list[float]
    rows: list[dict[str, Any]]
    train: dict[str, Any]


def _model(train: dict[str, Any], param: str) -> dict[str, Any]:
    """The run's base model with every default filled in (so an unset T or field compares)."""
    model = {**(train.get("model") or {}), "parametrization": param}
    return model_at_width(model, int(model.get("hidden_size") or model_config_class("pt")().hidden_size))


def read_run(path: str | Path, param: str = "mup") -> DepthRun:
    """One lr-curves out_dir (``spec.yaml``, ``results.csv``): its rows of ``param`` and its T."""
    where = Path(path)
    for file in (where / "spec.yaml", where / "results.csv"):
        if not file.is_file():
            raise ConfigError(f"lr-depth: {file} not found (give the out_dirs of finished lr-curves runs)")
    values = yaml.safe_load((where / "spec.yaml").read_text()) or {}
    train = recorded_train(values)
    if (train.get("model") or {}).get("arch", "pt") != "pt":
        raise ConfigError(f"lr-depth: {where} is not a PT run (T is PT's MFVI iterations)")
    rows = [r for r in read_rows(where / "results.csv", ROW_TYPES) if r["parametrization"] == param]
    if not rows:
        raise ConfigError(f"lr-depth: {where}/results.csv holds no {param} rows")
    lrs = values.get("lrs")
    if param in (values.get("parametrizations") or []) and lrs:
        grid = sorted(float(v) for v in (lrs[param] if isinstance(lrs, dict) else lrs))
    else:  # rows a reference contributed: the lrs they ran at
        grid = sorted({r["lr"] for r in rows})
    return DepthRun(int(_model(train, param)[FIELD]), str(path), grid, rows, train)


def read_runs(paths: list[str | Path], param: str = "mup") -> list[DepthRun]:
    """The runs by T, after checking that T is all they differ in."""
    runs = sorted((read_run(p, param) for p in paths), key=lambda r: r.depth)
    if len(runs) < 2:
        raise ConfigError("lr-depth: give at least two lr-curves out_dirs (one per T)")
    for a, b in itertools.pairwise(runs):
        if a.depth == b.depth:
            raise ConfigError(f"lr-depth: {a.path} and {b.path} both have T = {a.depth}")
    first = runs[0]
    for run in runs[1:]:
        settings = differing_settings(result_settings(run.train), result_settings(first.train))
        model = {k: v for k, v in differing_settings(_model(run.train, param), _model(first.train, param)).items()
                 if k != FIELD}
        if settings or model:
            raise ConfigError(f"lr-depth: {run.path} differs from {first.path} in more than T: "
                              + ", ".join([f"train.{k}" for k in settings] + [f"train.model.{k}" for k in model])
                              + " (" + ", ".join(f"{there!r} there, {here!r} here"
                                                 for there, here in [*settings.values(), *model.values()]) + ")")
    return runs


def widths_of(runs: list[DepthRun]) -> list[int]:
    return sorted({int(r["width"]) for run in runs for r in run.rows})


def depth_table(runs: list[DepthRun]) -> list[dict[str, Any]]:
    """Per width and T: the best lr, its loss, and the runner-up lr with the seed noise of the difference."""
    table = []
    for width in widths_of(runs):
        for run in runs:
            found = optimum(curve_points(run.rows, run.rows[0]["parametrization"], width), run.grid)
            if found is None:
                continue
            table.append({"T": run.depth, "width": width, **found, "run": run.path})
    return table


def steps(lrs: list[float]) -> float:
    """How many factor-2 steps the lrs span (log2 of max / min)."""
    return math.log2(max(lrs) / min(lrs))


def verdicts(table: list[dict[str, Any]]) -> list[str]:
    lines = []
    for width in sorted({b["width"] for b in table}):
        mine = [b for b in table if b["width"] == width]
        if len(mine) < 2:
            continue
        span = steps([b["best_lr"] for b in mine])
        lines.append(f"- **N = {width}**: best lr " + ", ".join(f"{b['best_lr']:g} (T = {b['T']})" for b in mine)
                     + f": spans {span:g} factor-2 step(s) across T = {mine[0]['T']}..{mine[-1]['T']}; "
                     + ("stays within one step." if span <= 1 else "moves more than one step.")
                     + "".join(f" (T = {b['T']}: optimum at its grid edge, widen the grid.)"
                               for b in mine if b["at_grid_edge"]))
        losses = [b["loss"] for b in mine]
        deeper = all(b < a for a, b in itertools.pairwise(losses))
        lines.append(f"  - more iterations better at the best lr: {'yes' if deeper else 'no'} ("
                     + ", ".join(f"T = {b['T']}: {b['loss']:.4f}" for b in mine) + ")")
        lines.append(resolution_line([(f"T = {b['T']}", b) for b in mine], "T"))
    return lines


def markdown(runs: list[DepthRun], table: list[dict[str, Any]]) -> str:
    first = runs[0]
    param = first.rows[0]["parametrization"]
    c = config_from_dict(first.train)
    tokens = c.total_steps * c.batch_size * c.grad_accum * c.data.seq_len
    widths = widths_of(runs)
    seeds = sorted({r["seed"] for run in runs for r in run.rows})
    lines = [f"# Best lr against MFVI iterations T: pt {param}, N0 = {_model(first.train, param)['hidden_size']}, "
             f"widths {widths}, {len(seeds)} seed(s)", "",
             (f"One lr-curves run per T, the same data, budget ({tokens:,} training tokens per run), optimiser and "
              "model but T: "
              + "; ".join(f"T = {run.depth} `{run.path}` (lr grid {listed_lrs(run.grid)})" for run in runs)
              + ". Loss = final validation MLM loss, mean ± std over seeds; optima compared in factor-2 steps "
              f"(log2 of their ratio). {noise.RULE[0].upper() + noise.RULE[1:]}."), "",
             "| T | " + " | ".join(f"N = {w} best lr | N = {w} loss" for w in widths) + " |",
             "|---|" + "---|---|" * len(widths)]
    cells = {(b["T"], b["width"]): b for b in table}
    for run in runs:
        row = []
        for width in widths:
            b = cells.get((run.depth, width))
            std = f" ± {b['std']:.4f}" if b and math.isfinite(b["std"]) else ""
            row += [f"{b['best_lr']:g}", f"{b['loss']:.4f}{std}"] if b else ["-", "-"]
        lines.append(f"| {run.depth} | " + " | ".join(row) + " |")
    lines += ["", *verdicts(table), ""]
    return "\n".join(lines)


def plot(runs: list[DepthRun], path: str | Path) -> None:
    plt = pyplot()
    widths = widths_of(runs)
    fig, axes = plt.subplots(1, len(widths), figsize=(5.2 * len(widths), 4.2), sharey=True, squeeze=False)
    cmap = plt.get_cmap("plasma")
    finite = [r["valid_loss"] for run in runs for r in run.rows if math.isfinite(r["valid_loss"])]
    best, worst = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for ax, width in zip(axes[0], widths, strict=True):
        for i, run in enumerate(runs):
            pts = curve_points(run.rows, run.rows[0]["parametrization"], width)
            if not pts:
                continue
            draw_lr_curve(ax, pts, cmap(0.85 * i / max(1, len(runs) - 1)), f"T = {run.depth}")
        ax.set_title(f"pt / {runs[0].rows[0]['parametrization']}, N = {width}")
        ax.set_xlabel("log2 learning rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation MLM loss (nats)")
    top = min(worst, best + 1.5)  # capped, as lr-curves' plot: a blown-up lr would flatten the curves
    pad = 0.08 * max(top - best, 0.05)
    axes[0][0].set_ylim(best - pad, top + pad)
    axes[0][-1].legend(fontsize=8, title="MFVI iterations (star: best lr)", title_fontsize=8)
    fig.suptitle("lr curves across T: mean ± std over seeds; x at top = diverged", fontsize=10)
    save_figure(fig, path)


def write_depth_report(paths: list[str | Path], out_dir: str | Path, param: str = "mup") -> str:
    """Read the per-T results and write ``depth.md``, ``depth.csv`` and ``depth.png`` to ``out_dir``;
    returns the markdown."""
    runs = read_runs(paths, param)
    table = depth_table(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(runs, table)
    (out / "depth.md").write_text(text)
    write_csv(out / "depth.csv", table, COLUMNS)
    plot(runs, out / "depth.png")
    return text
