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
    reference: null                # or a finished lr-curves out_dir, or a list of them (see below)

``lrs`` may also be one grid per parametrization, ``{sp: [...], mup: [...]}``, when their optima (or
the grids of the studies reused from references) differ.

``reference`` is how a muP *variant* (``parametrizations: [mup]`` and a changed model field, e.g.
``--set train.model.hidden_exponent=1.0``) is judged against the same SP curves without re-training
them: a reference's rows for the parametrizations not run here join the table, plot and verdicts.
Every reference must have trained the same data, token budget and optimiser settings, and the reused
rows the same model at every shared width (checked; an SP model does not depend on N0 or beta, so a
muP variant with another base width can reuse the SP curves too).

A reference also stands in for whole studies of the parametrizations run here: the study of
(parametrization, width) is read from the first reference (in list order) that trained the identical
run there (same settings, same model as trained at that width) and holds a finished row for every
(lr, seed) of this spec's grid; only those rows enter (a reference's other lrs and seeds do not).
Any other study is trained. :func:`plan` says which is which (``--dry-run``), ``best_lr.md`` names
the reused studies and where they came from. References are read once, when the spec is loaded:
they are finished results (committed ones, typically), not runs still in progress.

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
from probformer.experiments.runs import RESULT_KEYS, unused_keys
from probformer.experiments.spec import merge, model_at_width
from probformer.experiments.sweep import SweepSpec, open_study, run_sweep, trial_key
from probformer.figures import pyplot, save_figure

COLUMNS = ("parametrization", "width", "lr", "seed", "state", "valid_loss", "fail_reason", "run_dir")
ROW_TYPES = {"width": int, "lr": float, "seed": int, "valid_loss": float}  # results.csv read back


@dataclass
class LrCurvesSpec:
    widths: list[int]
    lrs: list[float] | dict[str, list[float]]  # one grid, or one per parametrization
    train: dict[str, Any]
    parametrizations: list[str] = field(default_factory=lambda: ["sp", "mup"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    out_dir: str = "runs/lr-curves"
    storage: str | None = None
    heartbeat_interval: int = 20
    grace_period: int = 60
    reference: str | list[str] | None = None

    def __post_init__(self) -> None:
        def ints(name: str, values: Any, minimum: int) -> list[int]:
            if not isinstance(values, list) or not values or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
                raise ConfigError(f"{name}: expected a non-empty list of integers >= {minimum}, got {values!r}")
            return list(values)

        def grid(name: str, values: Any) -> list[float]:
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{name}: expected a non-empty list of learning rates, got {values!r}")
            try:
                values = sorted({float(v) for v in values})
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: expected numbers, got {values!r}") from None
            if values[0] <= 0:
                raise ConfigError(f"{name}: learning rates must be > 0, got {values!r}")
            return values

        self.widths = sorted(set(ints("widths", self.widths, 1)))
        self.seeds = ints("seeds", self.seeds, 0)
        bad = sorted(set(self.parametrizations) - {"sp", "mup"}) if isinstance(self.parametrizations, list) else [0]
        if bad or not self.parametrizations:
            raise ConfigError(f"parametrizations: expected a list of sp / mup, got {self.parametrizations!r}")
        if isinstance(self.lrs, dict):  # one grid per parametrization
            unknown = sorted(set(self.lrs) - set(self.parametrizations), key=str)
            missing = [p for p in self.parametrizations if p not in self.lrs]
            if unknown or missing:  # a parametrization read only from a reference keeps that run's grid
                raise ConfigError(f"lrs: a grid per parametrization is {{sp: [...], mup: [...]}} with one for each "
                                  f"of {', '.join(self.parametrizations)}, got keys {', '.join(map(str, self.lrs))}")
            self.lrs = {p: grid(f"lrs.{p}", self.lrs[p]) for p in ("sp", "mup") if p in self.lrs}
        else:
            self.lrs = grid("lrs", self.lrs)
        refs = [self.reference] if isinstance(self.reference, str) else self.reference
        if refs is not None and (not isinstance(refs, list) or not refs or len(set(map(str, refs))) != len(refs)
                                 or not all(isinstance(r, str) and r for r in refs)):
            raise ConfigError("reference: expected a finished lr-curves out_dir or a list of distinct ones, "
                              f"got {self.reference!r}")
        if not isinstance(self.train, dict) or not isinstance(self.train.get("model"), dict):
            raise ConfigError("train.model: required (the base model at width N0, e.g. {arch: pt, hidden_size: 32})")
        for key in ("out_dir", "seed"):
            if key in self.train:
                raise ConfigError(f"train.{key}: set by lr-curves per run")
        for param in self.parametrizations:  # every width builds, before anything runs
            for width in self.widths:
                self.sweep_spec(param, width)
        # Read and checked once: a missing or incomparable reference fails before anything runs.
        self.reference_runs = [load_reference(self, path) for path in self.references]
        self.other_sources = _other_sources(self)
        self.studies = _plan_studies(self)

    @property
    def references(self) -> list[str]:
        """``reference`` as a list (one path, several, or none)."""
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)

    def grid(self, param: str) -> list[float]:
        """The lr grid ``param`` runs at here (``lrs``, or its own entry of a per-parametrization ``lrs``)."""
        return self.lrs[param] if isinstance(self.lrs, dict) else self.lrs

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
        return SweepSpec(search_space={"optim.lr": list(self.grid(param)), "seed": list(self.seeds)},
                         train=merge(self.train, {"model": self.model_at(param, width)}),
                         study_name=f"{param}-n{width}", out_dir=str(Path(self.out_dir) / f"{param}-n{width}"),
                         storage=self.storage_url, sampler="grid", n_trials=None,
                         heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period)


@dataclass(frozen=True)
class ReferenceRun:
    """One reference: its path (as the spec names it), its train section and its rows (``run_dir`` a path)."""

    path: str
    train: dict[str, Any]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Study:
    """One (parametrization, width) study of the spec: read from ``source`` (a reference; its rows of this
    spec's grid) or, with ``source`` None, trained here (``why``: why no reference could stand in)."""

    param: str
    width: int
    runs: int  # lrs x seeds of this spec's grid
    source: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.param}-n{self.width}"


