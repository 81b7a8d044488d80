"""Coordinate check (docs/design.md §7; microsoft/mup's ``get_coord_data`` / ``plot_coord_data``).

For each seed and width N in ``widths``, build the model at N from the base model at width
``base_width`` (N0, where muP equals SP; default 32) with the architecture config's ``with_width``,
train it for a few AdamW steps on ONE fixed batch (per-role lrs and Adam eps from
:func:`probformer.parametrization.build_optimizer` with the config's ``scales()``: hidden lr
``hidden_lr_mult``, muP's eps rule; constant lr, no clipping, no weight decay, dropout off), and
record the mean |x| of every activation tap (every ``nn.Identity`` named ``*tap*``: one per
iteration / layer and the final logits) at each step t; t = 0 is the initial model, t = k the model
after k updates.

Verdict: per (activation, step), the least-squares slope of log2(mean |x|) against log2(N), where
mean |x| is first averaged over seeds. An activation passes when |slope| <= ``tol`` (0.1) at every
recorded step; one that is exactly zero at every width at a step (a zero-initialised read-out at
t = 0, say) is flat there. The overall verdict is that every activation passes. It is a measurement:
the CLI returns exit code 0 either way.

Outputs (``write_outputs``): ``records.csv`` (seed, width, step, activation, mean_abs),
``slopes.csv`` and ``slopes.md`` (slope per activation and step, worst step, pass/fail), and
``coord_check.png`` (one log-log panel per selected step, one line per activation).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probformer.data.batches import Batch
from probformer.data.masking import DEFAULT_MASK_PROB, mask_tokens
from probformer.experiments.reports import write_csv
from probformer.figures import pyplot, save_figure
from probformer.models import ARCHITECTURES, architecture, architecture_of, model_classes
from probformer.parametrization import PRESETS, build_optimizer

# The muP base width N0 = 32 (the models tuned small; muP == SP there), but the widths measured are
# 2 N0 .. 32 N0, 16x as docs/design.md §7 asks: the N0 members are finite-size outliers, not exponent
# errors (docs/results/coord-check.md, "What it took"). Each family's base model and default lr (at
# or above its working lr) live with the family: Architecture.coord_check_base / coord_check_lr.
DEFAULT_BASE_WIDTH = 32
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
DEFAULT_TOL = 0.1
DEFAULT_LRS = {name: entry.coord_check_lr for name, entry in ARCHITECTURES.items()}
DEFAULT_SEQ_LEN = 64
DEFAULT_BATCH_SIZE = 8
DEFAULT_VOCAB = 512
BETAS = (0.9, 0.98)
EPS = 1e-8


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoordRecord:
    seed: int
    width: int
    step: int
    activation: str
    mean_abs: float


@dataclass(frozen=True)
class SlopeRow:
    """One activation's log-log slopes vs width, per recorded step."""

    activation: str
    slopes: dict[int, float]  # step -> slope of log2(mean |x|) vs log2(width); 0 where zero at every width
    worst_step: int
    worst_slope: float
    passed: bool


@dataclass
class CoordCheckReport:
    arch: str
    param: str
    widths: list[int]
    steps: int
    seeds: int
    lr: float
    tol: float
    records: list[CoordRecord]
    slopes: list[SlopeRow]
    seconds_per_width: dict[int, float] = field(default_factory=dict)  # mean over seeds
    files: dict[str, Path] = field(default_factory=dict)
    base_width: int | None = None  # N0 (None: widths[0])
    overrides: dict[str, Any] = field(default_factory=dict)  # base-model fields set for this check (--set model.*)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.slopes)

    @property
    def failing(self) -> list[SlopeRow]:
        return [row for row in self.slopes if not row.passed]


# -- the fixed batch and the models ----------------------------------------------------------------
def real_batch(
    vocab_size: int = DEFAULT_VOCAB,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    cache_dir: Path | str | None = None,
    seed: int = 0,
    log=print,
) -> Batch:
    """The default fixed batch: the bundled corpus (WordPiece ``vocab_size``, prepared once and cached
    under ``cache_dir`` or the user cache) through :func:`corpus_batch`."""
    from probformer.data.prepared import CorpusSpec, prepare_corpus

    corpus = prepare_corpus(CorpusSpec(vocab_size=vocab_size), Path(cache_dir) if cache_dir else None, log=log)
    return corpus_batch(corpus, seq_len, batch_size, seed=seed)


