"""Looking inside: CoNLL-U, word aggregation, trees (vs networkx), UAS against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from probformer.inspection.attachment import Counts, best_row, score_baselines, score_model
from probformer.data.conllu import ConlluError, format_conllu, parse_conllu, read_conllu
from probformer.inspection.trees import arc_scores, argmax_heads, chu_liu_edmonds, mst_heads
from probformer.inspection.words import WordMarginals, WordPieces, aggregate_heads, aggregate_labels

FIXTURE = Path(__file__).parent / "data" / "tiny.conllu"


def test_conllu_reader_keeps_syntactic_words_only():
    sentences = read_conllu(FIXTURE)
    assert [s.sent_id for s in sentences] == ["s1", "s2", "s3"]
    assert sentences[0].words == ["The", "cat", "sat", "."] and sentences[0].heads == [2, 3, 0, 3]
    assert sentences[1].words == ["I", "do", "n't", "know"] and sentences[1].heads == [4, 4, 4, 0]  # 2-3 skipped
    assert sentences[2].words == ["Go", "home", "!"] and sentences[2].upos == ["VERB", "ADV", "PUNCT"]  # 2.1 skipped
    assert sentences[1].text == "I don't know"


def test_conllu_errors_name_the_problem(tmp_path):
    with pytest.raises(ConlluError, match="not found"):
        read_conllu(tmp_path / "missing.conllu")
    with pytest.raises(ConlluError, match="10 tab-separated columns"):
        parse_conllu("1\tword\t_\n")
    with pytest.raises(ConlluError, match="has head 5"):
        parse_conllu("1\ta\t_\tX\t_\t_\t5\tdep\t_\t_\n")
    with pytest.raises(ConlluError, match="not integers"):
        parse_conllu("1\ta\t_\tX\t_\t_\tx\tdep\t_\t_\n")
    (tmp_path / "empty.conllu").write_text("# nothing\n")
    with pytest.raises(ConlluError, match="no sentences"):
        read_conllu(tmp_path / "empty.conllu")


def test_conllu_round_trip_of_a_predicted_tree():
    text = format_conllu(["a", "b", "c"], [2, 0, 2], [0.5, 1.0, 0.25], ["# text = a b c"])
    (sentence,) = parse_conllu(text)
    assert sentence.words == ["a", "b", "c"] and sentence.heads == [2, 0, 2] and sentence.deprels == ["dep", "root", "dep"]
    assert "HeadProb=0.250" in text


def test_word_aggregation_sums_received_and_averages_sent_mass():
    pieces = WordPieces(["a", "bc"], [10, 11, 12], [0, 1, 1])  # "bc" = two pieces
    a = np.array([[0.0, 0.3, 0.7], [0.6, 0.0, 0.4], [0.5, 0.5, 0.0]])
    words, within = aggregate_heads(a, pieces)
    # word 0 sends 0.3 + 0.7 to word 1; word 1 sends mean(0.6, 0.5) = 0.55 to word 0, mean(0.4, 0.5) inside itself
    np.testing.assert_allclose(within, [0.0, 0.45])
    np.testing.assert_allclose(words, [[0.0, 1.0], [1.0, 0.0]])  # rows renormalised over the other words
    labels = aggregate_labels(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), pieces)
    np.testing.assert_allclose(labels, [[1.0, 0.0], [0.25, 0.75]])


def _networkx_tree(scores: np.ndarray) -> np.ndarray:
    graph = nx.DiGraph()
    n = scores.shape[0]
    for dep in range(1, n):
        for head in range(n):
            if head != dep and np.isfinite(scores[dep, head]):
                graph.add_edge(head, dep, weight=float(scores[dep, head]))
    heads = np.zeros(n - 1, dtype=np.int64)
    for head, dep in nx.maximum_spanning_arborescence(graph).edges():
        heads[dep - 1] = head
    return heads


def _tree_score(scores: np.ndarray, heads: np.ndarray) -> float:
    return float(sum(scores[u + 1, h] for u, h in enumerate(heads)))


@pytest.mark.parametrize("seed", range(6))
def test_mst_is_a_single_root_tree_as_good_as_networkx(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        W = int(rng.integers(2, 14))
        probs = rng.dirichlet(np.full(W, 0.4), size=W) * (1 - np.eye(W))
        probs /= probs.sum(axis=1, keepdims=True)
        heads = mst_heads(probs)
        assert (heads == 0).sum() == 1
        # A tree: following heads from any word reaches ROOT without revisiting a word.
        for start in range(1, W + 1):
            seen, node = set(), start
            while node != 0:
                assert node not in seen
                seen.add(node)
                node = heads[node - 1]
        scores = arc_scores(probs)
        assert _tree_score(scores, heads) == pytest.approx(_tree_score(scores, _networkx_tree(scores)), abs=1e-9)


def test_chu_liu_edmonds_on_a_graph_with_a_cycle():
    # Words 1 and 2 prefer each other (a cycle); the best tree breaks it where it loses least.
    s = np.full((4, 4), -np.inf)
    s[1, 2], s[2, 1] = 10.0, 9.0
    s[1, 0], s[2, 0], s[3, 0] = 1.0, 5.0, 0.0
    s[3, 1], s[3, 2] = 2.0, 8.0
    heads = chu_liu_edmonds(s)
    assert heads.tolist() == [-1, 2, 0, 2]  # 0 -> 2 -> {1, 3}: 5 + 10 + 8


def test_argmax_heads_never_pick_the_word_itself():
    probs = np.array([[0.9, 0.1, 0.0], [0.5, 0.0, 0.5], [0.2, 0.8, 0.0]])
    assert argmax_heads(probs).tolist() == [2, 1, 2]  # row 0's diagonal 0.9 is ignored; ties go left
    assert argmax_heads(np.zeros((1, 1))).tolist() == [0]


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


def test_batched_word_marginals_equal_one_sentence_at_a_time(prepared_synthetic):
    from probformer.inspection.words import infer_word_marginals
    from probformer.models.pt.configuration_pt import PTConfig
    from probformer.models.pt.modeling_pt import PTForMaskedLM

    torch.manual_seed(0)
    model = PTForMaskedLM(PTConfig(vocab_size=prepared_synthetic.vocab_size, hidden_size=32, num_channels=2, rank=8,
                                   latent_size=32, num_iterations=2, max_distance=3, init_std_output=0.02)).eval()
    docs = [line.split()[:k] for line, k in zip(["doc1 kalo mine ruti sa", "doc2 vo ze", "doc3 pa qu dor fen gal hin"],
                                                 (5, 3, 7), strict=True)]
    batched = infer_word_marginals(model, prepared_synthetic.tokenizer, docs, batch_size=3)
    for words, got in zip(docs, batched, strict=True):
        (alone,) = infer_word_marginals(model, prepared_synthetic.tokenizer, [words], batch_size=1)
        np.testing.assert_allclose(got.heads, alone.heads, atol=1e-6)
        np.testing.assert_allclose(got.labels, alone.labels, atol=1e-6)
        assert got.heads.shape == (2, 2, len(words), len(words))
        np.testing.assert_allclose(got.heads.sum(-1), 1.0, atol=1e-6)  # distributions over the other words


def test_the_inspection_library_imports_only_models_and_data():
    import ast

    import probformer.inspection as package

    allowed = ("probformer.models", "probformer.data", "probformer.inspection", "probformer.figures")
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("probformer"):
                assert node.module.startswith(allowed), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("probformer") or alias.name.startswith(allowed), path.name
