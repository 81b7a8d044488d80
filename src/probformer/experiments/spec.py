"""Experiment specs: the YAML files behind ``probformer sweep / lr-curves / transfer / compare``.

A spec is one dataclass per command (``SweepSpec``, ``LrCurvesSpec``, ``TransferSpec``, ``CompareSpec``);
its fields are the spec's keys, the fields without a default are the required ones, and most hold a
``train:`` section, a partial :class:`~probformer.config.TrainConfig` checked by the training config's
own code. Values come from, later wins: a bundled preset (``experiments/specs/<command>-*.yaml``), a
YAML file (``--config``), ``key=value`` overrides (``--set train.threads=1``), then the command's own
flags (``--out-dir`` ...). A wrong key is a :class:`~probformer.config.ConfigError` naming it.

Every command writes its resolved spec as ``spec.yaml`` next to its outputs (:func:`write_spec`), and
reads another command's back with :func:`read_spec` (transfer reads a sweep's), so a result directory
says what made it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from probformer.config import ConfigError, apply_overrides, model_config_class, model_fields, read_yaml
from probformer.config import merge_sections as merge  # one deep merge of sections for configs and specs

SpecT = TypeVar("SpecT")
SPECS_PACKAGE = "probformer.experiments.specs"

__all__ = ["load_spec", "merge", "model_at_width", "preset_names", "read_spec",
           "spec_from_values", "spec_values", "write_spec"]


def preset_names(command: str) -> list[str]:
    """Bundled specs of ``command`` (``sweep``, ``lr-curves`` ...): ``specs/<command>-*.yaml``, by name."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(SPECS_PACKAGE).iterdir()
                  if p.name.startswith(f"{command}-") and p.name.endswith(".yaml"))


def required_keys(cls: type) -> list[str]:
    """The spec's fields without a default: what a spec must name."""
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def spec_from_values(cls: type[SpecT], command: str, values: Mapping[str, Any]) -> SpecT:
    """``cls(**values)`` after checking that every key is a field and every required one is given."""
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown {command} key; allowed: {', '.join(sorted(allowed))}")
    missing = [k for k in required_keys(cls) if values.get(k) is None]
    if missing:
        raise ConfigError(f"{missing[0]}: required (give --config spec.yaml or --preset "
                          f"{' / '.join(preset_names(command)) or '...'})")
    return cls(**values)


def load_spec(cls: type[SpecT], command: str, path: str | Path | None = None, preset: str | None = None,
              overrides: Sequence[str] = (), explicit: Mapping[str, Any] | None = None) -> SpecT:
    """A bundled preset, then a YAML file, then ``key=value`` overrides, then the ``explicit`` values
    (command-line flags) that are not None; later wins."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in preset_names(command):
            raise ConfigError(f"{command} preset {preset!r} not found; available: {', '.join(preset_names(command))}")
        values = read_yaml(resources.files(SPECS_PACKAGE) / f"{preset}.yaml")
    if path is not None:
        values = merge(values, read_yaml(path))
    apply_overrides(values, list(overrides))
    values.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return spec_from_values(cls, command, values)


def spec_values(spec: Any) -> dict[str, Any]:
    """A spec's fields as plain YAML-safe values (paths and other objects as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(spec), default=str))


def write_spec(spec: Any, path: str | Path, **updates: Any) -> Path:
    """``spec.yaml``: the resolved spec (fields in declaration order), ``updates`` over its values."""
    path = Path(path)
    path.write_text(yaml.safe_dump({**spec_values(spec), **updates}, sort_keys=False))
    return path


def read_spec(cls: type[SpecT], command: str, path: str | Path) -> SpecT:
    """A spec written by :func:`write_spec` (checked like a loaded one)."""
    return spec_from_values(cls, command, read_yaml(path))


def model_at_width(model: dict[str, Any], width: int) -> dict[str, Any]:
    """A model section (``arch`` + fields, at its base width N0) grown to ``width`` with the config's
    ``with_width``: the same family, muP multipliers relative to N0 (the lr-curves and transfer rule)."""
    arch = model.get("arch", "pt")
    fields = {k: v for k, v in model.items() if k != "arch"}
    try:
        base = model_config_class(arch)(**fields)
        grown = base.with_width(width) if width != base.hidden_size else base
    except (TypeError, ValueError) as err:
        raise ConfigError(f"widths: {arch} at width {width}: {err}") from None
    return {"arch": arch, **{k: getattr(grown, k) for k in model_fields(arch) if hasattr(grown, k)}}
