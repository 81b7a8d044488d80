"""Scaling comparison (design note section 7, the paper's Fig. 2): PT vs BERT vs UT at equal parameter budgets.

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
    hparams_from: {pt: runs/sweep-pt/best.json}   # JSON {"optim": ..., "model": ...}, applied last (path from cwd)
    out_dir: runs/compare

Resumable: a run whose ``summary.json`` says completed or diverged is read back, not redone; a run
with a checkpoint but no summary is resumed; a run directory trained with a different configuration
is an error (not silently reused). Outputs in ``out_dir``: ``runs/<arch>-<budget>-s<seed>/`` (each a
normal training run), ``results.csv`` (one row per run), ``results.md`` (mean +- seed std per
architecture and budget, and which architecture wins each budget by how much relative to the seed
noise of :mod:`probformer.experiments.noise`), ``loss_vs_params.png`` and ``loss_vs_flops.png``,
``spec.yaml`` (the resolved spec) and ``command.txt`` (the command lines that produced them, one per
invocation). ``--rerender`` rewrites ``results.md`` from ``results.csv`` alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from probformer.config import (
    ConfigError,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    model_fields,
    validate_model_section,
)
from probformer.experiments import noise
from probformer.experiments import spec as specs
from probformer.experiments.reports import add_rerender_argument, pyplot, read_rows, save_figure, write_csv
from probformer.experiments.spec import merge
from probformer.models import MODEL_CLASSES
from probformer.provenance import record_command
from probformer.sizing import (
    config_for_budget,
    count_parameters,
    training_flops_per_token,
)
from probformer.training.reuse import train_or_reuse

ARCHS = ("pt", "bert", "ut")
# TrainConfig keys compare sets itself (per run), so the shared ``train`` section may not.
RUN_OWNED_KEYS = ("model", "out_dir", "seed", "token_budget", "steps", "progress", "test_eval")
COLUMNS = ("arch", "budget", "seed", "status", "params", "non_embedding_params", "hidden_size", "flops_per_token",
           "train_tokens", "train_flops", "steps", "valid_loss", "test_loss", "valid_unigram_loss", "valid_accuracy",
           "tokens_per_second", "wall_s", "resumed", "reason", "run_dir")
ROW_TYPES = {**dict.fromkeys(("budget", "seed", "params", "non_embedding_params", "hidden_size", "train_tokens",
                              "steps"), int),
             **dict.fromkeys(("flops_per_token", "train_flops", "valid_loss", "test_loss", "valid_unigram_loss",
                              "valid_accuracy", "tokens_per_second", "wall_s"), float),
             "resumed": bool}  # results.csv read back


# -- spec ------------------------------------------------------------------------------------------
@dataclass
class CompareSpec:
    budgets: list[int]  # total parameter budgets ('1M', '400k' or integers in YAML)
    token_budget: int  # training tokens per run, identical for every architecture, budget and seed
    archs: list[str] = field(default_factory=lambda: list(ARCHS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train: dict[str, Any] = field(default_factory=dict)  # shared partial TrainConfig (data, batch_size, eval...)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-arch base model: shape at N0, depth
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-arch {optim: ..., model: ...} tuned at N0
    hparams_from: dict[str, str] = field(default_factory=dict)  # per-arch JSON file, applied over hparams
    out_dir: str = "runs/compare"

    def __post_init__(self) -> None:
        if not isinstance(self.budgets, list) or not self.budgets:
            raise ConfigError(f"budgets: expected a non-empty list such as [1M, 4M, 16M], got {self.budgets!r}")
        self.budgets = sorted({parse_count(b, "budgets") for b in self.budgets})
        self.token_budget = parse_count(self.token_budget, "token_budget")
        self.archs = _names(self.archs, "archs")
        for name in ("models", "hparams", "hparams_from"):
            section = getattr(self, name) or {}
            if not isinstance(section, dict) or set(section) - set(MODEL_CLASSES):
                raise ConfigError(f"{name}: expected a mapping keyed by architecture ({', '.join(ARCHS)}), "
                                  f"got {section!r}")
            setattr(self, name, section)
        if not isinstance(self.seeds, list) or not self.seeds or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds) \
                or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected a non-empty list of distinct integers >= 0, got {self.seeds!r}")
        self.train = dict(self.train or {})
        owned = sorted(set(self.train) & set(RUN_OWNED_KEYS))
        if owned:
            raise ConfigError(f"train.{owned[0]}: set by compare per run; use budgets / token_budget / seeds / "
                              f"models / hparams / out_dir instead")
        try:
            config_from_dict(self.train)  # types and ranges, before anything runs
        except ConfigError as err:
            raise ConfigError(f"train.{err}") from None
        for arch in self.archs:
            arch_settings(self, arch)  # model and optim keys, and the hparams_from files

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or any(v not in MODEL_CLASSES for v in value) \
            or len(set(value)) != len(value):
        raise ConfigError(f"{key}: expected a non-empty list of distinct names from {', '.join(ARCHS)}, got {value!r}")
    return value


def parse_count(value: Any, key: str = "count") -> int:
    """``'10M'``, ``'1.5m'``, ``'400k'``, ``'0.4B'``, ``123456`` or ``1e6`` -> an integer >= 1."""
    text = str(value).strip()
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:].lower(), 1.0)
    try:
        number = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or not number >= 1:
        raise ConfigError(f"{key}: expected a positive count like 4M, 400k or 1000000, got {value!r}")
    return round(number)


def count_label(n: int) -> str:
    """1000000 -> '1M', 1500000 -> '1.5M', 40000 -> '40k'; exact, else the plain integer."""
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        text = f"{n / scale:g}"
        if n >= scale and "e" not in text and round(float(text) * scale) == n:
            return text + suffix
    return str(n)


def compare_preset_names() -> list[str]:
    return specs.preset_names("compare")


def load_spec(path: str | Path | None = None, preset: str | None = None, overrides: list[str] = (),
              **updates: Any) -> CompareSpec:
    """A preset, then a YAML file, then ``key=value`` overrides (``train.batch_size=8``,
    ``hparams.pt.optim.lr=3e-3``), then ``updates`` that are not None (later wins)."""
    return specs.load_spec(CompareSpec, "compare", path, preset, overrides, updates)


def spec_from_dict(values: dict[str, Any]) -> CompareSpec:
    """A spec from its values (unknown and missing keys are ConfigErrors)."""
    return specs.spec_from_values(CompareSpec, "compare", values)


def read_hparams_file(path: str | Path, arch: str) -> dict[str, Any]:
    """``{"optim": {...}, "model": {...}}`` from a sweep's best-point JSON (other keys are ignored)."""
    path = Path(path)
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"hparams_from.{arch}: cannot read {path} as JSON ({err})") from None
    if not isinstance(loaded, dict) or not ({"optim", "model"} & set(loaded)):
        raise ConfigError(f"hparams_from.{arch}: {path} must hold a JSON object with 'optim' and/or 'model'")
    model = dict(loaded.get("model") or {})
    if model.pop("arch", arch) != arch:
        raise ConfigError(f"hparams_from.{arch}: {path} was tuned for arch {loaded['model']['arch']!r}")
    return {"optim": dict(loaded.get("optim") or {}), "model": model}


