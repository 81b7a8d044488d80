"""What the trainer differentiates: the model's loss normalised over the whole global batch.

The model is the masked LM, a token classifier or a sequence classifier; its loss is the mean
cross-entropy over its scored targets (masked tokens, words' first pieces, sequences), so one rule
serves all three. The loss of one optimizer step is  sum over every scored target of the step (all
micro-batches, all processes) of the cross-entropy, divided by the number of those targets, plus the optional 2023
ternary-norm penalty (docs/design.md §3). Each micro-batch contributes its share,
``mean_ce * local_tokens / global_tokens``, so K processes with micro-batches of B/K and gradient
accumulation give exactly the gradient of one process with batch B (DDP and FSDP average
gradients over processes, hence the factor ``world_size``).

The penalty is computed inside this module's forward, so that DDP and FSDP see every use of a
parameter (FSDP2 only gathers sharded weights for a forward).
"""

from __future__ import annotations

import torch
from torch import nn


class TrainingObjective(nn.Module):
    def __init__(self, model: nn.Module, ternary_norm_penalty: float = 0.0, scored_logits_only: bool = True):
        """``scored_logits_only``: the masked LM returns logits at its masked positions only (a (B, n,
        vocab) tensor would dominate memory); a task model's logits are small and always whole."""
        super().__init__()
        if ternary_norm_penalty > 0 and not hasattr(model, "ternary_norm"):
            raise ValueError("the ternary-norm penalty is PT's; this model has no ternary factors")
        self.model = model
        self.ternary_norm_penalty = ternary_norm_penalty
        self.model_kwargs = {"scored_logits_only": True} if scored_logits_only else {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                token_share: float | torch.Tensor = 1.0, penalty_share: float = 1.0):
        """(loss to backpropagate, mean cross-entropy of this micro-batch (detached), scored logits).

        ``token_share``: this micro-batch's scored targets / the step's global count, times world size.
        ``penalty_share``: 1 / (micro-batches per step), so the penalty counts once per step."""
        out = self.model(input_ids, attention_mask=attention_mask, labels=labels, **self.model_kwargs)
        loss = out.loss * token_share
        if self.ternary_norm_penalty > 0:
            loss = loss + (self.ternary_norm_penalty * penalty_share) * self.model.ternary_norm()
        return loss, out.loss.detach(), out.logits
