"""The lr check before a longer comparison: each architecture's tuned lr, half of it and twice it.

A sweep tunes an architecture's lr for one token budget; under a cosine schedule stretched over 10x the
steps the best lr can move. ``compare-cpu-20m`` therefore first trains each architecture at one budget and
seed with ``lr_scale`` 0.5, 1 and 2 (each factor its own ``probformer compare`` out_dir), and this module
reads those runs back, picks the lowest final validation loss per architecture and writes the chosen
point as a ``best.json``-shaped file (the sweep's point with the winning lr) that the comparison's
``hparams_from`` reads. With ``--adopt`` the winning runs are copied into the comparison's out_dir, where
they are the comparison's own runs of that budget and seed (a run directory is identified by what was
trained, not by where: :func:`probformer.experiments.runs.check_run_dir`) and are read back, not retrained.
One seed: a winner by less than the comparison's seed noise is still a winner, and the table says how
close it was.

    python -m probformer.experiments.compare.lr_check --runs runs/compare-cpu-20m-lr/x{0.5,1,2} \
        --budget 1M --seed 0 --tuned pt=results/sweeps/pt-2m/best.json,bert=...,ut=... \
        --out results/compare/cpu-20m/lr-check --adopt runs/compare-cpu-20m
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probformer.config import ConfigError
from probformer.experiments.compare.spec import read_hparams_file
from probformer.experiments.reports import write_csv
from probformer.sizing import units

FINISHED = ("completed", "diverged")
COLUMNS = ("arch", "lr", "scale", "status", "valid_loss", "run_dir")


@dataclass(frozen=True)
class LrPoint:
    arch: str
    lr: float
    status: str  # completed | diverged
    valid_loss: float  # nan unless completed
    run_dir: str


def read_points(compare_dirs: list[str | Path], budget: int, seed: int) -> list[LrPoint]:
    """Every finished run of ``budget`` parameters and ``seed`` under the compare out_dirs ``compare_dirs``
    (their ``runs/<arch>-<budget>-s<seed>/``); unfinished ones are skipped (the check is still running)."""
    name = units.count_label(budget)
    points = []
    for base in compare_dirs:
        for run_dir in sorted(Path(base, "runs").glob(f"*-{name}-s{seed}")):
            summary_path, config_path = run_dir / "summary.json", run_dir / "train_config.json"
            if not (summary_path.is_file() and config_path.is_file()):
                continue
            summary, config = json.loads(summary_path.read_text()), json.loads(config_path.read_text())
            if summary.get("status") not in FINISHED:
                continue
            completed = summary["status"] == "completed"
            points.append(LrPoint(arch=config["model"]["arch"], lr=float(config["optim"]["lr"]),
                                  status=summary["status"],
                                  valid_loss=float(summary["valid_loss"]) if completed else math.nan,
                                  run_dir=str(run_dir)))
    return points


def by_arch(points: list[LrPoint]) -> dict[str, list[LrPoint]]:
    """The points of each architecture, by lr."""
    groups: dict[str, list[LrPoint]] = {}
    for p in sorted(points, key=lambda p: p.lr):
        groups.setdefault(p.arch, []).append(p)
    return groups


def choose(points: list[LrPoint]) -> dict[str, LrPoint]:
    """Per architecture, the completed point with the lowest validation loss (diverged runs never win)."""
    best: dict[str, LrPoint] = {}
    for p in points:
        if p.status == "completed" and (p.arch not in best or p.valid_loss < best[p.arch].valid_loss):
            best[p.arch] = p
    return best


def chosen_point(tuned: dict[str, Any], best: LrPoint, points: list[LrPoint], tuned_path: str) -> dict[str, Any]:
    """The sweep's point (``read_hparams_file`` of ``tuned_path``) with the winning lr, and the check's record."""
    mine = by_arch(points)[best.arch]
    return {"optim": {**tuned["optim"], "lr": best.lr}, "model": {"arch": best.arch, **tuned["model"]},
            **({"base_model": tuned["base_model"]} if "base_model" in tuned else {}),
            "lr_check": {"tuned_from": tuned_path, "tuned_lr": tuned["optim"].get("lr"),
                         "points": [{"lr": p.lr, "status": p.status, "valid_loss": p.valid_loss,
                                     "run_dir": p.run_dir} for p in mine]}}


def report(points: list[LrPoint], best: dict[str, LrPoint], tuned_lrs: dict[str, float], budget: int,
           seed: int) -> str:
    """lr-check.md: every point, the winner per architecture and its margin over the runner-up."""
    lines = [f"# lr check at {units.count_label(budget)} parameters, seed {seed}", "",
             "Final validation loss (nats) of each architecture at its sweep's lr x0.5, x1 and x2; the lowest "
             "wins and is the comparison's lr. One seed: read a margin below the comparison's seed noise as "
             "a tie that the rule broke.", "",
             "| arch | lr | x tuned | status | valid loss |", "|---|---:|---:|---|---:|"]
    for p in sorted(points, key=lambda p: (p.arch, p.lr)):
        scale = p.lr / tuned_lrs[p.arch] if p.arch in tuned_lrs else math.nan
        loss = f"{p.valid_loss:.4f}" if p.status == "completed" else "-"
        mark = " **(chosen)**" if best.get(p.arch) == p else ""
        lines.append(f"| {p.arch} | {p.lr:.4g} | {scale:.3g} | {p.status} | {loss}{mark} |")
    lines.append("")
    groups = by_arch(points)
    for arch, p in sorted(best.items()):
        others = sorted(q.valid_loss for q in groups[arch] if q is not p and q.status == "completed")
        margin = f", {others[0] - p.valid_loss:.4f} nats below the next lr" if others else ""
        where = "the sweep's lr kept" if math.isclose(p.lr, tuned_lrs.get(arch, math.nan)) else \
            f"{p.lr / tuned_lrs[arch]:g}x the sweep's lr"
        lrs = [q.lr for q in groups[arch]]
        edge = ""
        if len(lrs) > 1 and p.lr == min(lrs):
            edge = "; the grid's lowest lr, so its optimum may lie lower"
        elif len(lrs) > 1 and p.lr == max(lrs):
            edge = "; the grid's highest lr, so its optimum may lie higher"
        lines.append(f"- {arch}: lr {p.lr:.4g} ({where}){margin}{edge}.")
    return "\n".join(lines) + "\n"


def plot(points: list[LrPoint], best: dict[str, LrPoint], path: Path) -> None:
    from probformer.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arch, group in sorted(by_arch(points).items()):
        mine = [p for p in group if p.status == "completed"]
        line, = ax.plot([p.lr for p in mine], [p.valid_loss for p in mine], "o-", label=arch)
        if arch in best:
            ax.plot([best[arch].lr], [best[arch].valid_loss], "*", ms=14, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("peak lr")
    ax.set_ylabel("final valid loss (nats)")
    ax.set_title("lr check (star: chosen)", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_check(compare_dirs: list[str | Path], budget: int, seed: int, tuned_files: dict[str, str],
                out_dir: str | Path) -> dict[str, LrPoint]:
    """Read the check's runs, write ``<arch>.json`` (for ``hparams_from``), lr-check.{csv,md,png}; return
    the winners. Every architecture in ``tuned_files`` must have a completed point."""
    points = read_points(compare_dirs, budget, seed)
    best = choose(points)
    missing = sorted(set(tuned_files) - set(best))
    if missing:
        raise ConfigError(f"lr check: no completed run of {', '.join(missing)} at {units.count_label(budget)} seed "
                          f"{seed} under {', '.join(map(str, compare_dirs))} (is the check still running?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tuned_lrs = {}
    for arch, path in tuned_files.items():
        tuned = read_hparams_file(path, arch)
        tuned_lrs[arch] = float(tuned["optim"]["lr"])
        point = chosen_point(tuned, best[arch], points, path)
        (out / f"{arch}.json").write_text(json.dumps(point, indent=2) + "\n")
    rows = [{"arch": p.arch, "lr": p.lr, "scale": p.lr / tuned_lrs.get(p.arch, math.nan), "status": p.status,
             "valid_loss": p.valid_loss, "run_dir": p.run_dir} for p in sorted(points, key=lambda p: (p.arch, p.lr))]
    write_csv(out / "lr-check.csv", rows, COLUMNS)
    (out / "lr-check.md").write_text(report(points, best, tuned_lrs, budget, seed))
    plot(points, best, out / "lr-check.png")
    return best


def adopt(best: dict[str, LrPoint], compare_dir: str | Path) -> list[Path]:
    """Copy each winning run (without its checkpoint) to ``compare_dir/runs/<name>`` unless a run is there
    already; return the copies."""
    copied = []
    for point in best.values():
        target = Path(compare_dir, "runs", Path(point.run_dir).name)
        if not target.exists():
            shutil.copytree(point.run_dir, target, ignore=shutil.ignore_patterns("checkpoint", ".train.lock"))
            copied.append(target)
    return copied


def parse_tuned(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected arch=path[,arch=path...], got {text!r}")
    return {arch.strip(): path.strip() for arch, path in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probformer.experiments.compare.lr_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="the check's compare out_dirs")
    parser.add_argument("--budget", required=True, help="the parameter budget checked, e.g. 1M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuned", type=parse_tuned, required=True,
                        help="arch=best.json of the sweep each lr scales, comma-separated")
    parser.add_argument("--out", required=True, help="where <arch>.json and lr-check.{csv,md,png} go")
    parser.add_argument("--adopt", metavar="COMPARE_DIR",
                        help="copy the winning runs into this comparison out_dir's runs/ (read back there)")
    args = parser.parse_args(argv)
    try:
        best = write_check(args.runs, units.parse_count(args.budget), args.seed, args.tuned, args.out)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    for copy in adopt(best, args.adopt) if args.adopt else []:
        print(f"adopted {copy}")
    for arch, p in sorted(best.items()):
        print(f"{arch}: lr {p.lr:.4g} (valid {p.valid_loss:.4f}) -> {Path(args.out) / (arch + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
