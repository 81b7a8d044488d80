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
per budget (:mod:`~probformer.experiments.compare_report`). ``--rerender`` rewrites ``results.md`` from
``results.csv`` and ``curves.csv`` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from probformer.config import (
    ConfigError,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    model_config_class,
    model_fields,
    validate_model_section,
)
from probformer.experiments import spec as specs
from probformer.experiments.compare_report import (
    aggregate,
    count_label,
    plot_learning_curves,
    plot_loss,
    render,
)
from probformer.experiments.curves import loss_keys, read_evaluations
from probformer.experiments.reports import add_rerender_argument, read_rows, write_csv
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
RUN_OWNED_KEYS = ("model", "out_dir", "seed", "token_budget", "steps", "progress", "test_eval", "eval_texts")
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
    # Where hparams.<arch> came from when compare inlined a hparams_from file into the spec.yaml it writes
    # (so a result directory reruns and re-renders without the sweep's); report text only.
    hparams_source: dict[str, str] = field(default_factory=dict)
    # name -> other text (a .conllu treebank, .txt, ...; path from cwd) every run scores at every evaluation:
    # the out-of-domain column. Compare owns it (not train.eval_texts) because it reports it.
    eval_texts: dict[str, str] = field(default_factory=dict)
    curve_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # of the training, for tables
    out_dir: str = "runs/compare"

    def __post_init__(self) -> None:
        if not isinstance(self.budgets, list) or not self.budgets:
            raise ConfigError(f"budgets: expected a non-empty list such as [1M, 4M, 16M], got {self.budgets!r}")
        self.budgets = sorted({parse_count(b, "budgets") for b in self.budgets})
        self.token_budget = parse_count(self.token_budget, "token_budget")
        self.archs = _names(self.archs, "archs")
        for name in ("models", "hparams", "hparams_from", "hparams_source"):
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
                              f"models / hparams / eval_texts / out_dir instead")
        try:
            config_from_dict(self.train)  # types and ranges, before anything runs
        except ConfigError as err:
            raise ConfigError(f"train.{err}") from None
        self.eval_texts = dict(self.eval_texts or {})
        config_from_dict({"eval_texts": self.eval_texts})  # names the metrics can carry, a path each
        if not isinstance(self.curve_fractions, list) or not self.curve_fractions or any(
                isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in self.curve_fractions):
            raise ConfigError(f"curve_fractions: expected a non-empty list of numbers in (0, 1], "
                              f"got {self.curve_fractions!r}")
        self.curve_fractions = sorted({float(f) for f in self.curve_fractions})
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
    """``{"optim": {...}, "model": {...}}`` from a sweep's best-point JSON, and ``base_model`` (the model
    the sweep trained) when it records one; other keys are ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"hparams_from.{arch}: {path} not found (a finished `probformer sweep` writes best.json "
                          f"in its out_dir; run the sweep first, or --set hparams_from.{arch}=PATH)")
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"hparams_from.{arch}: cannot read {path} as JSON ({err})") from None
    if not isinstance(loaded, dict) or not ({"optim", "model"} & set(loaded)):
        raise ConfigError(f"hparams_from.{arch}: {path} must hold a JSON object with 'optim' and/or 'model'")
    model = dict(loaded.get("model") or {})
    if model.pop("arch", arch) != arch:
        raise ConfigError(f"hparams_from.{arch}: {path} was tuned for arch {loaded['model']['arch']!r}")
    out = {"optim": dict(loaded.get("optim") or {}), "model": model}
    if isinstance(loaded.get("base_model"), dict):
        out["base_model"] = loaded["base_model"]
    return out


def check_tuned_base(arch: str, base: dict[str, Any], tuned: dict[str, Any], path: str) -> None:
    """The sweep behind ``hparams_from.<arch>`` must have trained this spec's base model (with the tuned
    values): muP transfers hyperparameters relative to the width and shape they were tuned at, so values
    tuned on another N0 would be silently wrong at every budget."""
    if tuned.get("arch", arch) != arch:
        raise ConfigError(f"hparams_from.{arch}: {path} was tuned for arch {tuned['arch']!r}")
    tuned = {k: v for k, v in tuned.items() if k != "arch"}
    cls = model_config_class(arch)
    try:
        ours, theirs = cls(**base), cls(**tuned)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hparams_from.{arch}: {path}: base_model {err}") from None
    differ = [k for k in sorted(model_fields(arch)) if getattr(ours, k, None) != getattr(theirs, k, None)]
    if differ:
        shown = ", ".join(f"{k} {getattr(theirs, k, None)!r} (models.{arch}: {getattr(ours, k, None)!r})"
                          for k in differ[:4])
        raise ConfigError(f"hparams_from.{arch}: {path} was tuned on another base model: {shown}; tune at "
                          f"models.{arch} or change models.{arch} to the model the sweep trained")


def arch_settings(spec: CompareSpec, arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base model fields, optim section) of ``arch``: models, then hparams, then hparams_from."""
    layers = [{"model": spec.models.get(arch) or {}}, spec.hparams.get(arch) or {}]
    tuned_base = None
    if arch in spec.hparams_from:
        layers.append(read_hparams_file(spec.hparams_from[arch], arch))
        tuned_base = layers[-1].pop("base_model", None)
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
    if tuned_base is not None:
        check_tuned_base(arch, base, tuned_base, spec.hparams_from[arch])
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
                    "eval_texts": spec.eval_texts,
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


