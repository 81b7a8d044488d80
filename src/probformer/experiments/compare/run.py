"""Running a comparison (docs/design.md §7, the paper's Fig. 2): PT vs BERT vs UT at equal parameter budgets.

For every parameter budget, architecture and seed, train one masked LM on the same data (same corpus,
split, tokenizer and, per seed, the same batch order and masks) for the same number of tokens, and
record its validation and test loss next to its parameter counts and training FLOPs.

Each architecture runs at *its own transferred hyperparameters*: ``hparams.<arch>`` holds the
values tuned at that architecture's base width N0 (by ``probformer sweep`` once it exists; plug its
output in with ``hparams_from.<arch>: best.json``), and muP reuses them unchanged at every budget.
That holds because every size is built by :func:`probformer.sizing.config_for_budget` from the
architecture's base model (``models.<arch>`` + ``hparams.<arch>.model``), whose ``hidden_size`` is
the muP base width N0 the multipliers are relative to.

Spec (YAML, see ``experiments/specs/compare-cpu.yaml``)::

    budgets: [1M, 4M, 16M]        # total parameters (embeddings included), +-2%
    token_budget: 163840          # training tokens per run, the same for every run
    archs: [pt, bert, ut]         # default: all three
    seeds: [0, 1]                 # default: [0, 1]
    train: {data: {...}, batch_size: 16, eval_batches: 16, ...}   # shared partial TrainConfig
    models: {pt: {num_iterations: 3}, ...}                         # per-arch base model (shape at N0)
    hparams: {pt: {optim: {lr: 1e-2}, model: {output_mult: 1.0}}, ...}  # per-arch tuned values
    hparams_from: {pt: runs/sweep-pt/best.json}   # a sweep's best point, applied last (path from cwd)
    eval_texts: {ewt: path/to/en_ewt-ud-dev.conllu}  # other text scored at every evaluation (out of domain)
    curve_fractions: [0.25, 0.5, 1.0]             # points along training for the learning-curve table
    out_dir: runs/compare

``hparams_from`` reads the ``best.json`` a finished ``probformer sweep`` writes; when it records the
model the sweep tuned (``base_model``), that model must be this spec's base model with the tuned values
(the same N0 and shape: muP reuses values only relative to the width they were tuned at). The
``spec.yaml`` compare writes has each such file merged into ``hparams`` (its path kept in
``hparams_source``), so a result directory reruns and re-renders without the sweep's directory.

Resumable: a run whose ``summary.json`` says completed or diverged is read back, not redone; a run
with a checkpoint but no summary is resumed; a run directory trained with a different configuration
is an error (not silently reused). Outputs in ``out_dir``: ``runs/<arch>-<budget>-s<seed>/`` (each a
normal training run), ``results.csv`` (one row per run), ``results.md`` (mean +- seed std per
architecture and budget, and which architecture wins each budget by how much relative to the seed
noise of :mod:`probformer.experiments.noise`), ``loss_vs_params.png`` and ``loss_vs_flops.png``,
``spec.yaml`` (the resolved spec) and ``command.txt`` (the command lines that produced them, one per
invocation). With evaluations along training (``train.eval_interval`` below the run's steps) also
``curves.csv`` (one row per run and evaluation: tokens seen, valid loss, each eval text's loss) and
``learning_curves.png``, and results.md gains the loss at ``curve_fractions`` of the training, when each
seed left the unigram plateau (:mod:`~probformer.experiments.curves`) and whether the ranking at half
the budget still holds at the end; each ``eval_texts`` entry adds its loss per run and its own verdict
per budget (:mod:`~probformer.experiments.compare.report`). ``--rerender`` rewrites ``results.md`` from
``results.csv`` and ``curves.csv`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from probformer.config import ConfigError, TrainConfig, config_from_dict
from probformer.experiments import spec as specs
from probformer.experiments.compare.plan import PlannedRun, check_eval_texts, plan_runs
from probformer.experiments.compare.report import markdown, plot_learning_curves, plot_loss
from probformer.experiments.compare.spec import CompareSpec, inlined_hparams
from probformer.experiments.curves import loss_keys, read_evaluations
from probformer.experiments.reports import read_rows, write_csv
from probformer.experiments.runs import train_or_reuse

COLUMNS = ("arch", "budget", "seed", "status", "params", "non_embedding_params", "hidden_size", "flops_per_token",
           "train_tokens", "train_flops", "steps", "valid_loss", "test_loss", "valid_unigram_loss", "valid_accuracy",
           "tokens_per_second", "wall_s", "resumed", "reason", "run_dir")
ROW_TYPES = {**dict.fromkeys(("budget", "seed", "params", "non_embedding_params", "hidden_size", "train_tokens",
                              "steps"), int),
             **dict.fromkeys(("flops_per_token", "train_flops", "valid_loss", "test_loss", "valid_unigram_loss",
                              "valid_accuracy", "tokens_per_second", "wall_s"), float),
             "resumed": bool}  # results.csv read back
CURVE_COLUMNS = ("arch", "budget", "seed", "step", "tokens", "valid_loss", "valid_unigram_loss")
CURVE_TYPES = {**dict.fromkeys(("budget", "seed", "step", "tokens"), int),
               **dict.fromkeys(("valid_loss", "valid_unigram_loss"), float)}  # curves.csv read back


def execute(run: PlannedRun, log=print) -> dict[str, Any]:
    """Train ``run`` unless it has finished before (resume it if it has a checkpoint); return its row."""
    summary, info = train_or_reuse(run.config, train, log, info_name="compare_run.json")
    return make_row(run, summary, info)


def train(config: TrainConfig, **kwargs) -> dict[str, Any]:
    """:func:`probformer.training.trainer.train`, looked up through this module (tests stand in for it)."""
    from probformer.training.trainer import train as train_model

    return train_model(config, **kwargs)


def eval_columns(names) -> tuple[str, ...]:
    """The per-run columns of the eval texts ``names``: eval_<name>_loss, eval_<name>_unigram_loss."""
    return tuple(k for name in names for k in loss_keys(name))


def make_row(run: PlannedRun, summary: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    nan = float("nan")
    completed = summary.get("status") == "completed"

    def loss(key: str) -> float:  # a diverged run's last finite evaluation is not its result: left empty
        return float(summary.get(key, nan)) if completed else nan

    ood: dict[str, float] = {}
    for name in run.config.eval_texts:
        key, unigram = loss_keys(name)
        ood[key], ood[unigram] = loss(key), float(summary.get(unigram, nan))
    return {
        "arch": run.arch, "budget": run.budget, "seed": run.seed, "status": summary.get("status", "unknown"),
        "params": run.counts["total"], "non_embedding_params": run.counts["non_embedding"],
        "hidden_size": run.config.model["hidden_size"], "flops_per_token": run.flops_per_token,
        "train_tokens": run.train_tokens, "train_flops": run.flops_per_token * run.train_tokens,
        "steps": summary.get("step"), "valid_loss": loss("valid_loss"), "test_loss": loss("test_loss"),
        "valid_unigram_loss": float(summary.get("valid_unigram_loss", nan)), "valid_accuracy": loss("valid_accuracy"),
        "tokens_per_second": float(summary.get("tokens_per_second", nan)), "wall_s": float(info.get("wall_s", nan)),
        "resumed": bool(info.get("resumed", False)), "reason": summary.get("reason", ""), "run_dir": run.config.out_dir,
        **ood,
    }


def curve_rows_of(run: PlannedRun) -> list[dict[str, Any]]:
    """The run's evaluations as curves.csv rows (tokens seen, valid and eval-text losses)."""
    if not (Path(run.config.out_dir) / "metrics.jsonl").is_file():
        return []  # a stand-in train function that logged nothing
    keys = CURVE_COLUMNS[3:] + eval_columns(run.config.eval_texts)
    return [{"arch": run.arch, "budget": run.budget, "seed": run.seed,
             **{k: e.get(k, float("nan")) for k in keys}} for e in read_evaluations(run.config.out_dir)]


