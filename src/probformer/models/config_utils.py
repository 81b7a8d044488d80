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