def arch_settings(spec: CompareSpec, arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base model fields, optim section) of ``arch``: models, then hparams, then hparams_from."""
    layers = [{"model": spec.models.get(arch) or {}}, spec.hparams.get(arch) or {}]
    if arch in spec.hparams_from:
        layers.append(read_hparams_file(spec.hparams_from[arch], arch))
    base: dict[str, Any] = {}
    optim: dict[str, Any] = dict(spec.train.get("optim") or {})
    for i, layer in enumerate(layers):
        where = ("models", "hparams", "hparams_from")[i]
        if not isinstance(layer, dict) or set(layer) - {"optim", "model"}:
            raise ConfigError(f"{where}.{arch}: expected a mapping with 'optim' and/or 'model', got {layer!r}")
        model = dict(layer.get("model") or {})
        if model.pop("arch", arch) != arch:
            raise ConfigError(f"{where}.{arch}: model.arch must be {arch!r}")
        base.update(model)
        optim.update(layer.get("optim") or {})
    try:
        base = validate_model_section({"arch": arch, **base})
        config_from_dict({"optim": optim})
    except ConfigError as err:
        raise ConfigError(f"{arch}: {err}") from None
    base.pop("arch")
    return base, optim


# -- plan ------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    arch: str
    budget: int
    seed: int
    config: TrainConfig
    counts: dict[str, int]  # count_parameters: total / non_embedding / embedding
    flops_per_token: float

    @property
    def name(self) -> str:
        return f"{self.arch}-{count_label(self.budget)}-s{self.seed}"

    @property
    def train_tokens(self) -> int:  # planned: total_steps full batches
        c = self.config
        return c.total_steps * c.batch_size * c.grad_accum * c.data.seq_len


def plan_runs(spec: CompareSpec, vocab_size: int, out_dir: str | Path) -> list[PlannedRun]:
    """Every (budget, arch, seed) run, smallest budget first, with its TrainConfig, counts and FLOPs."""
    runs = []
    for budget in spec.budgets:
        for arch in spec.archs:
            base, optim = arch_settings(spec, arch)
            try:
                sized = config_for_budget(arch, budget, vocab_size=vocab_size, base=base)
            except ValueError as err:
                raise ConfigError(f"budget {count_label(budget)}: {err}") from None
            model = {"arch": arch, **{k: getattr(sized, k) for k in model_fields(arch) if hasattr(sized, k)}}
            for seed in spec.seeds:
                config = config_from_dict(merge(spec.train, {
                    "model": model, "optim": optim, "seed": seed, "token_budget": spec.token_budget,
                    "out_dir": str(Path(out_dir) / "runs" / f"{arch}-{count_label(budget)}-s{seed}"),
                    "progress": False, "test_eval": True}))
                flops = training_flops_per_token(arch, sized, config.data.seq_len, config.data.resolved_mask_prob)
                runs.append(PlannedRun(arch, budget, seed, config, count_parameters(arch, sized), flops))
    return runs


# -- run -------------------------------------------------------------------------------------------
def execute(run: PlannedRun, log=print) -> dict[str, Any]:
    """Train ``run`` unless it has finished before (resume it if it has a checkpoint); return its row."""
    summary, info = train_or_reuse(run.config, train, log, info_name="compare_run.json")
    return make_row(run, summary, info)


def train(config: TrainConfig, **kwargs) -> dict[str, Any]:
    """:func:`probformer.training.trainer.train`, looked up through this module (tests stand in for it)."""
    from probformer.training.trainer import train as train_model

    return train_model(config, **kwargs)


def make_row(run: PlannedRun, summary: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    nan = float("nan")
    completed = summary.get("status") == "completed"

    def loss(key: str) -> float:  # a diverged run's last finite evaluation is not its result: left empty
        return float(summary.get(key, nan)) if completed else nan

    return {
        "arch": run.arch, "budget": run.budget, "seed": run.seed, "status": summary.get("status", "unknown"),
        "params": run.counts["total"], "non_embedding_params": run.counts["non_embedding"],
        "hidden_size": run.config.model["hidden_size"], "flops_per_token": run.flops_per_token,
        "train_tokens": run.train_tokens, "train_flops": run.flops_per_token * run.train_tokens,
        "steps": summary.get("step"), "valid_loss": loss("valid_loss"), "test_loss": loss("test_loss"),
        "valid_unigram_loss": float(summary.get("valid_unigram_loss", nan)), "valid_accuracy": loss("valid_accuracy"),
        "tokens_per_second": float(summary.get("tokens_per_second", nan)), "wall_s": float(info.get("wall_s", nan)),
        "resumed": bool(info.get("resumed", False)), "reason": summary.get("reason", ""), "run_dir": run.config.out_dir,
    }


def compare(spec: CompareSpec, out_dir: str | Path | None = None, *, command: str | None = None,
            log=None) -> list[dict[str, Any]]:
    """Train (or read back) every run of ``spec`` and write the results table and plots; return the rows."""
    from probformer.training.trainer import corpus_for

    out = Path(out_dir if out_dir is not None else spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or tqdm.write
    specs.write_spec(spec, out / "spec.yaml", out_dir=str(out))
    record_command(out, command)
    corpus = corpus_for(config_from_dict(spec.train), log)
    runs = plan_runs(spec, corpus.vocab_size, out)
    rows: list[dict[str, Any]] = []
    with tqdm(runs, desc="compare", unit="run", dynamic_ncols=True) as bar:
        for run in bar:
            bar.set_postfix_str(run.name)
            rows.append(execute(run, log))
            write_tables(rows, out, spec)
    write_outputs(rows, out, spec)
    return rows


# -- outputs ---------------------------------------------------------------------------------------
def write_outputs(rows: list[dict[str, Any]], out_dir: str | Path, spec: CompareSpec) -> dict[str, Path]:
    out = Path(out_dir)
    files = write_tables(rows, out, spec)
    files["loss_vs_params"] = out / "loss_vs_params.png"
    files["loss_vs_flops"] = out / "loss_vs_flops.png"
    plot_loss(rows, "params", files["loss_vs_params"], spec)
    plot_loss(rows, "train_flops", files["loss_vs_flops"], spec)
    return files


def write_tables(rows: list[dict[str, Any]], out: Path, spec: CompareSpec) -> dict[str, Path]:
    return {"results_csv": write_csv(out / "results.csv", rows, COLUMNS), "results_md": write_report(rows, out, spec)}


def write_report(rows: list[dict[str, Any]], out: Path, spec: CompareSpec) -> Path:
    (out / "results.md").write_text(markdown(rows, spec))
    return out / "results.md"


def rerender(spec: CompareSpec, out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rewrite ``results.md`` from ``results.csv``: trains nothing and needs no run directories, so a
    committed result follows a change to the verdict rule."""
    out = Path(out_dir if out_dir is not None else spec.out_dir)
    if not (out / "results.csv").is_file():
        raise ConfigError(f"--rerender: {out / 'results.csv'} not found")
    rows = read_rows(out / "results.csv", ROW_TYPES)
    write_report(rows, out, spec)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (arch, budget): counts, FLOPs, mean and std of the losses over completed seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arch"], row["budget"]), []).append(row)
    out = []
    for (arch, budget), group in groups.items():
        done = [r for r in group if r["status"] == "completed"]
        entry = {"arch": arch, "budget": budget, "params": group[0]["params"],
                 "non_embedding_params": group[0]["non_embedding_params"], "train_flops": group[0]["train_flops"],
                 "seeds": len(group), "completed": len(done), "diverged": sum(r["status"] == "diverged" for r in group),
                 "diverged_seeds": [r["seed"] for r in group if r["status"] == "diverged"]}
        for key in ("valid_loss", "test_loss", "valid_unigram_loss"):
            seeds = noise.Seeds.of(r[key] for r in done if math.isfinite(r[key]))
            entry[key], entry[key + "_std"], entry[key + "_seeds"] = seeds.mean, seeds.std, seeds.n
        out.append(entry)
    return sorted(out, key=lambda e: e["budget"])  # stable: architectures stay in run order


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if math.isfinite(std) else f"{mean:.4f}"


