"""probformer.data.sentence_rows: first-piece label alignment with a real WordPiece tokenizer, chunking and
truncation with one counted warning, padded batches that never mix sentences in a row, and seeded,
resumable length-bucketed batching."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_words

from probformer.data.errors import DataError, DataWarning
from probformer.data.masking import IGNORE_INDEX
from probformer.data.sentence_rows import (
    BucketedStream,
    Row,
    collate,
    encode_rows,
    eval_batches,
    sentence_rows,
    token_rows,
    word_pieces,
    word_predictions,
)
from probformer.data.task_files import LabelledText, LabelSet, TaggedSentence
from probformer.data.tokenization import CLS_ID, PAD_ID, SEP_ID, UNK_ID, train_wordpiece

X = IGNORE_INDEX
TEXTS = ["the cat sat on the mat", "the dog sat", "cats and dogs"]


@pytest.fixture(scope="module")
def char_tokenizer():
    """A WordPiece tokenizer trained with no merges: every word is its first letter then ``##`` letters,
    so pieces can be written down by hand."""
    return train_wordpiece(TEXTS, vocab_size=0)


@pytest.fixture(scope="module")
def word_tokenizer():
    """A WordPiece tokenizer with merges, trained on synthetic sentences."""
    rng = random.Random(0)
    vocab = synthetic_words(60)
    return train_wordpiece([" ".join(rng.choices(vocab, k=12)) for _ in range(200)], vocab_size=150)


def synthetic_sentences(n: int, seed: int = 0, max_words: int = 30) -> list[TaggedSentence]:
    rng = random.Random(seed)
    vocab = synthetic_words(60)
    out = []
    for _ in range(n):
        words = rng.choices(vocab, k=rng.randint(1, max_words))
        out.append(TaggedSentence(words, [rng.choice("ABC") for _ in words]))
    return out


def ids(tokenizer, *pieces: str) -> list[int]:
    found = [tokenizer.token_to_id(p) for p in pieces]
    assert None not in found
    return found


# -- alignment -----------------------------------------------------------------------------------------------
def test_first_piece_alignment_by_hand(char_tokenizer):
    tok = char_tokenizer
    # "sat-on": the pre-tokenizer splits it (its "-" is unknown); a zero-width space has no pieces -> [UNK]
    sentence = TaggedSentence(["The", "cats", "\u200b", "sat-on"], ["DET", "NOUN", "X", "VERB"])
    labels = LabelSet(("DET", "NOUN", "VERB", "X"))
    (row,) = token_rows([sentence], tok, labels, max_len=32, prefix_ids=(CLS_ID,), suffix_ids=(SEP_ID,))
    assert row.input_ids.tolist() == [CLS_ID, *ids(tok, "t", "##h", "##e", "c", "##a", "##t", "##s"), UNK_ID,
                                      *ids(tok, "s", "##a", "##t"), UNK_ID, *ids(tok, "o", "##n"), SEP_ID]
    assert row.labels.tolist() == [X, 0, X, X, 1, X, X, X, 3, 2, X, X, X, X, X, X]
    assert row.word_positions.tolist() == [1, 4, 8, 9] and (row.example, row.first_word) == (0, 0)
    (bare,) = token_rows([sentence], tok, labels, max_len=32)  # PT with ROOT: no tokens around the words
    assert bare.input_ids.tolist() == row.input_ids.tolist()[1:-1] and bare.word_positions.tolist() == [0, 3, 7, 8]


def test_each_word_is_tokenised_on_its_own(word_tokenizer):
    sentences = synthetic_sentences(20, max_words=8)
    pieces = word_pieces(word_tokenizer, [s.words for s in sentences])
    for sentence, per_word in zip(sentences, pieces, strict=True):
        assert per_word == [word_tokenizer.encode(w, add_special_tokens=False).ids for w in sentence.words]
    assert any(len(p) > 1 for per_word in pieces for p in per_word)  # some words have several pieces


def test_truncating_or_padding_tokenizer_is_not_obeyed(word_tokenizer):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(word_tokenizer.to_str())
    tok.enable_truncation(2)
    tok.enable_padding(length=50)
    sentences = synthetic_sentences(5, max_words=8)
    labels = LabelSet(("A", "B", "C"))
    assert [r.input_ids.tolist() for r in token_rows(sentences, tok, labels, 64)] == \
        [r.input_ids.tolist() for r in token_rows(sentences, word_tokenizer, labels, 64)]
    assert tok.truncation is not None  # the caller's tokenizer is left as it was


def test_word_predictions_rejoin_chunks(word_tokenizer):
    sentences = synthetic_sentences(30, seed=1)
    labels = LabelSet(("A", "B", "C"))
    with pytest.warns(DataWarning):
        rows = token_rows(sentences, word_tokenizer, labels, max_len=12)
    assert len(rows) > len(sentences)
    gold = [[labels.label2id[t] for t in s.tags] for s in sentences]
    padded = [np.concatenate([r.labels, np.full(3, -7)]) for r in rows]  # predictions may run past the row
    assert word_predictions(rows, padded) == gold
    with pytest.raises(ValueError, match="order"):
        word_predictions(rows[1:] + rows[:1], padded)


def test_unseen_label_while_encoding_names_file_and_line(char_tokenizer):
    sentence = TaggedSentence(["a", "b"], ["O", "B-x"], lines=[4, 5])
    with pytest.raises(DataError, match=r"^dev.conll:5: label 'B-x' does not occur in train.conll"):
        token_rows([sentence], char_tokenizer, LabelSet(("O",), "train.conll"), 16, source="dev.conll")
    with pytest.raises(DataError, match=r"^dev.tsv:9: label 'z'"):
        sentence_rows([LabelledText("a b", "z", 9)], char_tokenizer, LabelSet(("y",)), 16, source="dev.tsv")


# -- long sentences --------------------------------------------------------------------------------------------
def test_long_sentences_are_split_at_word_boundaries_with_one_counted_warning(char_tokenizer):
    labels = LabelSet(("A", "B"))
    sentences = [TaggedSentence(["cat", "dog", "sat", "on", "the", "mat"], list("ABABAB")),  # 17 pieces
                 TaggedSentence(["cat"], ["A"]),
                 TaggedSentence(["the", "catsanddogs", "sat"], ["A", "B", "A"])]  # an 11-piece word
    with pytest.warns(DataWarning) as caught:
        rows = token_rows(sentences, char_tokenizer, labels, max_len=8, prefix_ids=(CLS_ID,), source="train.conll")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("train.conll: 2 of 3 sentences have more than max_len=8 pieces (7 after 1")
    assert "split into 6 rows" in message and "1 single words longer than that were cut to their first 7" in message
    assert [(r.example, r.first_word, len(r.word_positions)) for r in rows] == \
        [(0, 0, 2), (0, 2, 2), (0, 4, 2), (1, 0, 1), (2, 0, 1), (2, 1, 1), (2, 2, 1)]
    assert all(len(r) <= 8 and r.input_ids[0] == CLS_ID for r in rows)
    assert rows[5].input_ids.tolist()[1:] == ids(char_tokenizer, "c", "##a", "##t", "##s", "##a", "##n", "##d")
    assert word_predictions(rows, [r.labels for r in rows]) == [[0, 1, 0, 1, 0, 1], [0], [0, 1, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(token_rows(sentences, char_tokenizer, labels, max_len=17)) == 3  # nothing to split: no warning
    with pytest.raises(ValueError, match="no room"):
        token_rows(sentences, char_tokenizer, labels, max_len=2, prefix_ids=(CLS_ID,), suffix_ids=(SEP_ID,))


def test_long_texts_are_truncated_with_one_counted_warning(char_tokenizer):
    labels = LabelSet(("0", "1"))
    texts = [LabelledText("the cat sat", "1"), LabelledText("a", "0"), LabelledText("cats and dogs", "0")]
    with pytest.warns(DataWarning) as caught:
        rows = sentence_rows(texts, char_tokenizer, labels, max_len=6, prefix_ids=(CLS_ID,), source="sst.tsv")
    assert len(caught) == 1
    assert str(caught[0].message).startswith("sst.tsv: 2 of 3 texts have more than max_len=6 pieces (5 after 1")
    assert rows[0].input_ids.tolist() == [CLS_ID, *ids(char_tokenizer, "t", "##h", "##e", "c", "##a")]
    assert rows[1].input_ids.tolist() == [CLS_ID, *ids(char_tokenizer, "a")]
    assert [int(r.labels) for r in rows] == [1, 0, 0] and all(r.labels.ndim == 0 for r in rows)
    assert [r.example for r in rows] == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(encode_rows(texts, char_tokenizer, labels, max_len=64)) == 3


# -- batches -----------------------------------------------------------------------------------------------------
def test_collate_pads_each_row_on_its_own():
    a = Row(np.array([5, 6, 7]), np.array([1, X, 0]), 0, 0, np.array([0, 2]))
    b = Row(np.array([8]), np.array([2]), 1, 0, np.array([0]))
    batch = collate([a, b])
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[1, X, 0], [2, X, X]] and batch.num_scored == 3
    assert collate([a, b], pad_to_multiple_of=8).input_ids.shape == (2, 8)
    s = [Row(np.array([CLS_ID, 9]), np.asarray(1), 0), Row(np.array([CLS_ID, 9, 10]), np.asarray(0), 1)]
    sentences = collate(s)
    assert sentences.labels.tolist() == [1, 0] and sentences.labels.shape == (2,)
    assert sentences.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="mixes"):
        collate([a, s[0]])


@pytest.fixture(scope="module")
def rows(word_tokenizer):
    return token_rows(synthetic_sentences(203, seed=2), word_tokenizer, LabelSet(("A", "B", "C")), max_len=256)


def assert_rows_are_whole_sentences(batch, indices, rows):
    """Row i of the batch is exactly rows[indices[i]] followed by padding: no row holds two sentences."""
    for i, r in enumerate(indices):
        n = len(rows[r])
        assert batch.input_ids[i, :n].tolist() == rows[r].input_ids.tolist()
        assert batch.labels[i, :n].tolist() == rows[r].labels.tolist()
        assert (batch.input_ids[i, n:] == PAD_ID).all() and (batch.labels[i, n:] == X).all()
        assert batch.attention_mask[i].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)


def test_bucketed_stream_batches_hold_whole_sentences_sorted_in_buckets(rows):
    stream = BucketedStream(rows, batch_size=8, seed=3, bucket_batches=4)
    assert stream.batches_per_epoch == 25
    seen = []
    for _ in range(stream.batches_per_epoch):
        probe = BucketedStream(rows, 8, 3, 4)
        probe.load_state_dict(stream.state_dict())
        indices = probe.next_rows()
        batch = stream.next()
        assert_rows_are_whole_sentences(batch, indices, rows)
        assert batch.input_ids.shape[1] == max(len(rows[i]) for i in indices)  # padded to the longest row only
        assert list(stream.lengths[indices]) == sorted(stream.lengths[indices])  # sorted inside the bucket
        seen.extend(indices.tolist())
    assert len(seen) == len(set(seen)) == 200  # each row at most once an epoch; 3 sit it out
    padding = 1 - sum(len(rows[i]) for i in seen) / sum(8 * max(len(rows[i]) for i in seen[k:k + 8])
                                                         for k in range(0, 200, 8))
    shuffled = BucketedStream(rows, 8, 3, bucket_batches=1)  # sorting inside single batches only
    plan = shuffled.epoch_plan(0)
    unsorted = 1 - sum(len(rows[i]) for b in plan for i in b) / sum(8 * max(len(rows[i]) for i in b) for b in plan)
    assert padding < unsorted / 2


def test_bucketed_stream_is_deterministic_and_resumes_exactly(rows):
    def take(stream, k):
        return [stream.next() for _ in range(k)]

    a, b = BucketedStream(rows, 8, seed=5), BucketedStream(rows, 8, seed=5)
    first, second = take(a, 30), take(b, 30)  # 30 > 25 batches: crosses into epoch 1
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    assert a.state_dict() == {"epoch": 1, "index": 5, "seed": 5}
    assert [p.tolist() for p in a.epoch_plan(0)] != [p.tolist() for p in a.epoch_plan(1)]
    other = BucketedStream(rows, 8, seed=6)
    assert [p.tolist() for p in other.epoch_plan(0)] != [p.tolist() for p in a.epoch_plan(0)]

    for stop in (7, 25, 26):  # mid-epoch, at the end of an epoch, just after it
        straight = BucketedStream(rows, 8, seed=5)
        expected = take(straight, stop + 10)[stop:]
        interrupted = BucketedStream(rows, 8, seed=5)
        take(interrupted, stop)
        resumed = BucketedStream(rows, 8, seed=5)
        resumed.load_state_dict(interrupted.state_dict())
        for x, y in zip(take(resumed, 10), expected, strict=True):
            assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.attention_mask, y.attention_mask)
            assert torch.equal(x.labels, y.labels)
    with pytest.raises(ValueError, match="seed"):
        BucketedStream(rows, 8, seed=6).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="fewer than batch_size"):
        BucketedStream(rows[:3], 8, seed=0)


def test_eval_batches_cover_every_row_once_in_a_fixed_order(rows):
    batches = eval_batches(rows, 16)
    again = eval_batches(rows, 16)
    order = np.concatenate([indices for indices, _ in batches])
    assert sorted(order.tolist()) == list(range(len(rows)))
    assert [len(rows[i]) for i in order] == sorted(len(r) for r in rows)
    assert [len(i) for i, _ in batches] == [16] * 12 + [11]
    for (indices, batch), (indices2, batch2) in zip(batches, again, strict=True):
        assert np.array_equal(indices, indices2) and torch.equal(batch.input_ids, batch2.input_ids)
        assert_rows_are_whole_sentences(batch, indices, rows)
    predictions: list = [None] * len(rows)  # the evaluation loop's bookkeeping: batch rows back to rows
    for indices, batch in batches:
        for i, r in enumerate(indices):
            predictions[r] = batch.labels[i].numpy()
    assert word_predictions(rows, predictions) == [[r for r in row.labels.tolist() if r != X] for row in rows]