def plan(spec: LrCurvesSpec) -> list[Study]:
    """Every study of the spec, narrow first, each either reused from a reference or trained here."""
    return [spec.studies[(param, width)] for width in spec.widths for param in spec.parametrizations]


def trained_studies(spec: LrCurvesSpec) -> list[Study]:
    return [s for s in plan(spec) if s.source is None]


def reused_studies(spec: LrCurvesSpec) -> list[Study]:
    return [s for s in plan(spec) if s.source is not None]


def plan_lines(spec: LrCurvesSpec) -> list[str]:
    """What a run of the spec would do, study by study, and the totals (``probformer lr-curves --dry-run``)."""
    lines = [f"{'study':<10} {'runs':>4}  what"]
    for study in plan(spec):
        what = f"reused from {study.source}" if study.source else "train" + (f" ({study.why})" if study.why else "")
        lines.append(f"{study.name:<10} {study.runs:>4}  {what}")
    for param, width in sorted(spec.other_sources, key=lambda key: (key[1], key[0])):
        if width in spec.widths:
            name = f"{param}-n{width}"
            lines.append(f"{name:<10} {'-':>4}  not run here: the rows of {spec.other_sources[(param, width)]}")
    trained, reused = trained_studies(spec), reused_studies(spec)
    lines.append(f"to train: {sum(s.runs for s in trained)} runs in {len(trained)} studies; read from references: "
                 f"{sum(s.runs for s in reused)} runs in {len(reused)} studies")
    return lines


def reference_rows(spec: LrCurvesSpec) -> list[dict[str, Any]]:
    """The references' rows for the parametrizations not run here (each (parametrization, width) from the
    first reference that holds it); the studies reused for parametrizations run here are not among them."""
    by_path = {ref.path: ref for ref in spec.reference_runs}
    return [r for (param, width), path in spec.other_sources.items() for r in by_path[path].rows
            if r["parametrization"] == param and r["width"] == width]