def inlined_hparams(spec: CompareSpec) -> dict[str, Any]:
    """spec.yaml's hyperparameter keys with every hparams_from file merged into hparams (its path kept in
    hparams_source): the same runs, but the result directory no longer needs the sweep directories."""
    hparams = {arch: dict(values or {}) for arch, values in spec.hparams.items()}
    for arch, path in spec.hparams_from.items():
        tuned = read_hparams_file(path, arch)
        hparams[arch] = merge(hparams.get(arch) or {}, {k: tuned[k] for k in ("optim", "model") if tuned[k]})
    return {"hparams": hparams, "hparams_from": {}, "hparams_source": {**spec.hparams_source, **spec.hparams_from}}


def check_eval_texts(spec: CompareSpec) -> None:
    """Every eval text exists, before hours of training find out (paths are read from the cwd)."""
    for name, path in spec.eval_texts.items():
        if not Path(path).exists():
            raise ConfigError(f"eval_texts.{name}: {path} not found (UD treebanks: universaldependencies.org, e.g. "
                              f"github.com/UniversalDependencies/UD_English-EWT); --set eval_texts.{name}=PATH, or "
                              f"--set 'eval_texts={{}}' for no out-of-domain column")


def compare(spec: CompareSpec, out_dir: str | Path | None = None, *, command: str | None = None,
            log=None) -> list[dict[str, Any]]:
    """Train (or read back) every run of ``spec`` and write the results tables and plots; return the rows."""
    from probformer.training.trainer import corpus_for

    check_eval_texts(spec)
    out = Path(out_dir if out_dir is not None else spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or tqdm.write
    specs.write_spec(spec, out / "spec.yaml", out_dir=str(out), **inlined_hparams(spec))
    record_command(out, command)
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


def markdown(rows: list[dict[str, Any]], spec: CompareSpec, curves: list[dict[str, Any]] = ()) -> str:
    """results.md (:func:`probformer.experiments.compare_report.render`) with where each lr came from."""
    sources = []
    for arch in spec.archs:
        lr = arch_settings(spec, arch)[1].get("lr", OptimConfig.lr)
        source = spec.hparams_from.get(arch, spec.hparams_source.get(arch))
        where = (f"hparams_from {source}" if source else "spec hparams" if arch in spec.hparams
                 else "trainer defaults")
        sources.append(f"{arch} lr {lr:g} ({where})")
    return render(rows, list(curves), spec, "; ".join(sources))


def summary_table(out_dir: str | Path) -> str:
    """results.md without its preamble: the table, the verdicts and the along-training tables."""
    text = (Path(out_dir) / "results.md").read_text()
    return text[text.index("| arch"):]


# -- CLI -------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("compare", help="PT vs BERT vs UT at equal parameter budgets (results table + plots)",
                              description=__doc__.splitlines()[0])
    specs.add_spec_arguments(p, "compare", "budgets, token_budget, archs, seeds, train, models, hparams, "
                             "hparams_from, eval_texts, curve_fractions",
                             "--set hparams.pt.optim.lr=3e-3 --set eval_texts.ewt=path/to/en_ewt-ud-dev.conllu")
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
        for name, path in spec.eval_texts.items():
            print(f"eval_texts.{name}: {path} ({'found' if Path(path).exists() else 'NOT FOUND'})")
        return 0
    if args.rerender:
        record_command(spec.out_dir)
        _, curves = rerender(spec)
        print(summary_table(spec.out_dir))
        print(f"rewrote {Path(spec.out_dir)}/results.md from results.csv" + (" and curves.csv" if curves else ""))
        return 0
    try:
        rows = compare(spec)
    except KeyboardInterrupt:
        print("interrupted: finished runs and the last checkpoint are kept; rerun the same command to continue",
              file=sys.stderr)
        return 130
    print(summary_table(spec.out_dir))
    diverged = sum(r["status"] == "diverged" for r in rows)
    print(f"{len(rows)} runs ({diverged} diverged); results in {Path(spec.out_dir)}/results.md, results.csv, "
          "curves.csv, loss_vs_params.png, loss_vs_flops.png, learning_curves.png")
    return 0


__all__ = ["CompareSpec", "PlannedRun", "add_parser", "aggregate", "check_eval_texts", "compare", "count_label",
           "execute", "load_spec", "markdown", "parse_count", "plan_runs", "plot_learning_curves", "plot_loss",
           "rerender", "run_from_args", "spec_from_dict", "write_outputs"]
