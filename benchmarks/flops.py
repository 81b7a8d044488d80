"""FLOPs per training token, two ways: what the model needs, and what the implementation ran.

- **model FLOPs** (MFU's numerator): :func:`probformer.sizing.training_flops_per_token`, 6 x the
  multiply-adds of the matrix products the MLM loss needs, with the head at the scored (masked)
  fraction of positions. Every implementation of one model shares it (PT's reference, banded and
  fast kernels compute the same function), so model FLOP/s compares implementations by useful work.
  HF BERT is counted with the BERT formula like ours. The formula has every term our models run
  (tests check it against torch's FLOP counter); nothing is added here.
- **executed FLOPs**: torch's ``FlopCounterMode`` over one real forward + backward of the eager
  model on the benchmark batch. It sees the matrix products actually run, so it includes work the
  loss does not need (HF's head at every position; the reference kernel's K full n x n products per
  bucket, masked afterwards) and misses what runs as elementwise ops (the fast and banded kernels'
  near-bucket dot products on the diagonals, a few percent of PT's FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode
from transformers import PretrainedConfig

from probformer.sizing.budget import training_flops_per_token


def model_flops_per_token(arch: str, config: PretrainedConfig, seq_len: int, mask_fraction: float) -> float:
    """Training FLOPs per input token the model needs (matmuls, 6 x MACs; head at ``mask_fraction``)."""
    return training_flops_per_token(arch, config, seq_len, mask_fraction)


def executed_flops(step: Callable[[], None]) -> int:
    """Matrix-product FLOPs that ``step`` (a forward + backward) dispatches, as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
