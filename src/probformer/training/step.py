"""One optimizer step: micro-batches, gradients synchronised once, clipping, AdamW, schedule.

Nothing here reads a value to the host: losses and gradient norms stay on the device and the
trainer reads them at log intervals (a host read per micro-step would stall the GPU's queue).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from probformer.data.batches import Batch
from probformer.training.distributed import ProcessContext, all_reduce_sum


@dataclass
class StepStats:
    loss: torch.Tensor  # this process's share of the step's global mean cross-entropy (all-reduce to get it)
    grad_norm: torch.Tensor  # global gradient norm before clipping


def _gradient_sync(wrapped: nn.Module, context: ProcessContext, enabled: bool) -> AbstractContextManager:
    """Synchronise gradients only after the last micro-batch of a step."""
    if context.mode == "ddp" and not enabled:
        return wrapped.no_sync()
    if context.mode == "fsdp":
        wrapped.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def global_scored_tokens(micro_batches: list[Batch], context: ProcessContext,
                         device: torch.device) -> float | torch.Tensor:
    """How many tokens the whole step scores, over every process (all-reduced, kept on the device)."""
    local = sum(b.num_scored for b in micro_batches)
    if not context.distributed:
        return float(local)
    return all_reduce_sum(torch.tensor(float(local), device=device), context)


def optimizer_step(
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: list[Batch],
    context: ProcessContext,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    grad_clip: float,
) -> StepStats:
    """Forward and backward every micro-batch (this process's rows), then one AdamW step.

    Each micro-batch's loss is weighted by its share of the step's scored tokens (objective.py), so
    the gradient is the same for any split over processes and micro-batches."""
    optimizer.zero_grad(set_to_none=True)
    total = global_scored_tokens(micro_batches, context, device)
    loss_sum = torch.zeros((), device=device)
    for index, batch in enumerate(micro_batches):
        share = batch.num_scored / total  # a float on one process: exactly 1.0 without accumulation
        with _gradient_sync(wrapped, context, enabled=index == len(micro_batches) - 1):
            batch = batch.to(device)
            with autocast():
                loss, ce, _ = wrapped(batch.input_ids, batch.attention_mask, batch.labels,
                                      token_share=share * context.world_size, penalty_share=1.0 / len(micro_batches))
            loss.backward()
        loss_sum = loss_sum + ce * share
    grad_norm = nn.utils.clip_grad_norm_(wrapped.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    return StepStats(loss=loss_sum, grad_norm=grad_norm)
