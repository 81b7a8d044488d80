"""probformer.inspection.attachment: UAS of head marginals and of the baselines against values computed by
hand on a CoNLL-U fixture, and the counts' checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probformer.data.conllu import parse_conllu, read_conllu
from probformer.inspection.attachment import Counts, best_row, score_baselines, score_model
from probformer.inspection.words import WordMarginals, WordPieces

FIXTURE = Path(__file__).parent / "data" / "tiny.conllu"


def _peaked(heads: list[int]) -> np.ndarray:
    """A head distribution putting 0.9 on each given head (1-based; 0 = uniform over the other words)."""
    W = len(heads)
    probs = np.zeros((W, W))
    for u, h in enumerate(heads):
        others = [v for v in range(W) if v != u]
        if h == 0:
            probs[u, others] = 1.0 / len(others)
        else:
            rest = [v for v in others if v != h - 1]
            probs[u, h - 1] = 0.9 if rest else 1.0
            probs[u, rest] = 0.1 / len(rest) if rest else 0.0
    return probs


def test_uas_of_constructed_marginals_and_baselines_matches_hand_computed_values():
    sentences = read_conllu(FIXTURE)
    marginals = []
    for s in sentences:
        W = len(s)
        next_word = [u + 2 if u + 1 < W else 0 for u in range(W)]
        heads = np.stack([_peaked(s.heads), _peaked(next_word)])[None]  # (T=1, h=2, W, W)
        marginals.append(WordMarginals(WordPieces(s.words, list(range(W)), list(range(W))), heads,
                                       np.zeros((1, 2, W)), np.zeros((W, 4))))
    rows = {row.name: row for row in score_model(sentences, marginals)}
    # 11 words, 9 of them not punctuation (computed by hand in the comments of each line).
    assert (rows["it1 c0 mst"].uas, rows["it1 c0 mst"].uas_all) == (1.0, 1.0)  # channel 0 *is* the gold tree
    assert rows["it1 c0 argmax"].uas == pytest.approx(6 / 9)  # argmax never picks ROOT: the 3 roots are wrong
    assert rows["it1 c0 argmax"].uas_all == pytest.approx(8 / 11)
    assert rows["it1 c1 mst"].uas == pytest.approx(4 / 9)  # the next-word chain, last word root
    assert rows["it1 c1 argmax"].uas == pytest.approx(3 / 9)  # the last word's tie goes to word 1
    assert rows["it1 c1 argmax"].uas_all == pytest.approx(4 / 11)
    assert rows["it1 c0 mst"].words == 11 and rows["it1 c0 mst"].scored_words == 9
    assert best_row(rows.values()).name == "it1 c0 mst"
    baselines = {row.name: row for row in score_baselines(sentences)}
    nxt, prev = baselines["next word"], baselines["previous word"]
    assert (nxt.uas, nxt.uas_all, nxt.undirected) == pytest.approx((4 / 9, 4 / 11, 6 / 9))
    assert (prev.uas, prev.uas_all, prev.undirected) == pytest.approx((2 / 9, 3 / 11, 5 / 9))
    assert rows["it1 c1 mst"].uas == nxt.uas and rows["it1 c1 mst"].undirected == nxt.undirected
    random_row = baselines["random head"]
    assert 0 <= random_row.uas <= 1 and score_baselines(sentences)[2] == random_row  # seeded: reproducible


def test_random_head_baseline_never_picks_the_word_itself():
    (sentence,) = parse_conllu("".join(f"{i}\tw\t_\tX\t_\t_\t{0 if i == 1 else 1}\tdep\t_\t_\n" for i in range(1, 8)))
    from probformer.inspection.attachment import baseline_heads

    draws = np.concatenate(baseline_heads([sentence] * 200, seed=3)["random head"])
    positions = np.tile(np.arange(1, 8), 200)
    assert (draws != positions).all() and set(draws.tolist()) == set(range(8))


def test_counts_reject_a_prediction_of_the_wrong_length():
    from probformer.inspection.errors import InspectionError

    with pytest.raises(InspectionError, match="predicted heads"):
        Counts().add(np.array([0, 1]), read_conllu(FIXTURE)[0])


def test_with_the_models_root_both_decoders_read_its_root_probabilities():
    """Word arcs that point every word at its gold head, and at the gold root word nothing in particular:
    with ROOT probabilities that favour the gold root word, argmax and MST find every gold head (argmax
    without them never picks ROOT); in each channel and in the channels' mean."""
    sentences = read_conllu(FIXTURE)
    with_root, without_root = [], []
    for s in sentences:
        W = len(s)
        heads, root = np.zeros((W, W)), np.full(W, 0.01)
        for u, h in enumerate(s.heads):
            others = [v for v in range(W) if v != u]
            if h == 0:
                root[u] = 0.9
                heads[u, others] = 0.1 / len(others)
            else:
                heads[u] = _peaked(s.heads)[u] * 0.99
        pieces = WordPieces(s.words, list(range(W)), list(range(W)))
        stacked = np.stack([heads, heads])[None]  # (T=1, h=2, W, W)
        with_root.append(WordMarginals(pieces, stacked, np.zeros((1, 2, W)), np.zeros((W, 4)),
                                       np.stack([root, root])[None]))
        without_root.append(WordMarginals(pieces, stacked, np.zeros((1, 2, W)), np.zeros((W, 4))))
    rows = {row.name: row for row in score_model(sentences, with_root)}
    for name in ("it1 c0 mst", "it1 c1 argmax", "it1 cmean mst", "it1 cmean argmax"):
        assert rows[name].uas_all == 1.0, name
    assert {row.name: row for row in score_model(sentences, without_root)}["it1 c0 argmax"].uas_all == \
        pytest.approx(8 / 11)  # the 3 roots: argmax without ROOT never picks it
