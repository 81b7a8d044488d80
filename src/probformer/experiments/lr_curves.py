"""Learning-rate curves across widths, SP against muP (docs/design.md §4b; muP paper Fig. 1 left).

For every parametrization and width, one grid study (:mod:`probformer.experiments.sweep`) over
``lr x seed`` trains the base model grown to that width with ``with_width`` (muP multipliers relative to
the base width N0 = ``train.model.hidden_size``) on the same data and token budget. The result is the classic
plot: validation loss against log2 lr, one curve per width, SP and muP side by side, and a table of
the best lr per width. Under muP the optimum should stay put and wider should be better.

Spec (YAML, see ``experiments/specs/lr-curves-pt-cpu.yaml``)::

    out_dir: runs/lr-curves-pt
    storage: null                  # null: sqlite:///<out_dir>/studies.db (one study per param x width)
    widths: [32, 64, 128, 256]     # the first is usually N0
    parametrizations: [sp, mup]
    lrs: [1.0e-3, 2.0e-3, ...]     # the grid (factor-2 steps make "within one grid step" a factor 2)
    seeds: [0, 1]
    train: {model: {arch: pt, hidden_size: 32, ...}, data: {...}, token_budget: ..., ...}
    reference: null                # or a finished lr-curves out_dir: its rows for the parametrizations
                                   # not run here (e.g. the SP curves) join the table, plot and verdicts

``reference`` is how a muP *variant* (``parametrizations: [mup]`` and a changed model field, e.g.
``--set train.model.hidden_exponent=1.0``) is judged against the same SP curves without re-training
them; the reference must have trained the same data, token budget and optimiser settings and, at
every shared width, the same model (checked; an SP model does not depend on N0 or beta, so a muP
variant with another base width can reuse the SP curves too).

Everything is a sweep trial, so it is resumable (rerun the command) and several processes can work
on it at once (each takes the next unfinished trial). Outputs: ``results.csv`` (one row per run),
``best_lr.md`` (best lr per width and the verdicts, judged by :mod:`probformer.experiments.noise`),
``lr_curves.png``. ``--rerender`` rewrites ``best_lr.md`` from ``results.csv`` alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from probformer.config import ConfigError, config_from_dict, model_config_class
from probformer.experiments import noise
from probformer.experiments import spec as specs
from probformer.experiments.reports import read_rows, write_csv
from probformer.experiments.spec import merge, model_at_width
from probformer.experiments.sweep import SweepSpec, open_study, run_sweep, trial_key
from probformer.figures import pyplot, save_figure

COLUMNS = ("parametrization", "width", "lr", "seed", "state", "valid_loss", "fail_reason", "run_dir")
ROW_TYPES = {"width": int, "lr": float, "seed": int, "valid_loss": float}  # results.csv read back


@dataclass
class LrCurvesSpec:
    widths: list[int]
    lrs: list[float]
    train: dict[str, Any]
    parametrizations: list[str] = field(default_factory=lambda: ["sp", "mup"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    out_dir: str = "runs/lr-curves"
    storage: str | None = None
    heartbeat_interval: int = 20
    grace_period: int = 60
    reference: str | None = None

    def __post_init__(self) -> None:
        def ints(name: str, values: Any, minimum: int) -> list[int]:
            if not isinstance(values, list) or not values or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
                raise ConfigError(f"{name}: expected a non-empty list of integers >= {minimum}, got {values!r}")
            return list(values)

        self.widths = sorted(set(ints("widths", self.widths, 1)))
        self.seeds = ints("seeds", self.seeds, 0)
        if not isinstance(self.lrs, list) or not self.lrs:
            raise ConfigError(f"lrs: expected a non-empty list of learning rates, got {self.lrs!r}")
        try:
            self.lrs = sorted({float(v) for v in self.lrs})
        except (TypeError, ValueError):
            raise ConfigError(f"lrs: expected numbers, got {self.lrs!r}") from None
        if self.lrs[0] <= 0:
            raise ConfigError(f"lrs: learning rates must be > 0, got {self.lrs!r}")
        bad = sorted(set(self.parametrizations) - {"sp", "mup"}) if isinstance(self.parametrizations, list) else [0]
        if bad or not self.parametrizations:
            raise ConfigError(f"parametrizations: expected a list of sp / mup, got {self.parametrizations!r}")
        if not isinstance(self.train, dict) or not isinstance(self.train.get("model"), dict):
            raise ConfigError("train.model: required (the base model at width N0, e.g. {arch: pt, hidden_size: 32})")
        for key in ("out_dir", "seed"):
            if key in self.train:
                raise ConfigError(f"train.{key}: set by lr-curves per run")
        for param in self.parametrizations:  # every width builds, before anything runs
            for width in self.widths:
                self.sweep_spec(param, width)
        # Read and checked once: a missing or incomparable reference fails before anything runs.
        self.reference_run = load_reference(self) if self.reference is not None else None

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out_dir).resolve() / 'studies.db'}"

    @property
    def base_width(self) -> int:
        return int(self.train["model"].get("hidden_size") or model_config_class(self.arch)().hidden_size)

    @property
    def arch(self) -> str:
        return self.train["model"].get("arch", "pt")

    def model_at(self, param: str, width: int) -> dict[str, Any]:
        """The base model grown to ``width`` (``with_width``: muP multipliers relative to N0)."""
        return model_at_width({**self.train["model"], "parametrization": param}, width)

    def sweep_spec(self, param: str, width: int) -> SweepSpec:
        return SweepSpec(search_space={"optim.lr": list(self.lrs), "seed": list(self.seeds)},
                         train=merge(self.train, {"model": self.model_at(param, width)}),
                         study_name=f"{param}-n{width}", out_dir=str(Path(self.out_dir) / f"{param}-n{width}"),
                         storage=self.storage_url, sampler="grid", n_trials=None,
                         heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period)


@dataclass(frozen=True)
class ReferenceRun:
    """What ``reference`` contributes: its rows for the parametrizations not run here, and its train section."""

    rows: list[dict[str, Any]]
    train: dict[str, Any]


def reference_rows(spec: LrCurvesSpec) -> list[dict[str, Any]]:
    return spec.reference_run.rows if spec.reference_run is not None else []


def shown_parametrizations(spec: LrCurvesSpec) -> list[str]:
    """The parametrizations in the table / plot: the ones run here, plus the reference's others."""
    shown = set(spec.parametrizations) | {r["parametrization"] for r in reference_rows(spec)}
    return [p for p in ("sp", "mup") if p in shown]


# Train keys that change only how a run is watched or stored, not its result.
_NON_RESULT_KEYS = {"threads", "progress", "log_interval", "checkpoint_interval", "tensorboard", "device"}


def _result_settings(train: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in _NON_RESULT_KEYS and k != "model"}


def _model_as_trained(model: dict[str, Any], param: str, width: int) -> dict[str, Any]:
    """The model a run at ``width`` trains, minus what its parametrization does not read: SP has no base
    width and no beta (the SP branches of pt_scales / transformer_scales ignore them), so an SP run is
    the same model whatever N0 or hidden_exponent the spec names."""
    grown = model_at_width({**model, "parametrization": param}, width)
    if param == "sp":
        grown = {k: v for k, v in grown.items() if not k.startswith("base_") and k != "hidden_exponent"}
    return grown


def _differing(here: dict[str, Any], there: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (there, here)} for every key whose values differ."""
    return {k: (there.get(k), here.get(k)) for k in sorted(set(here) | set(there)) if here.get(k) != there.get(k)}


def reference_differences(spec: LrCurvesSpec) -> dict[str, tuple[Any, Any]]:
    """Model fields that differ from the reference (the variant being judged), as {key: (reference, here)}."""
    def resolved(model: dict[str, Any]) -> dict[str, Any]:  # defaults filled in, so an unset key compares
        return model_at_width(model, int(model.get("hidden_size") or spec.base_width))

    return _differing(resolved(spec.train["model"]), resolved(spec.reference_run.train.get("model", {})))


def load_reference(spec: LrCurvesSpec) -> ReferenceRun:
    """Rows of ``spec.reference`` (a finished lr-curves out_dir) for the parametrizations not run here,
    after checking that they trained what this spec would: same data / budget / optimiser settings, and
    the same model at every shared width (for SP the base width and beta do not matter)."""
    ref = Path(spec.reference)
    csv_path, spec_path = ref / "results.csv", ref / "spec.yaml"
    for path in (csv_path, spec_path):
        if not path.is_file():
            raise ConfigError(f"reference: {path} not found (reference is the out_dir of a finished lr-curves run)")
    ref_spec = yaml.safe_load(spec_path.read_text()) or {}
    # A spec that names no precision was written before precision auto meant bf16 on a CPU with bf16
    # units: every such (CPU) record trained in fp32, and the bundled lr-curves specs name fp32.
    ref_train = {"precision": "fp32", **(ref_spec.get("train") or {})}
    here = {"precision": "fp32", **spec.train}
    differing = _differing(_result_settings(here), _result_settings(ref_train))
    if differing:
        raise ConfigError(f"reference: {ref} trained with different {', '.join('train.' + k for k in differing)} "
                          f"({', '.join(f'{there!r} there, {here!r} here' for there, here in differing.values())}); "
                          "its curves are not comparable")
    rows = [r for r in read_rows(csv_path, ROW_TYPES) if r["parametrization"] not in spec.parametrizations]
    shared = sorted(set(spec.widths) & {int(r["width"]) for r in rows})  # every width whose rows are reused
    for param in sorted({r["parametrization"] for r in rows}):
        for width in shared:
            differing = _differing(_model_as_trained(spec.train["model"], param, width),
                                   _model_as_trained(ref_train.get("model", {}), param, width))
            if differing:
                raise ConfigError(f"reference: its {param} model at width {width} differs from this spec's in "
                                  + ", ".join(f"{k} ({there!r} there, {here!r} here)"
                                              for k, (there, here) in differing.items()))
    # where the run lives (sweep.trial_config: <study out_dir>/trials/<key>); a row that is itself reused
    # from a reference already holds a path
    rows = [{**r, "run_dir": r["run_dir"] if "/" in r["run_dir"]
             else f"{ref}/{r['parametrization']}-n{r['width']}/trials/{r['run_dir']}"} for r in rows]
    return ReferenceRun(rows, ref_train)


def lr_curves_preset_names() -> list[str]:
    return specs.preset_names("lr-curves")


def load_lr_curves_spec(path: str | Path | None = None, preset: str | None = None, overrides=(),
                        **explicit: Any) -> LrCurvesSpec:
    return specs.load_spec(LrCurvesSpec, "lr-curves", path, preset, overrides, explicit)


# -- run and collect -------------------------------------------------------------------------------
def run_lr_curves(spec: LrCurvesSpec, *, train_fn=None, log=print) -> list[dict[str, Any]]:
    """Run every (width, parametrization) study (narrow first, so partial results are useful); then a
    second pass that waits for trials other workers still hold. Returns the rows and writes outputs."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs.write_spec(spec, out / "spec.yaml")
    plan = [(param, width) for width in spec.widths for param in spec.parametrizations]
    for wait in (False, True):
        for param, width in plan:
            run_sweep(spec.sweep_spec(param, width), train_fn=train_fn, log=log, wait=wait)
            write_outputs(collect(spec), spec)
    rows = collect(spec)
    write_outputs(rows, spec)
    return rows


