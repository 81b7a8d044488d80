"""Several processes on torch.distributed (launched by torchrun): DDP, or FSDP2 sharding.

Nothing here is home-made: process groups, DDP, ``fully_shard`` and the distributed-checkpoint
state-dict helpers are PyTorch's. What this module decides is *how the trainer uses them*:

- one process per device; ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK, a single process
  (no torchrun, or ``--nproc_per_node=1``) trains without any wrapper;
- NCCL on CUDA, gloo on CPU (the CPU tests run two gloo processes);
- the wrapper goes around :class:`~probformer.training.objective.TrainingObjective`, so the loss and
  the ternary-norm penalty run inside one wrapped forward; the optimizer is built AFTER wrapping,
  by parameter name (FSDP2 replaces the parameters by DTensor shards). Wrapping itself is the last
  part of training/parallelize.py;
- state dicts are gathered to full tensors (``full_state_dict``) so that checkpoints and exported
  models are one plain safetensors file, whichever way the run was sharded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ProcessContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"  # none (one process), ddp, fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start(mode: str, device_type: str) -> ProcessContext:
    """Join the process group torchrun prepared (no-op for one process)."""
    world = launched_world_size()
    if world <= 1:
        return ProcessContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        minutes = int(os.environ.get("PROBFORMER_DIST_TIMEOUT_MIN", "30"))
        dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    return ProcessContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                          local_rank=int(os.environ.get("LOCAL_RANK", "0")), mode="ddp" if mode == "auto" else mode)


def stop(context: ProcessContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    """The objective inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def all_reduce_sum(tensor: torch.Tensor, context: ProcessContext) -> torch.Tensor:
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: ProcessContext) -> None:
    if context.distributed:
        dist.barrier()


@contextmanager
def main_process_first(context: ProcessContext) -> Iterator[None]:
    """Rank 0 runs the block first, the others after it (e.g. rank 0 builds a cache the others then read)."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def broadcast_object(value, context: ProcessContext):
    """Rank 0's value on every rank (e.g. a decision read from disk by rank 0 only)."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value, context: ProcessContext) -> list:
    """Every rank's ``value``, by rank, on every rank (one process: ``[value]``)."""
    if not context.distributed:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def full_model_state(wrapped: nn.Module, context: ProcessContext) -> dict[str, torch.Tensor]:
    """The model's full state dict (keys without the objective's ``model.`` prefix), on CPU; every
    rank must call it (FSDP gathers shards), only rank 0's copy is complete."""
    objective = unwrap(wrapped)
    if context.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach().cpu() for k, v in objective.state_dict().items()}
    prefix = "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_model_state(wrapped: nn.Module, state: dict[str, torch.Tensor], context: ProcessContext) -> tuple[list, list]:
    """Load a full state dict (model keys) into the wrapped objective; returns (missing, unexpected)."""
    objective = unwrap(wrapped)
    prefixed = {f"model.{k}": v for k, v in state.items()}
    if context.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        result = set_model_state_dict(objective, prefixed, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        result = objective.load_state_dict(prefixed, strict=False)
    strip = lambda keys: [k[len("model."):] if k.startswith("model.") else k for k in keys]  # noqa: E731
    return strip(result.missing_keys), strip(result.unexpected_keys)


def optimizer_state(wrapped: nn.Module, optimizer: torch.optim.Optimizer, context: ProcessContext) -> dict:
    """Plain ``optimizer.state_dict()`` unless sharded; under FSDP the full (gathered) state keyed by
    parameter name. Every rank must call it."""
    if context.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return {"fsdp_full": get_optimizer_state_dict(unwrap(wrapped), optimizer,
                                                      options=StateDictOptions(full_state_dict=True, cpu_offload=True))}
    return optimizer.state_dict()


def load_optimizer_state(wrapped: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                         context: ProcessContext) -> None:
    sharded_checkpoint = "fsdp_full" in state
    if sharded_checkpoint != (context.mode == "fsdp"):
        raise ValueError("the checkpoint's optimizer state was written " + ("with" if sharded_checkpoint else "without")
                         + " distributed: fsdp; resume it the same way")
    if context.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        saved = [g.get("role") for g in state["fsdp_full"]["param_groups"]]
        if saved != [g.get("role") for g in optimizer.param_groups]:
            raise ValueError(f"the checkpoint's optimizer groups ({', '.join(map(str, saved))}) are not this "
                             "version's (a role was split off since: BERT / UT's FFN output, role ffn); resume it "
                             "without distributed: fsdp, which regroups by parameter name, or start the run again")
        set_optimizer_state_dict(unwrap(wrapped), optimizer, state["fsdp_full"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(regroup_optimizer_state(state, optimizer))


def regroup_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """``state`` (an optimizer state dict) laid out in ``optimizer``'s groups, each parameter's moments
    matched by name: a checkpoint written before a role was split off into its own group (BERT / UT's
    FFN output projection, role ``ffn``) still resumes. The groups' hyperparameters are this
    optimizer's (the trainer recomputes lr, eps and weight decay from the config on resume anyway)."""
    current = optimizer.state_dict()
    if [g.get("role") for g in state["param_groups"]] == [g.get("role") for g in current["param_groups"]]:
        return state
    saved: dict[str, int] = {}
    for group in state["param_groups"]:
        names = group.get("param_names")
        if names is None or len(names) != len(group["params"]):
            raise ValueError("the checkpoint's optimizer groups differ from this run's and carry no parameter "
                             "names to match them by")
        saved.update(zip(names, group["params"], strict=True))
    moments = {}
    for group in current["param_groups"]:
        missing = [name for name in group["param_names"] if name not in saved]
        if missing:
            raise ValueError(f"the checkpoint's optimizer has no state for {', '.join(missing[:3])}")
        for name, index in zip(group["param_names"], group["params"], strict=True):
            if saved[name] in state["state"]:
                moments[index] = state["state"][saved[name]]
    return {"state": moments, "param_groups": current["param_groups"]}