def verdicts(groups: list[dict[str, Any]]) -> list[str]:
    """Per budget: which architecture has the lowest mean validation loss, by how much, against seed noise."""
    lines = []
    for budget in sorted({g["budget"] for g in groups}):
        here = [g for g in groups if g["budget"] == budget]
        ranked = sorted((g for g in here if g["completed"]), key=lambda g: g["valid_loss"])
        lost = [f"{g['arch']} (all {g['seeds']} seeds diverged)" for g in here if not g["completed"] and g["diverged"]]
        note = f"; excluded: {', '.join(lost)}" if lost else ""
        label = count_label(budget)
        if not ranked:
            lines.append(f"- {label}: no completed run{note}.")
            continue
        best = ranked[0]
        if len(ranked) == 1:
            lines.append(f"- {label}: {best['arch']} (valid {_pm(best['valid_loss'], best['valid_loss_std'])}) is the "
                         f"only architecture with a completed run{note}.")
            continue
        second = ranked[1]
        d = noise.difference(*(noise.Seeds(g["valid_loss"], g["valid_loss_std"], g["valid_loss_seeds"])
                               for g in (second, best)))
        margin = d.delta
        if d.estimated:
            judged = "larger than" if d.real else "within"
            verdict = f" = {d.ratio:.2f}x the seed noise ({d.noise:.4f}): {judged} the seed noise"
        else:
            verdict = " (fewer than two completed seeds: no seed-noise estimate)"
        partial = [g["arch"] for g in (best, second) if g["diverged"]]
        if partial:
            note += f"; means over completed seeds only for {', '.join(partial)}"
        lines.append(f"- {label}: {best['arch']} has the lowest mean valid loss ({best['valid_loss']:.4f}), "
                     f"{margin:.4f} nats below {second['arch']} ({second['valid_loss']:.4f}){verdict}{note}.")
    return lines


