"""Masked-token evaluation on fixed-mask batches, summed over every process."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

from probformer.data.batches import Batch
from probformer.data.masking import IGNORE_INDEX
from probformer.training.distributed import ProcessContext, all_reduce_sum, unwrap


@torch.no_grad()
def evaluate(wrapped: nn.Module, batches: list[Batch], device: torch.device,
             autocast: Callable[[], AbstractContextManager], unigram_logp: np.ndarray,
             context: ProcessContext | None = None) -> dict[str, float]:
    """Masked-token loss (nats), accuracy and perplexity; ``unigram_loss`` scores the same targets
    with train-split unigram frequencies (the context-free baseline).

    ``wrapped`` is the (possibly DDP/FSDP-wrapped) training objective. Each process scores every
    K-th batch and the sums are all-reduced; under FSDP every process runs every batch instead
    (a sharded forward is collective, so all processes must run the same number of them)."""
    context = context or ProcessContext()  # None: one process
    # Not through DDP's forward: it would sync buffers, a collective the uneven batch split cannot meet.
    module = wrapped if context.mode == "fsdp" else unwrap(wrapped)
    was_training = module.training
    module.eval()
    mine = batches if context.mode == "fsdp" else batches[context.rank::context.world_size]
    sums = torch.zeros(4, dtype=torch.float64)  # loss * tokens, correct, tokens, unigram loss
    for batch in mine:
        targets = batch.labels[batch.labels != IGNORE_INDEX]
        unigram = float(-unigram_logp[targets.numpy()].sum())
        batch = batch.to(device)
        with autocast():
            _, loss, logits = module(batch.input_ids, batch.attention_mask, batch.labels)
        sums += torch.tensor([float(loss) * len(targets), int((logits.argmax(-1).cpu() == targets).sum()),
                              len(targets), unigram], dtype=torch.float64)
    module.train(was_training)
    if context.mode != "fsdp":
        sums = all_reduce_sum(sums.to(device), context).cpu()
    total_loss, correct, count, unigram = sums.tolist()
    count = max(count, 1)
    loss = total_loss / count
    return {"loss": loss, "accuracy": correct / count, "perplexity": math.exp(min(loss, 50.0)),
            "unigram_loss": unigram / count, "tokens": int(sums[2])}