def corpus_batch(corpus, seq_len: int = DEFAULT_SEQ_LEN, batch_size: int = DEFAULT_BATCH_SIZE, *,
                 seed: int = 0) -> Batch:
    """A fixed BERT-masked batch (15%, 80/10/10) of a prepared corpus: ``batch_size`` blocks of
    ``seq_len`` tokens spread evenly over the train split, masks from a generator seeded ``seed``."""
    blocks = corpus.blocks("train", seq_len)
    if len(blocks) < batch_size:
        raise ValueError(f"the corpus has {len(blocks)} blocks of {seq_len} tokens, fewer than batch {batch_size}")
    rows = np.linspace(0, len(blocks) - 1, batch_size).round().astype(np.int64)
    ids = torch.from_numpy(np.asarray(blocks[rows], dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = mask_tokens(ids, "bert", DEFAULT_MASK_PROB["bert"], corpus.vocab_size, generator)
    return Batch(inputs, torch.ones_like(inputs), labels)


def width_configs(arch: str, param: str, widths: Sequence[int], model_overrides: Mapping[str, Any] | None,
                  vocab_size: int, seq_len: int, base_width: int | None = None) -> dict[int, Any]:
    """Config per width: the family's ``coord_check_base`` (a tiny model at width ``base_width``, default
    ``widths[0]``, dropout off; overrides applied) scaled by ``with_width``."""
    entry = architecture(arch)
    config_cls = entry.config_class
    n0 = int(base_width) if base_width is not None else int(widths[0])
    if n0 < 1:
        raise ValueError(f"the base width must be positive, got {n0}")
    kwargs = entry.coord_check_base(n0, vocab_size, seq_len)
    overrides = {k: v for k, v in (model_overrides or {}).items() if k != "arch"}
    fields = set(inspect.signature(config_cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(overrides) - fields)
    if unknown:  # PretrainedConfig would silently keep them as attributes
        raise ValueError(f"unknown {arch} model field(s) {', '.join(unknown)}")
    if overrides.get("parametrization", param) != param:
        raise ValueError(f"parametrization comes from param ({param!r}), not from the model overrides")
    if overrides.get("hidden_size", n0) != n0:
        raise ValueError(f"the base width is {n0} (base_width, else widths[0]), not model.hidden_size")
    kwargs.update(overrides)
    kwargs["parametrization"] = param
    base = config_cls(**kwargs)
    return {w: base.with_width(w) for w in widths}


def activation_taps(model: nn.Module) -> dict[str, nn.Module]:
    """Every identity tap of ``model`` by a distinct name (``it0.q``, ``layer1.ffn_output``, ``logits``)."""
    prefix = architecture_of(model.config.model_type).tap_prefix
    taps: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Identity) or "tap" not in name:
            continue
        parts = name.split(".")
        if parts[0] == "taps" and len(parts) == 3:
            label = f"{prefix}{parts[1]}.{parts[2]}"
        else:
            label = name.removesuffix("_tap")
        taps[label] = module
    if not taps:
        raise ValueError(f"{type(model).__name__} has no activation taps")
    return taps


# -- the measurement ----------------------------------------------------------------------------
def coord_check(
    arch: str,
    param: str,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    steps: int = 10,
    seeds: int = 3,
    lr: float | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    batch: Batch | None = None,
    *,
    base_width: int | None = DEFAULT_BASE_WIDTH,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    timings: dict[int, float] | None = None,
    num_threads: int | None = None,
) -> list[CoordRecord]:
    """Mean |x| of every tap, for each seed (0..seeds-1), width and step t = 0..steps (see module doc).

    ``batch`` defaults to :func:`real_batch` (bundled corpus, vocab 512); the model's vocabulary is
    the batch's (``vocab_size`` in ``model_overrides`` wins). ``lr`` defaults to the architecture's
    ``coord_check_lr``; ``base_width`` is N0 (None: ``widths[0]``). ``timings`` (optional) receives the
    mean wall seconds per run at each width. ``num_threads`` sets torch's intra-op threads for the
    duration (restored after): the models are small, and on a busy machine 1 thread is often fastest.
    """
    from tqdm.auto import tqdm

    architecture(arch)  # an unknown name fails before any work
    if param not in PRESETS:
        raise ValueError(f"parametrization must be one of {PRESETS}, got {param!r}")
    widths = [int(w) for w in widths]
    lr = architecture(arch).coord_check_lr if lr is None else lr
    if len(widths) < 2 or len(set(widths)) != len(widths) or min(widths) < 1:
        raise ValueError(f"need at least two distinct positive widths, got {widths}")
    if steps < 0 or seeds < 1 or lr <= 0:
        raise ValueError(f"need steps >= 0, seeds >= 1 and lr > 0; got {steps}, {seeds}, {lr}")
    if batch is None:
        batch = real_batch(cache_dir=cache_dir)
    vocab_size = max(DEFAULT_VOCAB, int(batch.input_ids.max()) + 1)  # an override in model_overrides wins
    configs = width_configs(arch, param, widths, model_overrides, vocab_size, batch.input_ids.shape[1], base_width)
    _, model_cls = model_classes(arch)

    records: list[CoordRecord] = []
    seconds: dict[int, list[float]] = defaultdict(list)
    runs = [(seed, w) for seed in range(seeds) for w in widths]
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        bar = tqdm(runs, desc=f"coord-check {arch}/{param}", disable=not progress, unit="run")
        for seed, width in bar:
            bar.set_postfix(seed=seed, width=width)
            start = time.perf_counter()
            records.extend(_one_run(model_cls, configs[width], batch, steps, lr, seed, width))
            seconds[width].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    if timings is not None:
        timings.update({w: float(np.mean(s)) for w, s in seconds.items()})
    return records


def _one_run(model_cls, config, batch: Batch, steps: int, lr: float, seed: int, width: int) -> list[CoordRecord]:
    torch.manual_seed(seed)
    model = model_cls(config)
    model.train()  # dropout is off in the base config; train mode is what training runs
    sc = config.scales()
    # muP's eps rule (parametrization module doc): eps follows each group's gradient scale, so that a
    # fixed eps does not damp wide models' first updates more than narrow ones'.
    optimizer = build_optimizer(model, lr=lr, weight_decay=0.0, betas=BETAS, eps=EPS, hidden_lr_mult=sc.hidden_lr_mult,
                                eps_mult=sc.eps_mult, hidden_eps_mult=sc.hidden_eps_mult)
    current: dict[str, float] = {}

    def hook(label: str):
        def record(_module, _inputs, output):
            current[label] = float(output.detach().abs().double().mean())
        return record

    handles = [module.register_forward_hook(hook(label)) for label, module in activation_taps(model).items()]
    out: list[CoordRecord] = []
    try:
        for t in range(steps + 1):
            current.clear()
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                         scored_logits_only=True).loss
            out.extend(CoordRecord(seed, width, t, label, value) for label, value in current.items())
            if not torch.isfinite(loss):  # diverged: a result, not an error; later steps stay missing (not flat)
                warnings.warn(f"coord check: loss {loss.item()} at step {t} (width {width}, seed {seed}); run stopped",
                              stacklevel=2)
                break
            if t < steps:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    return out


# -- slopes and verdict -------------------------------------------------------------------------
def loglog_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log2(values) vs log2(widths); 0 if every value is exactly 0, inf/nan if
    only some are (a quantity that vanishes at some widths is not flat)."""
    x = np.log2(np.asarray(widths, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    if np.all(y == 0):
        return 0.0
    if np.any(y <= 0) or not np.all(np.isfinite(y)):
        return math.inf
    return float(np.polyfit(x, np.log2(y), 1)[0])


def seed_means(records: Iterable[CoordRecord]) -> dict[tuple[str, int], dict[int, float]]:
    """(activation, step) -> {width: mean over seeds of mean |x|}."""
    acc: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for r in records:
        acc[(r.activation, r.step, r.width)].append(r.mean_abs)
    out: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for (act, step, width), values in acc.items():
        out[(act, step)][width] = float(np.mean(values))
    return out


def compute_slopes(records: Iterable[CoordRecord], tol: float = DEFAULT_TOL) -> list[SlopeRow]:
    """Per activation: slope at every step (seed-averaged), the worst step, pass = |slope| <= tol at all."""
    records = list(records)
    all_widths = sorted({r.width for r in records})
    num_seeds = len({r.seed for r in records})
    counts: dict[tuple[str, int, int], int] = defaultdict(int)
    for r in records:
        counts[(r.activation, r.step, r.width)] += 1
    means = seed_means(records)
    per_act: dict[str, dict[int, float]] = defaultdict(dict)
    order: list[str] = []
    for (act, step), by_width in means.items():
        if act not in per_act:
            order.append(act)
        if sorted(by_width) != all_widths or any(counts[(act, step, w)] != num_seeds for w in all_widths):
            # some run stopped early (diverged) before this step: not flat
            per_act[act][step] = math.inf
            continue
        per_act[act][step] = loglog_slope(all_widths, [by_width[w] for w in all_widths])
    rows = []
    for act in order:
        slopes = dict(sorted(per_act[act].items()))
        worst_step = max(slopes, key=lambda s: (abs(slopes[s]) if not math.isnan(slopes[s]) else math.inf, -s))
        worst = slopes[worst_step]
        rows.append(SlopeRow(act, slopes, worst_step, worst, bool(abs(worst) <= tol)))
    return rows


# -- outputs ------------------------------------------------------------------------------------
def plot_steps(steps: int, max_panels: int = 6) -> list[int]:
    """~4-6 steps to plot, always including 0 and the last."""
    if steps <= max_panels - 1:
        return list(range(steps + 1))
    picks = {0, 1, steps, round(steps / 4), round(steps / 2), round(3 * steps / 4)}
    return sorted(picks)


def write_outputs(report: CoordCheckReport, out_dir: Path | str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"records": out / "records.csv", "slopes": out / "slopes.csv", "table": out / "slopes.md",
             "plot": out / "coord_check.png"}
    write_csv(files["records"], ({"seed": r.seed, "width": r.width, "step": r.step, "activation": r.activation,
                                  "mean_abs": f"{r.mean_abs:.9g}"} for r in report.records),
              ["seed", "width", "step", "activation", "mean_abs"])
    steps = sorted({s for row in report.slopes for s in row.slopes})
    write_csv(files["slopes"], ({"activation": row.activation, "passed": row.passed, "worst_step": row.worst_step,
                                 "worst_slope": f"{row.worst_slope:.4f}",
                                 **{f"slope_t{s}": f"{row.slopes.get(s, math.nan):.4f}" for s in steps}}
                                for row in report.slopes),
              ["activation", "passed", "worst_step", "worst_slope"] + [f"slope_t{s}" for s in steps])
    files["table"].write_text(markdown_table(report))
    plot_report(report, files["plot"])
    report.files = files
    return files


def markdown_table(report: CoordCheckReport) -> str:
    shown = plot_steps(report.steps)
    verdict = "PASS" if report.passed else "FAIL"
    lines = [
        f"# Coordinate check: {report.arch} / {report.param}",
        "",
        f"widths {report.widths} (base width N0 = {report.base_width or report.widths[0]}), "
        f"{report.steps} AdamW steps at lr {report.lr:g} on one "
        f"fixed batch, {report.seeds} seed(s); slope of log2(mean|x|) vs log2(width), seed-averaged; "
        f"pass = |slope| <= {report.tol:g} at every step t = 0..{report.steps}.",
        *([f"Base-model overrides: {_overrides_text(report)}."] if report.overrides else []),
        "",
        f"**Overall: {verdict}** ({len(report.slopes) - len(report.failing)}/{len(report.slopes)} activations flat)",
        "",
        "| activation | pass | worst step | worst slope | " + " | ".join(f"t={s}" for s in shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for row in report.slopes:
        cells = " | ".join(f"{row.slopes.get(s, math.nan):+.3f}" for s in shown)
        lines.append(f"| {row.activation} | {'yes' if row.passed else 'NO'} | {row.worst_step} | "
                     f"{row.worst_slope:+.3f} | {cells} |")
    if report.seconds_per_width:
        lines += ["", "seconds per run: " + ", ".join(f"N={w}: {s:.1f}" for w, s in report.seconds_per_width.items())]
    return "\n".join(lines) + "\n"


def _overrides_text(report: CoordCheckReport) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(report.overrides.items()))


def plot_report(report: CoordCheckReport, path: Path | str) -> Path:
    plt = pyplot()
    means = seed_means(report.records)
    acts = [row.activation for row in report.slopes]
    shown = plot_steps(report.steps)
    # colour = kind of tap (q, head_logits, ...), line style = iteration / layer
    kinds = list(dict.fromkeys(a.split(".", 1)[-1] for a in acts))
    layers = list(dict.fromkeys(a.split(".", 1)[0] for a in acts if "." in a))
    cmap = plt.get_cmap("tab10")
    styles = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)))
    markers = ("o", "s", "^", "v", "D", "x")
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 2.8, 3.4 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, step in zip(axes.flat, shown, strict=False):  # the grid may have more cells than steps
        for act in acts:
            by_width = means.get((act, step), {})
            ws = [w for w in sorted(by_width) if by_width[w] > 0]
            if not ws:
                continue
            layer, _, kind = act.rpartition(".")
            li = layers.index(layer) if layer else 0
            ax.plot(ws, [by_width[w] for w in ws], color=cmap(kinds.index(kind) % cmap.N),
                    linestyle=styles[li % len(styles)], marker=markers[li % len(markers)], ms=3, lw=1.2, label=act)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"t = {step}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("width N")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean |x| (seed mean)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    order = sorted(range(len(labels)), key=lambda i: acts.index(labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="center right", fontsize=7,
               frameon=False)
    verdict = "PASS" if report.passed else "FAIL"
    extra = f" ({_overrides_text(report)})" if report.overrides else ""
    fig.suptitle(f"coord check {report.arch} / {report.param}{extra}: lr {report.lr:g}, {report.seeds} seed(s), "
                 f"{verdict}")
    return save_figure(fig, path, rect=(0, 0, 1 - 2.6 / fig.get_figwidth(), 0.95))  # room for the legend


# -- one call: measure, judge, write, print -----------------------------------------------------
def run_coord_check(
    arch: str,
    param: str,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    steps: int = 10,
    seeds: int = 3,
    lr: float | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    batch: Batch | None = None,
    *,
    base_width: int | None = DEFAULT_BASE_WIDTH,
    out_dir: Path | str | None = None,
    tol: float = DEFAULT_TOL,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    log=print,
) -> CoordCheckReport:
    """Run :func:`coord_check`, judge it, write outputs under ``out_dir`` (if given) and print a summary.
    ``report.passed`` is the verdict."""
    timings: dict[int, float] = {}
    lr = architecture(arch).coord_check_lr if lr is None else lr
    records = coord_check(arch, param, widths, steps, seeds, lr, model_overrides, batch, base_width=base_width,
                          cache_dir=cache_dir, progress=progress, timings=timings, num_threads=num_threads)
    n0 = int(base_width) if base_width is not None else int(widths[0])
    overrides = {k: v for k, v in (model_overrides or {}).items() if k != "arch"}
    report = CoordCheckReport(arch, param, [int(w) for w in widths], steps, seeds, lr, tol, records,
                              compute_slopes(records, tol), timings, base_width=n0, overrides=overrides)
    if out_dir is not None:
        write_outputs(report, out_dir)
    if log is not None:
        log(summary(report))
    return report


def summary(report: CoordCheckReport) -> str:
    width = max(len(row.activation) for row in report.slopes)
    lines = [f"coord check {report.arch}/{report.param}: widths {report.widths} (N0 = "
             f"{report.base_width or report.widths[0]}), {report.steps} steps, "
             f"{report.seeds} seed(s), lr {report.lr:g}, tol {report.tol:g}"
             + (f"; overrides {_overrides_text(report)}" if report.overrides else "")]
    for row in report.slopes:
        lines.append(f"  {'pass' if row.passed else 'FAIL'}  {row.activation:<{width}}  worst slope "
                     f"{row.worst_slope:+.3f} at t={row.worst_step}")
    verdict = "PASS" if report.passed else f"FAIL ({len(report.failing)}/{len(report.slopes)} activations not flat)"
    lines.append(f"overall: {verdict}")
    for name, path in report.files.items():
        lines.append(f"  {name}: {path}")
    return "\n".join(lines)

__all__ = ["CoordCheckReport", "CoordRecord", "SlopeRow", "compute_slopes", "coord_check",
           "corpus_batch", "loglog_slope", "real_batch", "run_coord_check", "write_outputs"]