def markdown(rows: list[dict[str, Any]], spec: CompareSpec) -> str:
    groups = aggregate(rows)
    seeds = ", ".join(map(str, spec.seeds))
    sources = []
    for arch in spec.archs:
        lr = arch_settings(spec, arch)[1].get("lr", OptimConfig.lr)
        where = (f"hparams_from {spec.hparams_from[arch]}" if arch in spec.hparams_from
                 else "spec hparams" if arch in spec.hparams else "trainer defaults")
        sources.append(f"{arch} lr {lr:g} ({where})")
    lines = [
        f"# {' vs '.join(a.upper() for a in spec.archs)} at equal parameter budgets",
        "",
        (f"Same data and {spec.token_budget:,} training tokens per run; seeds {seeds}. Each architecture runs "
         "at its own hyperparameters, the same at every budget (muP transfer from its base width): "
         f"{'; '.join(sources)}; all values in spec.yaml. They are only as good as their tuning at the base width. "
         "Losses: masked-token cross-entropy (nats) on fixed validation / test batches, mean ± sample std over "
         "completed seeds; diverged runs are counted, not averaged. Params: total (embeddings included; "
         "non-embedding in the next column); FLOPs: training FLOPs per token x tokens (matrix products only, "
         "probformer.sizing)."),
        "",
        ("| arch | budget | params | non-emb params | train FLOPs | valid loss | test loss | unigram loss "
         "| completed | diverged |"),
        "|---|---|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for g in groups:
        diverged = f"**{g['diverged']}** (seed {', '.join(map(str, g['diverged_seeds']))})" if g["diverged"] else "0"
        lines.append(f"| {g['arch']} | {count_label(g['budget'])} | {g['params']:,} | {g['non_embedding_params']:,} "
                     f"| {g['train_flops']:.3g} | {_pm(g['valid_loss'], g['valid_loss_std'])} "
                     f"| {_pm(g['test_loss'], g['test_loss_std'])} | {_pm(g['valid_unigram_loss'], float('nan'))} "
                     f"| {g['completed']}/{g['seeds']} | {diverged} |")
    lines += ["", "## Lowest validation loss per budget", "", f"Seed noise: {noise.RULE}.", "", *verdicts(groups), ""]
    return "\n".join(lines)


def plot_loss(rows: list[dict[str, Any]], x_key: str, path: str | Path, spec: CompareSpec) -> dict[str, dict]:
    """Mean valid loss (error bars: seed std) against ``x_key`` ('params' or 'train_flops'), one line per
    architecture, log x. Diverged runs are drawn as crosses at the top edge. Returns what was drawn."""
    plt = pyplot()
    from matplotlib.transforms import blended_transform_factory

    groups = aggregate(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    top = blended_transform_factory(ax.transData, ax.transAxes)
    drawn: dict[str, dict] = {}
    for i, arch in enumerate(spec.archs):
        mine = [g for g in groups if g["arch"] == arch]
        if not mine:
            continue
        color = f"C{i}"
        xs = [g[x_key] for g in mine]
        means = [g["valid_loss"] for g in mine]  # nan where every seed diverged: the line breaks there
        stds = [g["valid_loss_std"] if math.isfinite(g["valid_loss_std"]) else 0.0 for g in mine]
        ax.errorbar(xs, means, yerr=stds, color=color, marker="o", ms=4, capsize=3, label=arch)
        bad = [(g[x_key], g["diverged"]) for g in mine if g["diverged"]]
        for x, k in bad:
            ax.plot([x], [0.97], transform=top, marker="x", ms=9, mew=2, color=color, clip_on=False)
            ax.annotate(f"{arch}: {k} diverged", (x, 0.97), xycoords=top, xytext=(5, -3 - 10 * i),
                        textcoords="offset points", fontsize=7, color=color)
        drawn[arch] = {"x": xs, "mean": means, "std": stds, "diverged": bad}
    unigram = [g["valid_unigram_loss"] for g in groups if math.isfinite(g["valid_unigram_loss"])]
    if unigram:
        ax.axhline(float(np.mean(unigram)), color="gray", ls="--", lw=1, label="unigram baseline")
    if any(d["diverged"] for d in drawn.values()):
        ax.plot([], [], "x", color="black", mew=2, label="diverged run (top edge)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (total)" if x_key == "params" else "training FLOPs")
    ax.set_ylabel("validation MLM loss (nats)")
    ax.set_title(f"{spec.token_budget:,} tokens per run, {len(spec.seeds)} seed(s): mean ± std", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return drawn


def summary_table(rows: list[dict[str, Any]], spec: CompareSpec) -> str:
    """The aggregated table and the per-budget verdicts (the markdown without its preamble)."""
    text = markdown(rows, spec)
    return text[text.index("| arch"):]


# -- CLI -------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("compare", help="PT vs BERT vs UT at equal parameter budgets (results table + plots)",
                              description=__doc__.splitlines()[0])
    specs.add_spec_arguments(p, "compare", "budgets, token_budget, archs, seeds, train, models, hparams",
                             "--set hparams.pt.optim.lr=3e-3 --set train.data.cache_dir=/tmp/c")
    p.add_argument("--budgets", help="comma-separated parameter budgets, e.g. 1M,4M,16M")
    p.add_argument("--archs", help="comma-separated architectures (pt,bert,ut)")
    p.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1")
    p.add_argument("--token-budget", help="training tokens per run, e.g. 2M")
    p.add_argument("--out-dir", help="output directory (default: the spec's out_dir, runs/compare)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--dry-run", action="store_true", help="print the sized runs (params, FLOPs) and train nothing")
    add_rerender_argument(only, "results.md")
    p.set_defaults(func=run_from_args)
    return p


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def run_from_args(args: argparse.Namespace) -> int:
    try:
        seeds = None if args.seeds is None else [int(s) for s in _split(args.seeds)]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1") from None
    spec = load_spec(args.config, args.preset, args.overrides, budgets=_split(args.budgets), archs=_split(args.archs),
                     seeds=seeds, token_budget=args.token_budget, out_dir=args.out_dir)
    if args.dry_run:
        from probformer.training.trainer import corpus_for

        corpus = corpus_for(config_from_dict(spec.train))
        print(f"{'run':<16} {'N':>5} {'params':>11} {'non-emb':>11} {'FLOPs/token':>12} {'train FLOPs':>12} steps")
        for run in plan_runs(spec, corpus.vocab_size, spec.out_dir):
            print(f"{run.name:<16} {run.config.model['hidden_size']:>5} {run.counts['total']:>11,} "
                  f"{run.counts['non_embedding']:>11,} {run.flops_per_token:>12.3g} "
                  f"{run.flops_per_token * run.train_tokens:>12.3g} {run.config.total_steps}")
        return 0
    if args.rerender:
        record_command(spec.out_dir)
        print(summary_table(rerender(spec), spec))
        print(f"rewrote {Path(spec.out_dir)}/results.md from results.csv")
        return 0
    try:
        rows = compare(spec)
    except KeyboardInterrupt:
        print("interrupted: finished runs and the last checkpoint are kept; rerun the same command to continue",
              file=sys.stderr)
        return 130
    print(summary_table(rows, spec))
    diverged = sum(r["status"] == "diverged" for r in rows)
    print(f"{len(rows)} runs ({diverged} diverged); results in {Path(spec.out_dir)}/results.md, results.csv, "
          "loss_vs_params.png, loss_vs_flops.png")
    return 0


__all__ = ["CompareSpec", "PlannedRun", "add_parser", "aggregate", "compare", "count_label", "execute", "load_spec",
           "markdown", "parse_count", "plan_runs", "plot_loss", "rerender", "run_from_args", "spec_from_dict",
           "write_outputs"]
