"""Model families. :mod:`probformer.models.registry` owns them (one :class:`Architecture` entry per
family, reached through :func:`architecture`); these are its short forms."""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from probformer.models.registry import ARCHITECTURES, Architecture, architecture, architecture_of

MODEL_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    name: (arch.config_class, arch.model_class) for name, arch in ARCHITECTURES.items()
}


def model_classes(arch: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    entry = architecture(arch)
    return entry.config_class, entry.model_class


def build_model(arch: str, **config_kwargs) -> PreTrainedModel:
    """A freshly initialised model of family ``arch`` built from config fields."""
    return architecture(arch).build(**config_kwargs)


__all__ = ["ARCHITECTURES", "MODEL_CLASSES", "Architecture", "architecture", "architecture_of", "build_model",
           "model_classes"]