def collect(spec: LrCurvesSpec) -> list[dict[str, Any]]:
    rows = []
    for width in spec.widths:
        for param in spec.parametrizations:
            study = open_study(spec.sweep_spec(param, width))
            for t in study.get_trials(deepcopy=False):
                if t.state.name not in ("COMPLETE", "FAIL") or "optim.lr" not in t.params:
                    continue
                if t.state.name == "FAIL" and not t.user_attrs.get("fail_reason"):
                    continue  # interrupted, re-queued
                rows.append({"parametrization": param, "width": width, "lr": t.params["optim.lr"],
                             "seed": t.params["seed"], "state": t.state.name,
                             "valid_loss": t.value if t.value is not None else float("nan"),
                             "fail_reason": t.user_attrs.get("fail_reason", ""), "run_dir": trial_key(t)})
    return rows + [r for r in reference_rows(spec) if r["width"] in spec.widths]


def curve_points(rows: list[dict[str, Any]], param: str, width: int) -> list[dict[str, Any]]:
    """Per lr: mean and std over seeds of the final valid loss (a diverged seed makes the point diverged)."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        if r["parametrization"] == param and r["width"] == width:
            by_lr.setdefault(r["lr"], []).append(r)
    points = []
    for lr in sorted(by_lr):
        runs = by_lr[lr]
        diverged = any(r["state"] == "FAIL" or not math.isfinite(r["valid_loss"]) for r in runs)
        seeds = (noise.Seeds(float("inf"), float("nan"), len(runs)) if diverged
                 else noise.Seeds.of(r["valid_loss"] for r in runs))
        points.append({"lr": lr, "mean": seeds.mean, "std": seeds.std, "seeds": seeds.n, "diverged": diverged})
    return points


def lr_grid(rows: list[dict[str, Any]], spec: LrCurvesSpec, param: str) -> list[float]:
    """``param``'s lr grid: this spec's for what it runs (also while runs are missing); for curves reused
    from a reference, the lrs they were run at (the reference may have used another grid)."""
    if param in spec.parametrizations:
        return spec.lrs
    return sorted({r["lr"] for r in rows if r["parametrization"] == param})


def best_lrs(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> list[dict[str, Any]]:
    table = []
    for param in shown_parametrizations(spec):
        grid = lr_grid(rows, spec, param)
        for width in spec.widths:
            points = [p for p in curve_points(rows, param, width) if math.isfinite(p["mean"])]
            if not points:
                continue
            best = min(points, key=lambda p: p["mean"])
            edge = best["lr"] in (grid[0], grid[-1])
            table.append({"parametrization": param, "width": width, "best_lr": best["lr"], "loss": best["mean"],
                          "std": best["std"], "grid_index": grid.index(best["lr"]), "at_grid_edge": edge,
                          "seeds": best["seeds"]})
    return table


def loss_at(rows: list[dict[str, Any]], param: str, width: int, lr: float) -> dict[str, Any] | None:
    return next((p for p in curve_points(rows, param, width) if p["lr"] == lr), None)


def verdicts(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> list[str]:
    """The acceptance questions, answered from the measurements."""
    table = best_lrs(rows, spec)
    lines = []
    for param in shown_parametrizations(spec):
        mine = [b for b in table if b["parametrization"] == param]
        if len(mine) < 2:
            continue
        idx = [b["grid_index"] for b in mine]
        spread = max(idx) - min(idx)
        ratio = max(b["best_lr"] for b in mine) / min(b["best_lr"] for b in mine)
        lines.append(f"- **{param}**: best lr moves over {spread} grid step(s) across widths "
                     f"{mine[0]['width']}..{mine[-1]['width']} (x{ratio:g}); "
                     + ("stays within one step." if spread <= 1 else "moves more than one step.")
                     + (" (an optimum at the grid edge: widen the grid.)" if any(b["at_grid_edge"] for b in mine)
                        else ""))
        losses = [b["loss"] for b in mine]
        monotone = all(b < a for a, b in itertools.pairwise(losses))
        lines.append(f"  - wider is better at the best lr: {'yes' if monotone else 'no'} "
                     "(" + ", ".join(f"{b['width']}: {b['loss']:.4f}" for b in mine) + ")")
    if {"sp", "mup"} <= set(shown_parametrizations(spec)):
        base = next((b for b in table if b["parametrization"] == "mup" and b["width"] == spec.widths[0]), None)
        if base is not None:
            n0 = f"N0 = {spec.widths[0]}" if spec.widths[0] == spec.base_width else f"N = {spec.widths[0]}"
            lines.append(f"- muP at the lr tuned at {n0} (lr {base['best_lr']:g}, transferred "
                         "unchanged) against SP at its own best lr per width (difference; noise = its standard "
                         f"error over seeds, real beyond {noise.K:g}x):")
            for width in spec.widths:
                mup = loss_at(rows, "mup", width, base["best_lr"])
                sp = next((b for b in table if b["parametrization"] == "sp" and b["width"] == width), None)
                if mup is None or sp is None or not math.isfinite(mup["mean"]):
                    continue
                d = noise.difference(noise.Seeds(mup["mean"], mup["std"], mup["seeds"]),
                                     noise.Seeds(sp["loss"], sp["std"], sp["seeds"]))
                if not d.estimated:
                    judged, verdict = "no seed-noise estimate: fewer than two seeds", "no verdict"
                else:
                    judged = f"noise {d.noise:.4f}, {d.ratio:.2f}x"
                    verdict = ("within seed noise" if not d.real else "muP better" if d.delta < 0 else "SP better")
                lines.append(f"  - N = {width}: muP {mup['mean']:.4f} vs SP {sp['loss']:.4f} (SP lr {sp['best_lr']:g}):"
                             f" {d.delta:+.4f} ({judged}) -> {verdict}")
    return lines


# -- outputs ---------------------------------------------------------------------------------------
def write_outputs(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> dict[str, Path]:
    out = Path(spec.out_dir)
    paths = {"csv": write_csv(out / "results.csv", rows, COLUMNS), "md": write_report(rows, spec),
             "png": out / "lr_curves.png"}
    if rows:
        plot(rows, spec, paths["png"])
    return paths


def write_report(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> Path:
    path = Path(spec.out_dir) / "best_lr.md"
    path.write_text(markdown(rows, spec))
    return path


def rerender(spec: LrCurvesSpec) -> list[dict[str, Any]]:
    """Rewrite ``best_lr.md`` from ``out_dir/results.csv`` (its rows already hold any reference rows);
    trains nothing and needs no studies, so a committed result follows a change to the verdict rule."""
    path = Path(spec.out_dir) / "results.csv"
    if not path.is_file():
        raise ConfigError(f"--rerender: {path} not found")
    rows = read_rows(path, ROW_TYPES)
    write_report(rows, spec)
    return rows


def markdown(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> str:
    c = config_from_dict(merge(spec.train, {"model": spec.model_at(spec.parametrizations[0], spec.widths[0])}))
    tokens = c.total_steps * c.batch_size * c.grad_accum * c.data.seq_len
    shown = shown_parametrizations(spec)
    lines = [f"# Learning-rate curves: {spec.arch}, widths {spec.widths}, {len(spec.seeds)} seed(s)", "",
             (f"{tokens:,} training tokens per run (batch {c.batch_size} x {c.data.seq_len}), lr grid "
              + ", ".join(f"{lr:g}" for lr in spec.lrs) + "; loss = final validation MLM loss, mean over seeds."), ""]
    if spec.reference_run is not None:
        changed = ", ".join(f"{k} = {here!r} (reference {there!r})"
                            for k, (there, here) in reference_differences(spec).items()) or "none"
        reused = ", ".join(p for p in shown if p not in spec.parametrizations)
        grids = [lr_grid(rows, spec, p) for p in shown if p not in spec.parametrizations]
        reused += "".join(f" (lr grid {', '.join(f'{lr:g}' for lr in g)})" for g in grids if g != spec.lrs)
        ref_seeds = sorted({r["seed"] for r in rows if r["parametrization"] not in spec.parametrizations})
        if ref_seeds != sorted(spec.seeds):  # the verdicts' noise then compares stds over other seed sets
            reused += f" (seeds {', '.join(map(str, ref_seeds))}; here {', '.join(map(str, spec.seeds))})"
        lines += [(f"{reused} rows from the reference run `{spec.reference}` "
                   "(same data, budget, optimiser and model at each shared width); "
                   f"model settings that differ here: {changed}."), ""]
    lines += ["| width | " + " | ".join(f"{p} best lr | {p} loss" for p in shown) + " |",
              "|---|" + "---|---|" * len(shown)]
    table = {(b["parametrization"], b["width"]): b for b in best_lrs(rows, spec)}
    for width in spec.widths:
        cells = []
        for p in shown:
            b = table.get((p, width))
            std = f" ± {b['std']:.4f}" if b and math.isfinite(b["std"]) else ""
            cells += [f"{b['best_lr']:g}", f"{b['loss']:.4f}{std}"] if b else ["-", "-"]
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    lines += ["", *verdicts(rows, spec), ""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], spec: LrCurvesSpec, path: str | Path) -> None:
    plt = pyplot()
    params = shown_parametrizations(spec)
    variant = ""
    if spec.reference_run is not None:
        variant = ", ".join(f"{k}={here}" for k, (_, here) in reference_differences(spec).items())
    fig, axes = plt.subplots(1, len(params), figsize=(5.2 * len(params), 4.2), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    finite = [r["valid_loss"] for r in rows if math.isfinite(r["valid_loss"])]
    best = min(finite) if finite else 0.0
    worst = max(finite) if finite else 1.0
    for ax, param in zip(axes[0], params, strict=True):
        for i, width in enumerate(spec.widths):
            pts = curve_points(rows, param, width)
            if not pts:
                continue
            color = cmap(i / max(1, len(spec.widths) - 1))
            ok = [p for p in pts if math.isfinite(p["mean"])]
            xs = np.log2([p["lr"] for p in ok])
            ys = np.array([p["mean"] for p in ok])
            es = np.nan_to_num(np.array([p["std"] for p in ok]))
            ax.plot(xs, ys, "-o", ms=3, color=color, label=f"N = {width}")
            ax.fill_between(xs, ys - es, ys + es, color=color, alpha=0.15)
            if len(ok):
                j = int(np.argmin(ys))
                ax.plot(xs[j], ys[j], "*", ms=11, color=color, mec="black", mew=0.5)
            for p in pts:
                if not math.isfinite(p["mean"]):
                    ax.plot(math.log2(p["lr"]), 0.97, "x", color=color, transform=ax.get_xaxis_transform())
        reused = spec.reference is not None and param not in spec.parametrizations
        ax.set_title(f"{spec.arch} / {param}" + (" (reference run)" if reused else f" ({variant})" if variant else ""))
        ax.set_xlabel("log2 learning rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation MLM loss (nats)")
    top = min(worst, best + 1.5)  # capped: a blown-up lr (loss >> unigram) would flatten the curves
    pad = 0.08 * max(top - best, 0.05)
    axes[0][0].set_ylim(best - pad, top + pad)
    labelled = next((ax for ax in reversed(axes[0]) if ax.get_legend_handles_labels()[0]), None)
    if labelled is not None:
        labelled.legend(fontsize=8, title="width (star: best lr)", title_fontsize=8)
    fig.suptitle(f"lr curves, {len(spec.seeds)} seed(s): mean ± std; x at top = diverged", fontsize=10)
    save_figure(fig, path)
