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
    scored: float | torch.Tensor  # 1 if the step scored any token, else 0 (a device tensor when distributed)


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
    the gradient is the same for any split over processes and micro-batches.

    A micro-batch with no scored token (every token special: a corpus that is mostly [UNK]) adds
    nothing: one process skips it; under DDP / FSDP it still runs (its forward and backward are
    collective) with share 0, and its undefined mean loss (0 / 0) is left out of the step's."""
    optimizer.zero_grad(set_to_none=True)
    total = global_scored_tokens(micro_batches, context, device)
    loss_sum = torch.zeros((), device=device)
    for index, batch in enumerate(micro_batches):
        scored = batch.num_scored  # counted on the host, before the batch moves to the device
        if not scored and not context.distributed:
            continue
        share = scored / total if scored else 0.0  # exactly 1.0 on one process without accumulation
        with _gradient_sync(wrapped, context, enabled=index == len(micro_batches) - 1):
            batch = batch.to(device)
            with autocast():
                loss, ce, _ = wrapped(batch.input_ids, batch.attention_mask, batch.labels,
                                      token_share=share * context.world_size, penalty_share=1.0 / len(micro_batches))
            loss.backward()
        if scored:
            loss_sum = loss_sum + ce * share
    grad_norm = nn.utils.clip_grad_norm_(wrapped.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
        grad_norm = grad_norm.full_tensor()
    if grad_norm.device != device:  # no gradient at all (nothing scored): torch's 0 is on the CPU
        grad_norm = grad_norm.to(device)
    optimizer.step()
    scheduler.step()
    any_scored = (total > 0).to(torch.float64) if isinstance(total, torch.Tensor) else float(total > 0)
    return StepStats(loss=loss_sum, grad_norm=grad_norm, scored=any_scored)
