"""Hyperparameter transfer with a perturbation test (docs/design.md §7; the paper's Fig. 1).

Take the best trial of a sweep at the base width (``probformer sweep``'s ``best.json`` and ``spec.yaml``
in ``sweep_dir``), grow the model to each target width with ``with_width`` (muP multipliers relative
to N0) and train it at that point, the *benchmark*, and at perturbed points: each numeric tuned
hyperparameter times ``factor`` and divided by it, one at a time, everything else equal. If the
parametrization transfers, no perturbation beats the benchmark by more than seed noise.

Spec (YAML, see ``experiments/specs/transfer-pt-cpu.yaml``)::

    sweep_dir: runs/sweep-pt-n32-cpu   # holds best.json and spec.yaml (the trial config: data, budget)
    widths: [128, 256]                 # target widths
    seeds: [0, 1]
    factor: 2.0
    perturb: null                      # null: every numeric tuned key except seed; or a list of keys
    train: {precision: fp32}           # optional: settings over the sweep's train section, for every run
    out_dir: runs/transfer-pt

``train`` pins what the sweep's spec.yaml left to a default that has since changed: a sweep recorded
before ``precision: auto`` meant bf16 on CPUs with bf16 units names no precision, and its transfer
must train in the fp32 its trials did (never mix precisions in one comparison).

Resumable: a finished run is read back, an interrupted one resumed. Outputs: ``results.csv`` (one row
per run), ``report.md`` (benchmark against every perturbed point, per width, with the verdict of
:mod:`probformer.experiments.noise`) and ``transfer.png`` (loss against log2 of the perturbation factor,
one line per hyperparameter, one panel per width, the benchmark in the middle of every line).
``--rerender`` rewrites ``report.md`` from ``results.csv`` alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from probformer.config import ConfigError, config_from_dict
from probformer.experiments import noise
from probformer.experiments import spec as specs
from probformer.experiments.reports import read_rows, write_csv
from probformer.experiments.runs import RESULT_KEYS, train_or_reuse
from probformer.experiments.spec import merge, model_at_width
from probformer.experiments.sweep import SweepSpec, set_dotted
from probformer.figures import pyplot, save_figure
from probformer.training.config_changes import flatten

COLUMNS = ("width", "variant", "param", "multiplier", "seed", "status", "valid_loss", "reason", "run_dir")
ROW_TYPES = {"width": int, "multiplier": float, "seed": int, "valid_loss": float}  # results.csv read back


@dataclass
class TransferSpec:
    sweep_dir: str
    widths: list[int]
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    factor: float = 2.0
    perturb: list[str] | None = None
    train: dict[str, Any] | None = None
    out_dir: str = "runs/transfer"

    def __post_init__(self) -> None:
        if not isinstance(self.widths, list) or not self.widths or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise ConfigError(f"widths: expected a non-empty list of integers >= 1, got {self.widths!r}")
        if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected a non-empty list of distinct integers, got {self.seeds!r}")
        if not isinstance(self.factor, (int, float)) or self.factor <= 1:
            raise ConfigError(f"factor: expected a number > 1, got {self.factor!r}")
        self.factor = float(self.factor)
        for name in ("best.json", "spec.yaml"):
            if not (Path(self.sweep_dir) / name).exists():
                raise ConfigError(f"sweep_dir: {Path(self.sweep_dir) / name} not found (run `probformer sweep` first)")
        self.best = json.loads((Path(self.sweep_dir) / "best.json").read_text())
        self.sweep = specs.read_spec(SweepSpec, "sweep", Path(self.sweep_dir) / "spec.yaml")
        if self.train is not None and not isinstance(self.train, dict):
            raise ConfigError(f"train: expected a mapping of train settings over the sweep's, got {self.train!r}")
        if "model" in (self.train or {}):
            raise ConfigError("train.model: the model is the sweep's, grown to each width; it cannot be overridden "
                              "here (sweep at the model you want instead)")
        set_per_run = sorted(set(flatten(self.train or {})) & ({"seed", "out_dir"} | set(self.best["params"])))
        if set_per_run:
            raise ConfigError(f"train.{set_per_run[0]}: set by the transfer test for every run (the tuned point, "
                              "the seeds, the run directories); it cannot be overridden in train")
        numeric = [k for k, v in self.best["params"].items()
                   if k != "seed" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if self.perturb is None:
            self.perturb = numeric
        unknown = sorted(set(self.perturb) - set(numeric))
        if unknown:
            raise ConfigError(f"perturb: {unknown[0]!r} is not a numeric tuned hyperparameter of the sweep; "
                              f"tuned: {', '.join(numeric)}")
        for width in self.widths:
            self.run_config(width, self.best["params"], self.seeds[0], "benchmark")  # a wrong train key fails here

    @property
    def arch(self) -> str:
        return self.sweep.train["model"].get("arch", "pt")

    def model_at(self, width: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The sweep's model with ``params``' model keys applied, grown to ``width`` from its base width."""
        model = dict(self.sweep.train["model"])
        for key, value in (params or self.best["params"]).items():
            if key.startswith("model."):
                model[key.removeprefix("model.")] = value
        return model_at_width(model, width)

    def variants(self) -> list[tuple[str, str, float, dict[str, Any]]]:
        """(label, param, multiplier, params): the benchmark, then each key x factor and / factor."""
        best = dict(self.best["params"])
        out = [("benchmark", "", 1.0, best)]
        for key in self.perturb:
            for mult in (1.0 / self.factor, self.factor):
                value = best[key] * mult
                if isinstance(best[key], int):
                    value = max(1, round(value))
                label = f"{key}{'x' if mult > 1 else '/'}{self.factor:g}"
                out.append((label, key, mult, {**best, key: value}))
        return out

    def run_config(self, width: int, params: dict[str, Any], seed: int, label: str):
        train = merge(self.sweep.train, self.train or {})
        for key, value in params.items():
            if not key.startswith("model."):
                train = set_dotted(train, key, value)
        run_dir = Path(self.out_dir) / f"n{width}" / run_dir_name(label, seed)
        return config_from_dict(merge(train, {"model": self.model_at(width, params), "seed": seed,
                                              "out_dir": str(run_dir)}))


