"""Helpers shared by the architecture configs."""

from __future__ import annotations

from typing import TypeVar

from transformers import PretrainedConfig

C = TypeVar("C", bound=PretrainedConfig)

# Written by transformers into to_dict(); not constructor arguments of our configs.
_HF_METADATA = ("model_type", "transformers_version", "architectures")


def replace_config(config: C, **fields) -> C:
    """A new config of the same class with ``fields`` changed and everything else kept."""
    kwargs = {k: v for k, v in config.to_dict().items() if k not in _HF_METADATA}
    return type(config)(**{**kwargs, **fields})


def complete_label_maps(config: PretrainedConfig) -> None:
    """Fill ``label2id`` from ``id2label`` when only the latter was given (transformers 5 leaves it
    None; transformers 4 and the pipelines' users expect both)."""
    id2label = getattr(config, "id2label", None)
    if id2label and not getattr(config, "label2id", None):
        config.label2id = {label: int(i) for i, label in id2label.items()}
