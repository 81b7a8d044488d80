"""probformer.data.tokenization: the special tokens' fixed ids in a trained WordPiece vocabulary."""

from __future__ import annotations

from conftest import synthetic_documents

from probformer.data.tokenization import (
    CLS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    train_wordpiece,
)


def test_special_token_ids():
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, NUM_SPECIAL) == (0, 1, 2, 3, 4, 5)
    tokenizer = train_wordpiece(synthetic_documents(10, 30), vocab_size=200)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected
    ids = tokenizer.encode(synthetic_documents(1, 20, seed=9)[0], add_special_tokens=False).ids
    assert min(ids) >= NUM_SPECIAL and max(ids) < tokenizer.get_vocab_size()
