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


@pytest.mark.parametrize("style", ["bert", "pt2023"])
def test_the_default_layout_draws_exactly_what_it_always_drew(style):
    # Every committed number was measured with masks drawn before SpecialIds existed: probformer's own
    # layout, given explicitly or not, must give the same draws.
    from probformer.data.masking import DEFAULT_SPECIAL_IDS, SpecialIds

    ids = _ids_with_specials((8, 64), seed=4)
    plain = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(9))
    explicit = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(9),
                           SpecialIds.from_roles({"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}))
    assert torch.equal(plain[0], explicit[0]) and torch.equal(plain[1], explicit[1])
    assert SpecialIds(4, (4, 3, 2, 1, 0)) == DEFAULT_SPECIAL_IDS
    # pinned: draws of the code before SpecialIds existed (a change here changes every recorded number)
    inputs, labels = mask_tokens(torch.arange(5, 25).view(2, 10), style, 0.3, VOCAB, torch.Generator().manual_seed(0))
    assert (labels != IGNORE_INDEX).nonzero().tolist() == [[0, 2], [0, 3], [1, 2], [1, 3], [1, 4], [1, 8], [1, 9]]
    assert inputs.tolist() == [[5, 6, 4, 349 if style == "bert" else 4, 9, 10, 11, 12, 13, 14],
                               [15, 16, 4, 4, 4, 20, 21, 22, 4, 4]]


def test_another_layout_never_masks_nor_draws_its_special_ids():
    from probformer.data.masking import SpecialIds

    special = SpecialIds.from_roles({"pad": 100, "unk": 101, "cls": 102, "sep": 103, "mask": 104})
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 200, (64, 128), generator=g)
    ids[:, -10:] = 100  # padding
    inputs, labels = mask_tokens(ids, "bert", 0.3, 200, torch.Generator().manual_seed(1), special)
    chosen = labels != IGNORE_INDEX
    is_special = torch.isin(ids, torch.tensor([100, 101, 102, 103, 104]))
    assert not (chosen & is_special).any() and torch.equal(inputs[is_special], ids[is_special])
    assert 0.75 < (inputs[chosen] == 104).float().mean() < 0.85  # 80% of the chosen become [MASK] = 104
    replaced = chosen & (inputs != 104) & (inputs != ids)
    assert replaced.any() and not torch.isin(inputs[replaced], torch.tensor([100, 101, 102, 103, 104])).any()
    assert ((labels >= 0) & (labels < 5)).any()  # ids 0..4 are ordinary tokens here
    with pytest.raises(ValueError, match="the mask id 7 must be one of the special ids"):
        SpecialIds(7, (0, 1, 2))
