"""The parallelize step: activation checkpointing, then compile, then DDP or FSDP2, in that order.

The order is torchtitan's. The two model hooks only choose how the forward runs each layer /
iteration (``checkpoint(compiled_region, ...)``), so between them the order is convention; the
wrapper must come last, because DDP's gradient hooks and FSDP2's sharded parameters and all-gather
hooks belong on the modules the forward finally calls, compiled ones included, and the optimizer is
built from the wrapped module's parameters afterwards (training/build.py).

Checkpointing and compile are the models' own hooks (``enable_activation_checkpointing`` and
``compile_regions``: regional, one layer / iteration compiled once and called T times); the
wrappers are PyTorch's. The wrapper goes around the :class:`TrainingObjective`, so the loss and the
ternary-norm penalty run inside one wrapped forward (training/distributed.py says why).
"""

from __future__ import annotations

import torch
from torch import nn

from probformer.config import ConfigError, TrainConfig
from probformer.training.distributed import ProcessContext
from probformer.training.objective import TrainingObjective

# (config option, the model's method that applies it), in the order they must be applied.
MODEL_HOOKS = (("activation_checkpointing", "enable_activation_checkpointing"), ("compile", "compile_regions"))


def parallelize(objective: TrainingObjective, config: TrainConfig, context: ProcessContext,
                device: torch.device) -> nn.Module:
    """The objective ready to train: its model checkpointed and compiled as the config asks, then
    wrapped for this launch (DDP, FSDP2, or nothing for one process)."""
    apply_model_hooks(objective.model, config)
    return wrap(objective, context, device)


def apply_model_hooks(model: nn.Module, config: TrainConfig) -> None:
    for option, method in MODEL_HOOKS:
        if getattr(config, option):
            if not hasattr(model, method):
                raise ConfigError(f"{option}: {type(model).__name__} does not support it")
            getattr(model, method)()


def wrap(objective: nn.Module, context: ProcessContext, device: torch.device) -> nn.Module:
    """DDP or FSDP2 around the objective as ``context.mode`` says; the objective itself for one process."""
    if context.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if context.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Per-layer units where a model has distinct layers (BERT: only one layer's weights are
        # gathered at a time), then the root for the rest (embeddings, read-out, tied weights).
        # PT and UT reuse one set of weights at every iteration, so for them the root is the only
        # unit: their weights are gathered once per forward and once per backward.
        for layer in layer_units(objective):
            fully_shard(layer)
        fully_shard(objective)
        return objective
    return objective


def layer_units(module: nn.Module) -> list[nn.Module]:
    """The members of every ModuleList that hold parameters (a deep model's layers)."""
    return [child for m in module.modules() if isinstance(m, nn.ModuleList)
            for child in m if any(True for _ in child.parameters())]
