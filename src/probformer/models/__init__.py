"""Architecture registry: ``arch`` name -> (config class, model class)."""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.bert.modeling_bert import BertForMLM
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM
from probformer.models.ut.configuration_ut import UniversalTransformerConfig
from probformer.models.ut.modeling_ut import UniversalTransformerForMLM

MODEL_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "pt": (PTConfig, PTForMaskedLM),
    "bert": (ProbformerBertConfig, BertForMLM),
    "ut": (UniversalTransformerConfig, UniversalTransformerForMLM),
}


def model_classes(arch: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    if arch not in MODEL_CLASSES:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(sorted(MODEL_CLASSES))}")
    return MODEL_CLASSES[arch]


def build_model(arch: str, **config_kwargs) -> PreTrainedModel:
    """A freshly initialised model of family ``arch`` built from config fields."""
    config_cls, model_cls = model_classes(arch)
    return model_cls(config_cls(**config_kwargs))


__all__ = ["MODEL_CLASSES", "build_model", "model_classes"]