def compare(spec: CompareSpec, out_dir: str | Path | None = None, *, log=None) -> list[dict[str, Any]]:
    """Train (or read back) every run of ``spec`` and write the results tables and plots; return the rows."""
    from probformer.training.build import corpus_for

    check_eval_texts(spec)
    out = Path(out_dir if out_dir is not None else spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or tqdm.write
    specs.write_spec(spec, out / "spec.yaml", out_dir=str(out), **inlined_hparams(spec))
    corpus = corpus_for(config_from_dict(spec.train), log)
    runs = plan_runs(spec, corpus.vocab_size, out)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []  # completed runs only: a diverged run's curve is not averaged
    with tqdm(runs, desc="compare", unit="run", dynamic_ncols=True) as bar:
        for run in bar:
            bar.set_postfix_str(run.name)
            rows.append(execute(run, log))
            if rows[-1]["status"] == "completed":
                curves += curve_rows_of(run)
            write_tables(rows, curves, out, spec)
    write_outputs(rows, curves, out, spec)
    return rows


# -- outputs ---------------------------------------------------------------------------------------
def write_outputs(rows: list[dict[str, Any]], curves: list[dict[str, Any]], out_dir: str | Path,
                  spec: CompareSpec) -> dict[str, Path]:
    out = Path(out_dir)
    files = write_tables(rows, curves, out, spec)
    files["loss_vs_params"] = out / "loss_vs_params.png"
    files["loss_vs_flops"] = out / "loss_vs_flops.png"
    plot_loss(rows, "params", files["loss_vs_params"], spec)
    plot_loss(rows, "train_flops", files["loss_vs_flops"], spec)
    if curves:
        files["learning_curves"] = out / "learning_curves.png"
        plot_learning_curves(curves, files["learning_curves"], spec)
    return files


def write_tables(rows: list[dict[str, Any]], curves: list[dict[str, Any]], out: Path,
                 spec: CompareSpec) -> dict[str, Path]:
    extra = eval_columns(spec.eval_texts)
    return {"results_csv": write_csv(out / "results.csv", rows, COLUMNS + extra),
            "curves_csv": write_csv(out / "curves.csv", curves, CURVE_COLUMNS + extra),
            "results_md": write_report(rows, curves, out, spec)}


def write_report(rows: list[dict[str, Any]], curves: list[dict[str, Any]], out: Path, spec: CompareSpec) -> Path:
    (out / "results.md").write_text(markdown(rows, spec, curves))
    return out / "results.md"


def rerender(spec: CompareSpec, out_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rewrite ``results.md`` from ``results.csv`` (and ``curves.csv`` where there is one): trains nothing
    and needs no run directories, so a committed result follows a change to the verdict rule.
    Returns (run rows, curve rows)."""
    out = Path(out_dir if out_dir is not None else spec.out_dir)
    if not (out / "results.csv").is_file():
        raise ConfigError(f"--rerender: {out / 'results.csv'} not found")
    extra = dict.fromkeys(eval_columns(spec.eval_texts), float)
    rows = read_rows(out / "results.csv", {**ROW_TYPES, **extra})
    curves = read_rows(out / "curves.csv", {**CURVE_TYPES, **extra}) if (out / "curves.csv").is_file() else []
    for row in (*rows, *curves):  # a column the CSV lacks (an eval text added later) reads as missing
        row.update({k: float("nan") for k in extra if row.get(k) is None})
    write_report(rows, curves, out, spec)
    return rows, curves
