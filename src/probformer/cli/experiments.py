"""The experiment commands: ``coord-check``, ``sweep``, ``lr-curves``, ``lr-depth``, ``transfer``,
``compare`` and ``curves``. Each parses its flags, loads its spec, records the command line next to the results
(``command.txt``) and calls the library; rerunning a command continues where it stopped."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from probformer.cli.arguments import add_rerender_argument, add_spec_arguments, list_of
from probformer.cli.command import Command
from probformer.cli.provenance import record_command
from probformer.config import ConfigError, config_from_dict, parse_model_overrides
from probformer.experiments import compare as compare_lib
from probformer.experiments import coord_check as coord_lib
from probformer.experiments import curves as curves_lib
from probformer.experiments import lr_curves as lr_lib
from probformer.experiments import lr_depth as depth_lib
from probformer.experiments import sweep as sweep_lib
from probformer.experiments import transfer as transfer_lib
from probformer.experiments.spec import write_spec
from probformer.models import ARCHITECTURES
from probformer.parametrization import PRESETS

integers = list_of(int, "0,1")
names = list_of(str, "pt,bert")


def _doc_line(module) -> str:
    return module.__doc__.splitlines()[0]


# -- coord-check ---------------------------------------------------------------------------------------
def add_coord_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=tuple(ARCHITECTURES), default="pt")
    p.add_argument("--param", choices=PRESETS, default="mup", help="parametrization preset")
    p.add_argument("--widths", type=list_of(int, "32,64,128"), default=list(coord_lib.DEFAULT_WIDTHS),
                   help="comma-separated widths to measure (default 2 N0 .. 32 N0; see DEFAULT_WIDTHS)")
    p.add_argument("--base-width", type=int, default=coord_lib.DEFAULT_BASE_WIDTH,
                   help="muP base width N0 (muP == SP there); 0: the first of --widths")
    p.add_argument("--steps", type=int, default=10, help="AdamW steps on the fixed batch")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=None,
                   help="base lr (default per architecture, deliberately above its training lr: "
                        + ", ".join(f"{a} {v:g}" for a, v in coord_lib.DEFAULT_LRS.items()) + ")")
    p.add_argument("--tol", type=float, default=coord_lib.DEFAULT_TOL, help="max |log-log slope| counted as flat")
    p.add_argument("--out", default="results/coord_check", help="output root; files go to <out>/<arch>-<param>/")
    p.add_argument("--cache-dir", help="corpus cache (default: $PROBFORMER_CACHE or ~/.cache/probformer)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="override a base-model field, e.g. --set model.hidden_exponent=1.0")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 is often fastest here)")
    p.add_argument("--no-progress", action="store_true")


def coord_check(arch: str = "pt", param: str = "mup", widths: Sequence[int] = coord_lib.DEFAULT_WIDTHS,
                base_width: int = coord_lib.DEFAULT_BASE_WIDTH, steps: int = 10, seeds: int = 3,
                lr: float | None = None, tol: float = coord_lib.DEFAULT_TOL, out: str = "results/coord_check",
                cache_dir: str | None = None, overrides: Sequence[str] = (), threads: int | None = None,
                no_progress: bool = False) -> int:
    model_overrides = parse_model_overrides(arch, list(overrides))  # typed like `probformer train --set model.*`
    n0 = base_width or None
    try:  # a bad width or model field is a usage error (one line), found before any training
        coord_lib.width_configs(arch, param, list(widths), model_overrides, coord_lib.DEFAULT_VOCAB,
                                coord_lib.DEFAULT_SEQ_LEN, n0)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"coord-check: {err}") from None
    coord_lib.run_coord_check(arch, param, list(widths), steps, seeds, lr, model_overrides, base_width=n0,
                              out_dir=Path(out) / f"{arch}-{param}", tol=tol, cache_dir=cache_dir,
                              progress=not no_progress, num_threads=threads)
    return 0


# -- sweep ---------------------------------------------------------------------------------------------
def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p, "sweep", "search_space, train, sampler, n_trials, storage, ...",
                       "--set train.model.hidden_size=64 --set n_trials=8")
    p.add_argument("--n-trials", type=int, help="finished trials the study should hold")
    p.add_argument("--storage", help="SQLAlchemy URL shared by workers (default sqlite:///<out_dir>/study.db)")
    p.add_argument("--study-name")
    p.add_argument("--out-dir")


def sweep(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
          n_trials: int | None = None, storage: str | None = None, study_name: str | None = None,
          out_dir: str | None = None) -> int:
    spec = sweep_lib.load_sweep_spec(config, preset, overrides, n_trials=n_trials, storage=storage,
                                     study_name=study_name, out_dir=out_dir)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_command(out)
    study = sweep_lib.run_sweep(spec)
    print(sweep_lib.summary(study))
    print(f"results: {out}/trials.csv, {out}/best.json (storage {spec.storage_url})")
    return 0


# -- lr-curves -----------------------------------------------------------------------------------------
def add_lr_curves_arguments(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p, "lr-curves", "widths, lrs, seeds, parametrizations, train, reference",
                       "--set 'widths=[32,64]' --set train.threads=1")
    p.add_argument("--out-dir")
    p.add_argument("--storage", help="SQLAlchemy URL shared by workers (default sqlite:///<out_dir>/studies.db)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--report-only", action="store_true", help="write the table and plot from what has finished")
    only.add_argument("--dry-run", action="store_true",
                      help="print which studies would train and which are read from the references; train nothing")
    add_rerender_argument(only, "best_lr.md")


def lr_curves(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
              out_dir: str | None = None, storage: str | None = None, report_only: bool = False,
              dry_run: bool = False, rerender: bool = False) -> int:
    spec = lr_lib.load_lr_curves_spec(config, preset, overrides, out_dir=out_dir, storage=storage)
    if dry_run:
        print("\n".join(lr_lib.plan_lines(spec)))
        return 0
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rerender:
        record_command(out)
        rows = lr_lib.rerender(spec)
    elif report_only:
        rows = lr_lib.collect(spec)
        lr_lib.write_outputs(rows, spec)
    else:
        record_command(out)
        rows = lr_lib.run_lr_curves(spec)
    print(lr_lib.markdown(rows, spec))
    print(f"results: {out}/results.csv, {out}/best_lr.md, {out}/lr_curves.png")
    return 0


# -- lr-depth ------------------------------------------------------------------------------------------
def add_lr_depth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="lr-curves out_dirs (spec.yaml, results.csv), one per T, "
                        "e.g. results/lr_curves/pt-n64-depth-t2")
    p.add_argument("--out", default="runs/lr-depth", help="output directory: depth.md, depth.csv, depth.png "
                                                          "(default runs/lr-depth)")
    p.add_argument("--param", choices=("mup", "sp"), default="mup", help="the parametrization compared (default mup)")


def lr_depth(run_dirs: Sequence[str], out: str = "runs/lr-depth", param: str = "mup") -> int:
    text = depth_lib.write_depth_report(list(run_dirs), out, param)
    record_command(out)
    print(text)
    print(f"results: {out}/depth.md, {out}/depth.csv, {out}/depth.png")
    return 0


# -- transfer ------------------------------------------------------------------------------------------
def add_transfer_arguments(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p, "transfer", "sweep_dir, widths, seeds, factor, perturb", "--set 'seeds=[0,1,2,3]'")
    p.add_argument("--sweep-dir", help="a `probformer sweep` out_dir (best.json, spec.yaml)")
    p.add_argument("--widths", type=list_of(int, "128,256"), help="comma-separated target widths, e.g. 128,256")
    p.add_argument("--out-dir")
    add_rerender_argument(p, "report.md")


def transfer(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
             sweep_dir: str | None = None, widths: list[int] | None = None, out_dir: str | None = None,
             rerender: bool = False) -> int:
    spec = transfer_lib.load_transfer_spec(config, preset, overrides, sweep_dir=sweep_dir, widths=widths,
                                           out_dir=out_dir)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_command(out)
    if rerender:
        print("\n".join(transfer_lib.report_lines(transfer_lib.rerender(spec), spec)))
        print(f"rewrote {out}/report.md from {out}/results.csv")
        return 0
    write_spec(spec, out / "spec.yaml")
    rows = transfer_lib.run_transfer(spec)
    print("\n".join(transfer_lib.report_lines(rows, spec)))
    print(f"results: {out}/results.csv, {out}/report.md, {out}/transfer.png")
    return 0


# -- compare -------------------------------------------------------------------------------------------
def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p, "compare", "budgets, token_budget, archs, seeds, train, models, hparams, hparams_from, "
                       "eval_texts, curve_fractions",
                       "--set hparams.pt.optim.lr=3e-3 --set eval_texts.ewt=path/to/en_ewt-ud-dev.conllu")
    p.add_argument("--budgets", type=names, help="comma-separated parameter budgets, e.g. 1M,4M,16M")
    p.add_argument("--archs", type=names, help="comma-separated architectures (pt,bert,ut)")
    p.add_argument("--seeds", type=integers, help="comma-separated training seeds, e.g. 0,1")
    p.add_argument("--token-budget", help="training tokens per run, e.g. 2M")
    p.add_argument("--out-dir", help="output directory (default: the spec's out_dir, runs/compare)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--dry-run", action="store_true", help="print the sized runs (params, FLOPs) and train nothing")
    add_rerender_argument(only, "results.md")


def compare(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
            budgets: list[str] | None = None, archs: list[str] | None = None, seeds: list[int] | None = None,
            token_budget: str | None = None, out_dir: str | None = None, dry_run: bool = False,
            rerender: bool = False) -> int:
    spec = compare_lib.load_spec(config, preset, overrides, budgets=budgets, archs=archs, seeds=seeds,
                                 token_budget=token_budget, out_dir=out_dir)
    if dry_run:
        from probformer.training.build import corpus_for

        corpus = corpus_for(config_from_dict(spec.train))
        print(f"{'run':<16} {'N':>5} {'params':>11} {'non-emb':>11} {'FLOPs/token':>12} {'train FLOPs':>12} steps")
        for run in compare_lib.plan_runs(spec, corpus.vocab_size, spec.out_dir):
            print(f"{run.name:<16} {run.config.model['hidden_size']:>5} {run.counts['total']:>11,} "
                  f"{run.counts['non_embedding']:>11,} {run.flops_per_token:>12.3g} "
                  f"{run.flops_per_token * run.train_tokens:>12.3g} {run.config.total_steps}")
        for name, path in spec.eval_texts.items():
            print(f"eval_texts.{name}: {path} ({'found' if Path(path).exists() else 'NOT FOUND'})")
        return 0
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    record_command(spec.out_dir)
    if rerender:
        _, curves = compare_lib.rerender(spec)
        print(compare_lib.summary_table(spec.out_dir))
        print(f"rewrote {Path(spec.out_dir)}/results.md from results.csv" + (" and curves.csv" if curves else ""))
        return 0
    rows = compare_lib.compare(spec)
    print(compare_lib.summary_table(spec.out_dir))
    diverged = sum(r["status"] == "diverged" for r in rows)
    print(f"{len(rows)} runs ({diverged} diverged); results in {Path(spec.out_dir)}/results.md, results.csv, "
          "curves.csv, loss_vs_params.png, loss_vs_flops.png, learning_curves.png")
    return 0


# -- curves --------------------------------------------------------------------------------------------
def add_curves_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories (metrics.jsonl)")
    p.add_argument("--out", default="learning_curves.png", help="the plot (PNG; default learning_curves.png)")
    p.add_argument("--labels", type=names, help="comma-separated legend labels, one per run (default: the run "
                                               "directory names)")
    p.add_argument("--text", default=curves_lib.VALID,
                   help="which evaluation: valid (default) or an eval_texts name of the runs, e.g. ewt")
    p.add_argument("--margin", type=float, default=curves_lib.DEFAULT_MARGIN,
                   help=f"nats below the unigram loss that count as off the plateau (default "
                        f"{curves_lib.DEFAULT_MARGIN:g})")


def curves(run_dirs: Sequence[str], out: str = "learning_curves.png", labels: list[str] | None = None,
           text: str = curves_lib.VALID, margin: float = curves_lib.DEFAULT_MARGIN) -> int:
    dirs = [Path(d) for d in run_dirs]
    labels = [d.name for d in dirs] if labels is None else labels
    if len(labels) != len(dirs):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(dirs)} run directories")
    if margin < 0:
        raise ConfigError(f"--margin: expected a number >= 0, got {margin!r}")
    if Path(out).suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the plot is a PNG file; name it *.png")
    drawn = []
    for label, run_dir in zip(labels, dirs, strict=True):
        curve = curves_lib.Curve.of(label, curves_lib.read_evaluations(run_dir), text)
        if not curve.tokens:
            raise ConfigError(f"{run_dir}: no finite '{text}' evaluation in metrics.jsonl"
                              + ("" if text == curves_lib.VALID else " (is it one of the run's eval_texts?)"))
        drawn.append(curve)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tasks = [curves_lib.run_task(d) for d in dirs]
    curves_lib.plot_curves(drawn, out, margin=margin, title=f"{text} loss against tokens seen",
                           ylabel=curves_lib.loss_label(tasks), baseline=curves_lib.baseline_label(tasks))
    print(curves_lib.table(drawn, [curves_lib.run_status(d) for d in dirs], text, margin))
    print(f"plot: {out}")
    return 0


COORD_CHECK = Command("coord-check", "muP coordinate check: activation scale vs width over a few steps",
                      add_coord_check_arguments, coord_check, description=_doc_line(coord_lib))
SWEEP = Command("sweep", "Optuna hyperparameter study over training runs (resumable)", add_sweep_arguments, sweep,
                on_interrupt="finished trials are stored; rerun the same command to continue (the interrupted "
                             "trial resumes from its checkpoint)", description=_doc_line(sweep_lib))
LR_CURVES = Command("lr-curves", "validation loss vs lr at several widths, SP vs muP (resumable)",
                    add_lr_curves_arguments, lr_curves,
                    on_interrupt="finished runs are stored; rerun the same command to continue",
                    description=_doc_line(lr_lib))
LR_DEPTH = Command("lr-depth", "best lr against PT's MFVI iterations T, from one lr-curves result per T",
                   add_lr_depth_arguments, lr_depth, description=_doc_line(depth_lib))
TRANSFER = Command("transfer", "a sweep's best point at larger widths vs x2 and /2 perturbations",
                   add_transfer_arguments, transfer,
                   on_interrupt="finished runs are kept; rerun the same command to continue",
                   description=_doc_line(transfer_lib))
COMPARE = Command("compare", "PT vs BERT vs UT at equal parameter budgets (results table + plots)",
                  add_compare_arguments, compare,
                  on_interrupt="finished runs and the last checkpoint are kept; rerun the same command to continue",
                  description=_doc_line(compare_lib))
CURVES = Command("curves", "validation loss against tokens seen, and when runs leave the plateau",
                 add_curves_arguments, curves, description=_doc_line(curves_lib))
