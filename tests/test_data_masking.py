"""probformer.data.masking: BERT-style (80/10/10) and PT-2023-style MLM masking, seeded."""

from __future__ import annotations

import pytest
import torch

from probformer.data.masking import IGNORE_INDEX, mask_tokens
from probformer.data.tokenization import CLS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SEP_ID, UNK_ID

VOCAB = 1000


def _ids_with_specials(shape=(64, 512), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, VOCAB, shape, generator=g)
    ids[:, 0] = CLS_ID
    ids[:, -1] = SEP_ID
    ids[::3, 100:140] = PAD_ID
    ids[1::4, 7] = UNK_ID
    ids[2::5, 9] = MASK_ID
    return ids


def test_bert_masking_statistics():
    ids = _ids_with_specials()
    inputs, labels = mask_tokens(ids, "bert", 0.15, VOCAB, torch.Generator().manual_seed(1))
    maskable = ids >= NUM_SPECIAL
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~maskable).any()  # special tokens are never chosen
    torch.testing.assert_close(inputs[~maskable], ids[~maskable], rtol=0, atol=0)
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.15) < 0.01  # std ~0.002
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # only chosen tokens change
    n = chosen.sum().item()
    as_mask = (inputs[chosen] == MASK_ID).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    replaced = ((inputs[chosen] != MASK_ID) & (inputs[chosen] != ids[chosen])).sum().item() / n
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 and abs(replaced - 0.1) < 0.03  # std ~0.006
    random_ids = inputs[chosen & (inputs != MASK_ID)]
    assert random_ids.min() >= NUM_SPECIAL and random_ids.max() < VOCAB  # random replacements are real tokens
    assert inputs.dtype == labels.dtype == torch.long


def test_pt2023_masking_masks_thirty_percent_with_mask_token():
    ids = _ids_with_specials(seed=1)
    inputs, labels = mask_tokens(ids, "pt2023", 0.30, VOCAB, torch.Generator().manual_seed(2))
    maskable = ids >= NUM_SPECIAL
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~maskable).any()
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.30) < 0.015
    assert torch.all(inputs[chosen] == MASK_ID) and torch.equal(inputs[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])


@pytest.mark.parametrize("style", ["bert", "pt2023"])
def test_masking_is_seeded_and_scores_at_least_one_token(style):
    ids = _ids_with_specials((4, 32), seed=3)
    a = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for seed in range(20):
        short = torch.tensor([[CLS_ID, 17, 23, SEP_ID, PAD_ID]])
        _inputs, labels = mask_tokens(short, style, 1e-6, VOCAB, torch.Generator().manual_seed(seed))
        scored = (labels != IGNORE_INDEX).nonzero()
        assert len(scored) == 1 and scored[0, 1].item() in (1, 2)
    with pytest.raises(ValueError, match="mask style"):
        mask_tokens(ids, "gpt", 0.2, VOCAB, torch.Generator())
