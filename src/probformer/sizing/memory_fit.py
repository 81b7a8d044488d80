"""Training memory on one device: static state + activations, and the largest micro-batch that fits.

The static state is what AdamW training holds whatever the batch: fp32 weights, fp32 gradients and
AdamW's two fp32 moments, 4 + 4 + 8 = 16 bytes per parameter. bf16 autocast keeps the fp32 master
weights (it casts on the fly), so that is the same in both precisions; the casts themselves are the
activation estimate's fixed terms (:mod:`probformer.sizing.activation_memory`).

On top of the saved activations, backward needs the gradients of the layer it is differentiating:
counted as one more layer's (iteration's) activations per token. A ``margin`` of the device memory
is left free for what neither counts: the CUDA context, allocator fragmentation, temporaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from probformer.sizing.activation_memory import ActivationEstimate

ADAMW_STATE_BYTES = 16  # per parameter: fp32 weight 4 + fp32 gradient 4 + AdamW exp_avg, exp_avg_sq 4 + 4
DEFAULT_MARGIN = 0.10


@dataclass(frozen=True)
class MemoryFit:
    device_bytes: int
    margin: float  # fraction of device_bytes left free
    checkpointing: bool
    static_bytes: float  # weights, gradients, AdamW moments
    fixed_bytes: float  # activation terms that do not grow with the batch
    per_sequence_bytes: float  # saved activations + backward working set, one sequence of seq_len
    max_batch_size: int  # largest micro-batch (sequences) that fits; 0: not even one

    @property
    def usable_bytes(self) -> float:
        return self.device_bytes * (1.0 - self.margin)

    def bytes_at(self, batch_size: int) -> float:
        return self.static_bytes + self.fixed_bytes + batch_size * self.per_sequence_bytes


def fit_micro_batch(
    estimate: ActivationEstimate,
    num_params: int,
    device_bytes: int,
    *,
    checkpointing: bool,
    margin: float = DEFAULT_MARGIN,
) -> MemoryFit:
    """The largest number of sequences per micro-batch whose training step fits in ``device_bytes``."""
    if device_bytes < 1:
        raise ValueError(f"device memory must be a positive number of bytes, got {device_bytes!r}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    static = ADAMW_STATE_BYTES * num_params
    fixed = estimate.fixed(checkpointing)
    per_sequence = (estimate.per_token(checkpointing) + estimate.repeated_per_token()) * estimate.seq_len
    room = device_bytes * (1.0 - margin) - static - fixed
    max_batch = max(0, math.floor(room / per_sequence)) if per_sequence > 0 else 0
    return MemoryFit(device_bytes, margin, checkpointing, static, fixed, per_sequence, max_batch)
