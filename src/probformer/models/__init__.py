"""Architecture registry: ``arch`` name -> (config class, model class)."""

from __future__ import annotations

from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM

MODEL_CLASSES = {
    "pt": (PTConfig, PTForMaskedLM),
}


def build_model(arch: str, **config_kwargs):
    if arch not in MODEL_CLASSES:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(sorted(MODEL_CLASSES))}")
    config_cls, model_cls = MODEL_CLASSES[arch]
    return model_cls(config_cls(**config_kwargs))
