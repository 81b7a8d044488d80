"""The ``probformer compare`` spec: which budgets, architectures, seeds and tokens, and each
architecture's base model and tuned hyperparameters (docs/design.md section 7).

Checking a spec reads no file: the ``hparams_from`` files (a sweep's ``best.json``) are read when the
comparison is planned (:func:`arch_settings`), so a committed ``spec.yaml`` loads on a machine without
the sweep directories it once named.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from probformer.config import (
    ConfigError,
    OptimConfig,
    config_from_dict,
    model_config_class,
    model_fields,
    validate_model_section,
)
from probformer.experiments import spec as specs
from probformer.experiments.spec import merge
from probformer.models import ARCHITECTURES
from probformer.sizing import units

# TrainConfig keys compare sets itself (per run), so the shared ``train`` section may not.
RUN_OWNED_KEYS = ("model", "out_dir", "seed", "token_budget", "steps", "progress", "test_eval", "eval_texts")


@dataclass
class CompareSpec:
    budgets: list[int]  # total parameter budgets ('1M', '400k' or integers in YAML)
    token_budget: int  # training tokens per run, identical for every architecture, budget and seed
    archs: list[str] = field(default_factory=lambda: list(ARCHITECTURES))  # default: every family
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train: dict[str, Any] = field(default_factory=dict)  # shared partial TrainConfig (data, batch_size, eval...)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-arch base model: shape at N0, depth
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-arch {optim: ..., model: ...} tuned at N0
    hparams_from: dict[str, str] = field(default_factory=dict)  # per-arch JSON file, applied over hparams
    # Per-arch factor on the tuned lr, applied last (an lr check around a tuned point: 0.5 and 2 beside 1).
    lr_scale: dict[str, float] = field(default_factory=dict)
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
        for name in ("models", "hparams", "hparams_from", "hparams_source", "lr_scale"):
            section = getattr(self, name) or {}
            if not isinstance(section, dict) or set(section) - set(ARCHITECTURES):
                raise ConfigError(f"{name}: expected a mapping keyed by architecture ({', '.join(ARCHITECTURES)}), "
                                  f"got {section!r}")
            setattr(self, name, section)
        if not isinstance(self.seeds, list) or not self.seeds or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds) \
                or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected a non-empty list of distinct integers >= 0, got {self.seeds!r}")
        for arch, scale in self.lr_scale.items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
                raise ConfigError(f"lr_scale.{arch}: expected a positive number (the factor on the tuned lr), "
                                  f"got {scale!r}")
        self.lr_scale = {arch: float(scale) for arch, scale in self.lr_scale.items()}
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
            arch_settings(self, arch, read_files=False)  # model and optim keys; hparams_from is read when planning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or any(v not in ARCHITECTURES for v in value) \
            or len(set(value)) != len(value):
        raise ConfigError(f"{key}: expected a non-empty list of distinct names from {', '.join(ARCHITECTURES)}, "
                          f"got {value!r}")
    return value


def parse_count(value: Any, key: str = "count") -> int:
    """``'10M'``, ``'400k'``, ``123456`` or ``1e6`` -> an integer >= 1, or a ConfigError naming ``key``."""
    try:
        return units.parse_count(value)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


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


def arch_settings(spec: CompareSpec, arch: str, *, read_files: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base model fields, optim section) of ``arch``: models, then hparams, then hparams_from (read only
    with ``read_files``: a spec is checked without touching the files it names), then lr_scale."""
    layers = [{"model": spec.models.get(arch) or {}}, spec.hparams.get(arch) or {}]
    tuned_base = None
    path = spec.hparams_from.get(arch)
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"hparams_from.{arch}: expected the path of a sweep's best.json, got {path!r}")
    if path is not None and read_files:
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
    if arch in spec.lr_scale:
        optim["lr"] = optim.get("lr", OptimConfig.lr) * spec.lr_scale[arch]
    if tuned_base is not None:
        check_tuned_base(arch, base, tuned_base, spec.hparams_from[arch])
    return base, optim


def inlined_hparams(spec: CompareSpec) -> dict[str, Any]:
    """spec.yaml's hyperparameter keys with every hparams_from file merged into hparams (its path kept in
    hparams_source): the same runs, but the result directory no longer needs the sweep directories."""
    hparams = {arch: dict(values or {}) for arch, values in spec.hparams.items()}
    for arch, path in spec.hparams_from.items():
        tuned = read_hparams_file(path, arch)
        hparams[arch] = merge(hparams.get(arch) or {}, {k: tuned[k] for k in ("optim", "model") if tuned[k]})
    return {"hparams": hparams, "hparams_from": {}, "hparams_source": {**spec.hparams_source, **spec.hparams_from}}
