"""MLM masking: BERT style (15%, 80/10/10) or 2023-PT style (30%, every chosen token -> [MASK]).

The special-token layout is a parameter (:class:`SpecialIds`): probformer's own tokenizers put
``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0..4 (:data:`DEFAULT_SPECIAL_IDS`, what every call without
it uses), a pretrained tokenizer given to ``probformer prepare-data`` may put them anywhere. Special
tokens are never chosen and never drawn as a random replacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from probformer.data.tokenization import MASK_ID, NUM_SPECIAL

MaskStyle = Literal["bert", "pt2023"]
MASK_STYLES = ("bert", "pt2023")
DEFAULT_MASK_PROB = {"bert": 0.15, "pt2023": 0.30}
IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialIds:
    """The id that replaces a chosen token (``mask``), and the ids never chosen nor drawn as a random
    replacement (``special``: the tokenizer's special tokens, sorted)."""

    mask: int = MASK_ID
    special: tuple[int, ...] = tuple(range(NUM_SPECIAL))

    def __post_init__(self) -> None:
        object.__setattr__(self, "special", tuple(sorted({int(i) for i in self.special})))
        if self.mask not in self.special:
            raise ValueError(f"the mask id {self.mask} must be one of the special ids {self.special}")

    @classmethod
    def from_roles(cls, ids: Mapping[str, int]) -> SpecialIds:
        """From a role -> id mapping (``pad``, ``unk``, ``cls``, ``sep``, ``mask``: data/shards.py's
        ``special_ids``)."""
        return cls(int(ids["mask"]), tuple(int(i) for i in ids.values()))

    @property
    def leading(self) -> int | None:
        """n when the special ids are exactly 0..n-1 (probformer's layout), else None."""
        n = len(self.special)
        return n if self.special == tuple(range(n)) else None


DEFAULT_SPECIAL_IDS = SpecialIds()


def mask_tokens(
    ids: torch.Tensor, style: MaskStyle, mask_prob: float, vocab_size: int, generator: torch.Generator,
    special: SpecialIds = DEFAULT_SPECIAL_IDS, at_least_one: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, labels); labels are -100 where nothing is scored. Special tokens (``special``)
    are never chosen, so padding with a special id is never scored.

    ``at_least_one``: if no token was chosen, choose one, so that the loss of ``ids`` alone is defined
    (a whole batch). A caller that masks a batch one row at a time turns it off: forcing a token into
    every short row would raise its masking rate (a 5-token row: ~24% instead of 15%), and the step
    already leaves a micro-batch without scored tokens out (training/step.py). With the default layout
    (specials 0..n-1) the random draws are those of every earlier version, so batches are unchanged."""
    if style not in MASK_STYLES:
        raise ValueError(f"mask style must be one of {MASK_STYLES}, got {style!r}")
    ids = ids.long()
    leading = special.leading
    if leading is not None:
        maskable = ids >= leading
    else:
        maskable = ~torch.isin(ids, torch.tensor(special.special, dtype=torch.long))
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & maskable
    if at_least_one and not chosen.any() and maskable.any():
        flat = maskable.flatten().nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    inputs = ids.clone()
    if style == "pt2023":
        inputs[chosen] = special.mask
        return inputs, labels
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[to_mask] = special.mask
    if leading is not None:
        random_ids = torch.randint(leading, vocab_size, ids.shape, generator=generator)
    else:  # a uniform draw over the ids that are not special
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[[i for i in special.special if i < vocab_size]] = False
        choices = ordinary.nonzero().squeeze(1)
        random_ids = choices[torch.randint(len(choices), ids.shape, generator=generator)]
    inputs[to_random] = random_ids[to_random]
    return inputs, labels