def run_dir_name(label: str, seed: int) -> str:
    """A variant's run directory under ``n<width>``: one level, so a label's ``/`` (``optim.lr/2``) is spelled
    ``-div`` (``optim.lr-div2-s0``)."""
    return f"{label.replace('/', '-div')}-s{seed}"


def transfer_preset_names() -> list[str]:
    return specs.preset_names("transfer")


def load_transfer_spec(path: str | Path | None = None, preset: str | None = None, overrides=(),
                       **explicit: Any) -> TransferSpec:
    return specs.load_spec(TransferSpec, "transfer", path, preset, overrides, explicit)


# -- run -------------------------------------------------------------------------------------------
def run_transfer(spec: TransferSpec, *, train_fn=None, log=None) -> list[dict[str, Any]]:
    if train_fn is None:
        from probformer.training.trainer import train as train_fn
    log = log or tqdm.write
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(w, v, s) for w in spec.widths for v in spec.variants() for s in spec.seeds]
    rows: list[dict[str, Any]] = []
    with tqdm(plan, desc="transfer", unit="run", dynamic_ncols=True) as bar:
        for width, (label, key, mult, params), seed in bar:
            bar.set_postfix_str(f"N={width} {label} s{seed}")
            config = spec.run_config(width, params, seed, label)
            summary, _ = train_or_reuse(config, train_fn, log)
            ok = summary.get("status") == "completed"
            rows.append({"width": width, "variant": label, "param": key, "multiplier": mult, "seed": seed,
                         "status": summary.get("status"),
                         "valid_loss": summary.get("valid_loss") if ok else float("nan"),
                         "reason": summary.get("reason", ""), "run_dir": config.out_dir})
            write_outputs(rows, spec)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["width"], r["variant"]), []).append(r)
    out = {}
    for (width, label), runs in groups.items():
        seeds = noise.Seeds.of(r["valid_loss"] for r in runs
                               if r["status"] == "completed" and math.isfinite(r["valid_loss"]))
        diverged = seeds.n < len(runs)
        out[(width, label)] = {"width": width, "variant": label, "param": runs[0]["param"],
                               "multiplier": runs[0]["multiplier"], "seeds": len(runs), "diverged": diverged,
                               "mean": seeds.mean if seeds.n and not diverged else float("inf"),
                               "std": seeds.std, "finite_seeds": seeds.n}
    return out


def report_lines(rows: list[dict[str, Any]], spec: TransferSpec) -> list[str]:
    agg = aggregate(rows)
    lines = []
    for width in spec.widths:
        bench = agg.get((width, "benchmark"))
        others = [a for (w, label), a in agg.items() if w == width and label != "benchmark"]
        if bench is None or not others:
            continue
        lines += [f"### N = {width}", "", "| point | valid loss (mean ± std) | vs benchmark |", "|---|---|---|"]
        for a in [bench, *sorted(others, key=lambda a: (a["param"], a["multiplier"]))]:
            loss = "diverged" if not math.isfinite(a["mean"]) else (
                f"{a['mean']:.4f}" + (f" ± {a['std']:.4f}" if math.isfinite(a["std"]) else ""))
            delta = "" if a is bench or not math.isfinite(a["mean"]) else f"{a['mean'] - bench['mean']:+.4f}"
            lines.append(f"| {a['variant']} | {loss} | {delta} |")
        finite = [a for a in others if math.isfinite(a["mean"])]
        best = min(finite, key=lambda a: a["mean"]) if finite else None
        if best is None or best["mean"] >= bench["mean"]:
            verdict = "the benchmark is the best point: no perturbation improves on it."
        else:
            d = noise.difference(*(noise.Seeds(a["mean"], a["std"], a["finite_seeds"]) for a in (bench, best)))
            lower = f"best perturbed point {best['variant']} is {d.delta:.4f} lower"
            if not d.estimated:
                verdict = f"{lower}; no seed-noise estimate (fewer than two seeds), no verdict."
            elif d.real:
                verdict = (f"{lower}, beyond seed noise ({d.noise:.4f}, {d.ratio:.2f}x): the transferred point is off "
                           "in that direction.")
            else:
                verdict = (f"{lower}, within seed noise ({d.noise:.4f}, {d.ratio:.2f}x; real beyond {noise.K:g}x): "
                           "the transferred point holds.")
        lines += ["", f"**Verdict at N = {width}:** {verdict}", ""]
    return lines


def write_outputs(rows: list[dict[str, Any]], spec: TransferSpec) -> dict[str, Path]:
    out = Path(spec.out_dir)
    paths = {"csv": write_csv(out / "results.csv", rows, COLUMNS), "md": write_report(rows, spec),
             "png": out / "transfer.png"}
    plot(rows, spec, paths["png"])
    return paths


def write_report(rows: list[dict[str, Any]], spec: TransferSpec) -> Path:
    best = spec.best
    n0 = spec.sweep.train["model"].get("hidden_size")
    point = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items())
    head = [(f"# Transfer test: {spec.arch}, tuned at N0 = {n0} (study {best.get('study')}, trial {best.get('trial')}, "
            f"valid loss {best.get('value', float('nan')):.4f})"), "",
            (f"Benchmark: {point}; each perturbed point multiplies one of them by {spec.factor:g} or "
            f"1/{spec.factor:g}. {len(spec.seeds)} seed(s) per point. Seed noise: {noise.RULE}."), ""]
    # Settings over the sweep's trials that change what a run computes (not threads, logging, ...):
    # part of what the result means.
    changed = {k: v for k, v in flatten(spec.train or {}).items() if k.split(".")[0] in RESULT_KEYS}
    if changed:
        head[-1:-1] = [f"Every run also sets, over the sweep's train section: "
                       f"{', '.join(f'{k} = {v}' for k, v in sorted(changed.items()))}."]
    path = Path(spec.out_dir) / "report.md"
    path.write_text("\n".join(head + report_lines(rows, spec)) + "\n")
    return path


def rerender(spec: TransferSpec) -> list[dict[str, Any]]:
    """Rewrite ``report.md`` from ``out_dir/results.csv``: trains nothing and needs no run directories, so a
    committed result follows a change to the verdict rule."""
    path = Path(spec.out_dir) / "results.csv"
    if not path.is_file():
        raise ConfigError(f"--rerender: {path} not found")
    rows = read_rows(path, ROW_TYPES)
    write_report(rows, spec)
    return rows


def plot(rows: list[dict[str, Any]], spec: TransferSpec, path: Path) -> None:
    plt = pyplot()
    agg = aggregate(rows)
    widths = [w for w in spec.widths if (w, "benchmark") in agg]
    if not widths:
        return
    fig, axes = plt.subplots(1, len(widths), figsize=(max(6.4, 5.0 * len(widths)), 4.4), squeeze=False, sharey=True)
    for ax, width in zip(axes[0], widths, strict=True):
        bench = agg[(width, "benchmark")]
        for i, key in enumerate(spec.perturb):
            pts = [(math.log2(a["multiplier"]), a) for (w, _), a in agg.items() if w == width and a["param"] == key]
            pts.append((0.0, bench))
            pts.sort(key=lambda p: p[0])
            xs = [x for x, a in pts if math.isfinite(a["mean"])]
            ys = [a["mean"] for x, a in pts if math.isfinite(a["mean"])]
            es = [a["std"] if math.isfinite(a["std"]) else 0.0 for x, a in pts if math.isfinite(a["mean"])]
            ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, color=f"C{i}", label=key)
        ax.axhline(bench["mean"], color="black", lw=0.8, ls="--", label="benchmark")
        ax.set_xticks([-1, 0, 1], [f"/{spec.factor:g}", "tuned", f"x{spec.factor:g}"])
        ax.set_title(f"{spec.arch} N = {width}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation MLM loss (nats)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"transfer from N0 = {spec.sweep.train['model'].get('hidden_size')}: one hyperparameter "
                 f"perturbed at a time\n{len(spec.seeds)} seed(s), mean ± std", fontsize=10)
    save_figure(fig, path)
