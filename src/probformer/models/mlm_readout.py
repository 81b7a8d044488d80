"""The MLM read-out shared by every architecture: logits everywhere, or only where a loss is scored.

Training reads the vocabulary logits out only at the scored (masked) positions, docs/design.md §8: the
N x V read-out is the largest matmul of a small model and 85% of its rows would be thrown away. A
Hugging Face user calling ``model(input_ids, labels=labels)`` expects ``logits`` of shape
(B, n, V) as from ``BertForMaskedLM``, so that is the default; the trainer asks for
``scored_logits_only=True`` and gets (num_scored, V), rows in ``labels != -100`` order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from probformer.data.masking import IGNORE_INDEX  # one label value for "not scored", set where masks are drawn


def mlm_readout(
    readout: Callable[[torch.Tensor], torch.Tensor],
    states: torch.Tensor,
    labels: torch.Tensor | None,
    scored_logits_only: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, loss)`` from final states (B, n, N); ``loss`` is None without labels.

    Cross-entropy (mean over scored positions) is computed in >= fp32 under autocast."""
    if labels is None:
        return readout(states), None
    scored = labels != IGNORE_INDEX
    if scored_logits_only:
        logits = readout(states[scored])  # (num_scored, V)
        scored_logits = logits
    else:
        logits = readout(states)  # (B, n, V)
        scored_logits = logits[scored]
    loss = F.cross_entropy(scored_logits.to(torch.promote_types(scored_logits.dtype, torch.float32)), labels[scored])
    return logits, loss