def shown_parametrizations(spec: LrCurvesSpec) -> list[str]:
    """The parametrizations in the table / plot: the ones run here, plus the references' others."""
    shown = set(spec.parametrizations) | {param for param, _ in spec.other_sources}
    return [p for p in ("sp", "mup") if p in shown]


def result_settings(train: dict[str, Any]) -> dict[str, Any]:
    """A train section's keys that make the result (runs.RESULT_KEYS, less what it leaves unread), without its
    model (compared per width)."""
    unused = unused_keys(train)
    return {k: v for k, v in train.items() if k in RESULT_KEYS and k != "model" and k not in unused}


def _model_as_trained(model: dict[str, Any], param: str, width: int) -> dict[str, Any]:
    """The model a run at ``width`` trains, minus what its parametrization does not read: SP has no base
    width and no beta (the SP branches of pt_scales / transformer_scales ignore them), so an SP run is
    the same model whatever N0 or hidden_exponent the spec names."""
    grown = model_at_width({**model, "parametrization": param}, width)
    if param == "sp":
        grown = {k: v for k, v in grown.items() if not k.startswith("base_") and k != "hidden_exponent"}
    return grown


def differing_settings(here: dict[str, Any], there: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (there, here)} for every key whose values differ."""
    return {k: (there.get(k), here.get(k)) for k in sorted(set(here) | set(there)) if here.get(k) != there.get(k)}


def reference_differences(spec: LrCurvesSpec, ref: ReferenceRun) -> dict[str, tuple[Any, Any]]:
    """Model fields that differ from the reference (the variant being judged), as {key: (reference, here)}."""
    def resolved(model: dict[str, Any]) -> dict[str, Any]:  # defaults filled in, so an unset key compares
        return model_at_width(model, int(model.get("hidden_size") or spec.base_width))

    return differing_settings(resolved(spec.train["model"]), resolved(ref.train.get("model", {})))


def recorded_train(spec_values: dict[str, Any]) -> dict[str, Any]:
    """The train section a finished lr-curves run (its spec.yaml's ``spec_values``) trained with. A spec
    that names no precision was written before precision auto meant bf16 on a CPU with bf16 units: every
    such (CPU) record trained in fp32, and the bundled lr-curves specs name fp32."""
    return {"precision": "fp32", **(spec_values.get("train") or {})}


def load_reference(spec: LrCurvesSpec, path: str) -> ReferenceRun:
    """A reference (a finished lr-curves out_dir) and all its rows, after checking that it trained what
    this spec would: same data / budget / optimiser settings (the models are compared per study)."""
    ref = Path(path)
    csv_path, spec_path = ref / "results.csv", ref / "spec.yaml"
    for file in (csv_path, spec_path):
        if not file.is_file():
            raise ConfigError(f"reference: {file} not found (reference is the out_dir of a finished lr-curves run)")
    ref_train = recorded_train(yaml.safe_load(spec_path.read_text()) or {})
    here = {"precision": "fp32", **spec.train}
    differing = differing_settings(result_settings(here), result_settings(ref_train))
    if differing:
        raise ConfigError(f"reference: {ref} trained with different {', '.join('train.' + k for k in differing)} "
                          f"({', '.join(f'{there!r} there, {here!r} here' for there, here in differing.values())}); "
                          "its curves are not comparable")
    # where the run lives (sweep.trial_config: <study out_dir>/trials/<key>); a row that is itself reused
    # from a reference already holds a path
    rows = [{**r, "run_dir": r["run_dir"] if "/" in r["run_dir"]
             else f"{ref}/{r['parametrization']}-n{r['width']}/trials/{r['run_dir']}"}
            for r in read_rows(csv_path, ROW_TYPES)]
    return ReferenceRun(path, ref_train, rows)


def _model_differences(spec: LrCurvesSpec, ref: ReferenceRun, param: str, width: int) -> dict[str, tuple[Any, Any]]:
    return differing_settings(_model_as_trained(spec.train["model"], param, width),
                              _model_as_trained(ref.train.get("model", {}), param, width))


def _other_sources(spec: LrCurvesSpec) -> dict[tuple[str, int], str]:
    """{(parametrization, width): reference path} for the parametrizations not run here: each from the first
    reference holding rows of it, whose model there must be this spec's (a ConfigError otherwise)."""
    sources: dict[tuple[str, int], str] = {}
    for ref in spec.reference_runs:
        held = sorted({(r["parametrization"], int(r["width"])) for r in ref.rows
                       if r["parametrization"] not in spec.parametrizations})
        mine = [(param, width) for param, width in held if (param, width) not in sources]
        shared = sorted(set(spec.widths) & {width for _, width in mine})  # every width whose rows are reused
        for param in sorted({param for param, _ in mine}):
            for width in shared:
                differing = _model_differences(spec, ref, param, width)
                if differing:
                    raise ConfigError(f"reference: its {param} model at width {width} differs from this spec's in "
                                      + ", ".join(f"{k} ({there!r} there, {here!r} here)"
                                                  for k, (there, here) in differing.items()))
        sources.update({key: ref.path for key in mine})
    return sources


def _finished(row: dict[str, Any]) -> bool:
    return row["state"] == "COMPLETE" or (row["state"] == "FAIL" and bool(row["fail_reason"]))


def _study_from(spec: LrCurvesSpec, ref: ReferenceRun, param: str, width: int) -> tuple[list[dict[str, Any]], str]:
    """The reference's rows standing in for this spec's (param, width) study (one per lr x seed of this
    spec's grid, lr written as the grid's), or no rows and why not."""
    held = [r for r in ref.rows if r["parametrization"] == param and r["width"] == width and _finished(r)]
    if not held:
        return [], f"{ref.path}: no {param} rows at N = {width}"
    differing = _model_differences(spec, ref, param, width)
    if differing:
        return [], f"{ref.path}: its {param} model at N = {width} differs in {', '.join(differing)}"
    rows, missing = [], []
    for lr in spec.grid(param):
        for seed in spec.seeds:
            row = next((r for r in held if r["seed"] == seed and math.isclose(r["lr"], lr, rel_tol=1e-9)), None)
            if row is None:
                missing.append(f"lr {lr:g} seed {seed}")
            else:
                rows.append({**row, "lr": lr})
    if missing:
        return [], f"{ref.path}: {param} at N = {width} lacks " + ", ".join(missing)
    return rows, ""


def _plan_studies(spec: LrCurvesSpec) -> dict[tuple[str, int], Study]:
    studies = {}
    for param in spec.parametrizations:
        for width in spec.widths:
            runs, whys = len(spec.grid(param)) * len(spec.seeds), []
            for ref in spec.reference_runs:
                rows, why = _study_from(spec, ref, param, width)
                if rows:
                    studies[(param, width)] = Study(param, width, runs, ref.path, rows)
                    break
                whys.append(why)
            else:
                studies[(param, width)] = Study(param, width, runs, why="; ".join(whys))
    return studies


def lr_curves_preset_names() -> list[str]:
    return specs.preset_names("lr-curves")


def load_lr_curves_spec(path: str | Path | None = None, preset: str | None = None, overrides=(),
                        **explicit: Any) -> LrCurvesSpec:
    return specs.load_spec(LrCurvesSpec, "lr-curves", path, preset, overrides, explicit)


# -- run and collect -------------------------------------------------------------------------------
def run_lr_curves(spec: LrCurvesSpec, *, train_fn=None, log=print) -> list[dict[str, Any]]:
    """Run every (width, parametrization) study not read from a reference (narrow first, so partial results
    are useful); then a second pass that waits for trials other workers still hold. Returns the rows and
    writes outputs."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs.write_spec(spec, out / "spec.yaml")
    for study in reused_studies(spec):
        log(f"study {study.name}: {len(study.rows)} runs read from the reference {study.source}")
    for wait in (False, True):
        for study in trained_studies(spec):
            run_sweep(spec.sweep_spec(study.param, study.width), train_fn=train_fn, log=log, wait=wait)
            write_outputs(collect(spec), spec)
    rows = collect(spec)
    write_outputs(rows, spec)
    return rows


def collect(spec: LrCurvesSpec) -> list[dict[str, Any]]:
    rows = []
    for width in spec.widths:
        for param in spec.parametrizations:
            reused = spec.studies[(param, width)]
            if reused.source is not None:
                rows += reused.rows
                continue
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
        return spec.grid(param)
    return sorted({r["lr"] for r in rows if r["parametrization"] == param})


def optimum(points: list[dict[str, Any]], grid: list[float]) -> dict[str, Any] | None:
    """A curve's best lr (lowest mean loss over seeds among the points that did not diverge), whether it
    sits at an end of its lr ``grid``, and how well the grid resolves it: the runner-up lr, its loss above
    the best, the seed noise of that difference and whether the difference is real by :mod:`noise`'s
    rule. None when every point diverged."""
    finite = sorted((p for p in points if math.isfinite(p["mean"])), key=lambda p: p["mean"])
    if not finite:
        return None
    best = finite[0]
    found = {"best_lr": best["lr"], "loss": best["mean"], "std": best["std"], "seeds": best["seeds"],
             "at_grid_edge": best["lr"] in (grid[0], grid[-1]),
             "runner_up_lr": math.nan, "runner_up_delta": math.nan, "noise": math.nan, "resolved": False}
    if len(finite) > 1:
        second = finite[1]
        d = noise.difference(noise.Seeds(second["mean"], second["std"], second["seeds"]),
                             noise.Seeds(best["mean"], best["std"], best["seeds"]))
        found.update(runner_up_lr=second["lr"], runner_up_delta=d.delta, noise=d.noise, resolved=d.real)
    return found


def resolution_line(optima: list[tuple[str, dict[str, Any]]], across: str) -> str:
    """One verdict line on whether each (label, :func:`optimum`) is resolved from its runner-up lr: a best
    lr within seed noise of its neighbour is known to about one grid step, not to the lr the table names."""
    loose = [(label, b) for label, b in optima if not b["resolved"]]
    if not loose:
        return f"  - every optimum is resolved: the runner-up lr is worse beyond seed noise at each {across}."
    described = []
    for label, b in loose:
        if not math.isfinite(b["runner_up_delta"]):
            described.append(f"{label} (one lr only)")
        elif not math.isfinite(b["noise"]):
            described.append(f"{label} (runner-up {b['runner_up_lr']:g}: no seed-noise estimate)")
        else:
            described.append(f"{label} (runner-up {b['runner_up_lr']:g}: +{b['runner_up_delta']:.4f}, "
                             f"{b['runner_up_delta'] / b['noise'] if b['noise'] else math.inf:.2f}x its noise "
                             f"{b['noise']:.4f})")
    return (f"  - optimum not resolved from the runner-up lr (within seed noise, the rule's {noise.K:g}x) at "
            + "; ".join(described) + ": known to about one step there.")


def best_lrs(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> list[dict[str, Any]]:
    table = []
    for param in shown_parametrizations(spec):
        grid = lr_grid(rows, spec, param)
        for width in spec.widths:
            found = optimum(curve_points(rows, param, width), grid)
            if found is None:
                continue
            table.append({"parametrization": param, "width": width, **found,
                          "grid_index": grid.index(found["best_lr"])})
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
        lines.append(resolution_line([(f"N = {b['width']}", b) for b in mine], "width"))
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


def listed_lrs(lrs: list[float]) -> str:
    """An lr grid as report text: ``0.01, 0.02, 0.04``."""
    return ", ".join(f"{lr:g}" for lr in lrs)


def markdown(rows: list[dict[str, Any]], spec: LrCurvesSpec) -> str:
    c = config_from_dict(merge(spec.train, {"model": spec.model_at(spec.parametrizations[0], spec.widths[0])}))
    tokens = c.total_steps * c.batch_size * c.grad_accum * c.data.seq_len
    shown = shown_parametrizations(spec)
    grid = (listed_lrs(spec.lrs) if not isinstance(spec.lrs, dict)
            else "; ".join(f"{p} {listed_lrs(spec.grid(p))}" for p in spec.parametrizations))
    lines = [f"# Learning-rate curves: {spec.arch}, widths {spec.widths}, {len(spec.seeds)} seed(s)", "",
             (f"{tokens:,} training tokens per run (batch {c.batch_size} x {c.data.seq_len}), lr grid "
              + grid + "; loss = final validation MLM loss, mean over seeds."), ""]
    for ref in spec.reference_runs:  # the rows of parametrizations not run here, per reference
        pairs = {key for key, path in spec.other_sources.items() if path == ref.path}
        params = [p for p in shown if any(p == param for param, _ in pairs)]
        if not params:
            continue
        mine = [r for r in rows if (r["parametrization"], r["width"]) in pairs]
        changed = ", ".join(f"{k} = {here!r} (reference {there!r})"
                            for k, (there, here) in reference_differences(spec, ref).items()) or "none"
        reused = ", ".join(params)
        # A reused parametrization's grid is named unless it is the one grid of this spec's header (a
        # per-parametrization lrs names only the parametrizations run here).
        grids = [sorted({r["lr"] for r in mine if r["parametrization"] == p}) for p in params]
        reused += "".join(f" (lr grid {listed_lrs(g)})" for g in grids if g != spec.lrs)
        ref_seeds = sorted({r["seed"] for r in mine})
        if ref_seeds != sorted(spec.seeds):  # the verdicts' noise then compares stds over other seed sets
            reused += f" (seeds {', '.join(map(str, ref_seeds))}; here {', '.join(map(str, spec.seeds))})"
        lines += [(f"{reused} rows from the reference run `{ref.path}` "
                   "(same data, budget, optimiser and model at each shared width); "
                   f"model settings that differ here: {changed}."), ""]
    if reused_studies(spec):
        def studies(chosen: list[Study]) -> str:
            groups: dict[tuple[str, str | None], list[int]] = {}
            for study in chosen:
                groups.setdefault((study.param, study.source), []).append(study.width)
            return "; ".join(f"{param} at N = {', '.join(map(str, widths))}" + (f" from `{source}`" if source else "")
                             for (param, source), widths in groups.items())

        trained = trained_studies(spec)
        lines += [("Studies read from a reference instead of trained (the identical run: same data, budget, "
                   "optimiser and model as trained at that width, and a finished run for every lr and seed of "
                   "this grid there; only this grid's runs enter): " + studies(reused_studies(spec)) + ". "
                   + (f"Trained here: {studies(trained)}." if trained else "Nothing was trained here.")), ""]
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


def draw_lr_curve(ax, points: list[dict[str, Any]], color, label: str) -> None:
    """One curve of :func:`curve_points`: mean valid loss against log2 lr with its seed std shaded, a star
    at the best lr, an x at the top for each diverged lr."""
    ok = [p for p in points if math.isfinite(p["mean"])]
    xs = np.log2([p["lr"] for p in ok])
    ys = np.array([p["mean"] for p in ok])
    es = np.nan_to_num(np.array([p["std"] for p in ok]))
    ax.plot(xs, ys, "-o", ms=3, color=color, label=label)
    ax.fill_between(xs, ys - es, ys + es, color=color, alpha=0.15)
    if len(ok):
        j = int(np.argmin(ys))
        ax.plot(xs[j], ys[j], "*", ms=11, color=color, mec="black", mew=0.5)
    for p in points:
        if not math.isfinite(p["mean"]):
            ax.plot(math.log2(p["lr"]), 0.97, "x", color=color, transform=ax.get_xaxis_transform())


def plot(rows: list[dict[str, Any]], spec: LrCurvesSpec, path: str | Path) -> None:
    plt = pyplot()
    params = shown_parametrizations(spec)
    variant = ""
    judged_against = [ref for ref in spec.reference_runs if ref.path in spec.other_sources.values()]
    if judged_against:
        variant = ", ".join(f"{k}={here}" for k, (_, here) in reference_differences(spec, judged_against[0]).items())
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
            draw_lr_curve(ax, pts, cmap(i / max(1, len(spec.widths) - 1)), f"N = {width}")
        reused = param not in spec.parametrizations
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
