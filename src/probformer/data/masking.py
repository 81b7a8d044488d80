"""MLM masking: BERT style (15%, 80/10/10) or 2023-PT style (30%, every chosen token -> [MASK])."""

from __future__ import annotations

from typing import Literal

import torch

from probformer.data.tokenization import MASK_ID, NUM_SPECIAL

MaskStyle = Literal["bert", "pt2023"]
MASK_STYLES = ("bert", "pt2023")
DEFAULT_MASK_PROB = {"bert": 0.15, "pt2023": 0.30}
IGNORE_INDEX = -100


def mask_tokens(
    ids: torch.Tensor, style: MaskStyle, mask_prob: float, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, labels); labels are -100 where nothing is scored. Special tokens are never chosen.

    At least one token per batch is scored, so the loss is always defined.
    """
    if style not in MASK_STYLES:
        raise ValueError(f"mask style must be one of {MASK_STYLES}, got {style!r}")
    ids = ids.long()
    maskable = ids >= NUM_SPECIAL
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & maskable
    if not chosen.any() and maskable.any():
        flat = maskable.flatten().nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    inputs = ids.clone()
    if style == "pt2023":
        inputs[chosen] = MASK_ID
        return inputs, labels
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[to_mask] = MASK_ID
    random_ids = torch.randint(NUM_SPECIAL, vocab_size, ids.shape, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels
