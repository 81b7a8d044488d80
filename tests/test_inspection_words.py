"""probformer.inspection.words: word pieces aggregated into words (head and label marginals), fast on long
sentences, and batched word marginals equal to one sentence at a time."""

from __future__ import annotations

import numpy as np
import torch

from probformer.inspection.words import WordPieces, aggregate_heads, aggregate_labels


def test_word_aggregation_sums_received_and_averages_sent_mass():
    pieces = WordPieces(["a", "bc"], [10, 11, 12], [0, 1, 1])  # "bc" = two pieces
    a = np.array([[0.0, 0.3, 0.7], [0.6, 0.0, 0.4], [0.5, 0.5, 0.0]])
    words, within = aggregate_heads(a, pieces)
    # word 0 sends 0.3 + 0.7 to word 1; word 1 sends mean(0.6, 0.5) = 0.55 to word 0, mean(0.4, 0.5) inside itself
    np.testing.assert_allclose(within, [0.0, 0.45])
    np.testing.assert_allclose(words, [[0.0, 1.0], [1.0, 0.0]])  # rows renormalised over the other words
    labels = aggregate_labels(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), pieces)
    np.testing.assert_allclose(labels, [[1.0, 0.0], [0.25, 0.75]])


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


def test_word_head_marginals_of_a_long_sentence_are_fast():
    """300 words (about 400 pieces), every iteration and channel: the 3-operand einsum is contracted
    pairwise (unoptimised it took minutes) and equals the two products done by hand."""
    import time

    import numpy as np

    from probformer.inspection.words import WordPieces, aggregate_heads

    rng = np.random.default_rng(0)
    owner = np.sort(np.concatenate([np.arange(300), rng.integers(0, 300, 100)]))
    pieces = WordPieces([f"w{u}" for u in range(300)], list(range(len(owner))), owner.tolist())
    marginals = rng.random((3, 2, len(owner), len(owner)))
    start = time.perf_counter()
    words, _ = aggregate_heads(marginals, pieces)
    assert time.perf_counter() - start < 10.0
    P = np.zeros((len(owner), 300))
    P[np.arange(len(owner)), owner] = 1.0
    by_hand = (P.T @ marginals @ P) / P.sum(axis=0)[:, None]
    by_hand = by_hand * (1.0 - np.eye(300))
    np.testing.assert_allclose(words, by_hand / by_hand.sum(axis=-1, keepdims=True), rtol=1e-10)


def test_root_mass_is_averaged_over_a_words_pieces_and_normalised_with_its_heads():
    from probformer.inspection.words import aggregate_heads_with_root

    pieces = WordPieces(["a", "bc"], [10, 11, 12], [0, 1, 1])
    # Each piece's row over the other pieces plus its ROOT entry sums to 1 (as the model returns them).
    a = np.array([[0.0, 0.2, 0.3], [0.3, 0.0, 0.2], [0.1, 0.4, 0.0]])
    root = np.array([0.5, 0.5, 0.5])
    words, word_root, within = aggregate_heads_with_root(a, root, pieces)
    # word 1 sends mean(0.3, 0.1) = 0.2 to word 0 and mean(0.2, 0.4) = 0.3 inside; ROOT mean 0.5; 0.2 + 0.5 = 0.7
    np.testing.assert_allclose(within, [0.0, 0.3])
    np.testing.assert_allclose(word_root, [0.5, 0.5 / 0.7])
    np.testing.assert_allclose(words, [[0.0, 0.5], [0.2 / 0.7, 0.0]])
    np.testing.assert_allclose(words.sum(-1) + word_root, 1.0)


def test_a_model_with_root_gives_word_root_probabilities(prepared_synthetic):
    from probformer.inspection.words import infer_word_marginals
    from probformer.models.pt.configuration_pt import PTConfig
    from probformer.models.pt.modeling_pt import PTForMaskedLM

    torch.manual_seed(0)
    config = dict(vocab_size=prepared_synthetic.vocab_size, hidden_size=32, num_channels=2, rank=8, latent_size=32,
                  num_iterations=2, max_distance=3, init_std_output=0.02)
    with_root = PTForMaskedLM(PTConfig(**config, use_root=True)).eval()
    docs = [["doc1", "kalo", "mine", "ruti"], ["vo"], ["pa", "qu", "dor", "fen", "gal", "hin"]]
    batched = infer_word_marginals(with_root, prepared_synthetic.tokenizer, docs, batch_size=3)
    for words, got in zip(docs, batched, strict=True):
        assert got.root.shape == (2, 2, len(words)) and got.heads.shape == (2, 2, len(words), len(words))
        np.testing.assert_allclose(got.heads.sum(-1) + got.root, 1.0, atol=1e-6)  # one distribution per word
        assert (got.root > 0).all()
        (alone,) = infer_word_marginals(with_root, prepared_synthetic.tokenizer, [words], batch_size=1)
        np.testing.assert_allclose(got.root, alone.root, atol=1e-6)
    np.testing.assert_allclose(batched[1].root, 1.0)  # a one-word sentence's only head is ROOT
    without = PTForMaskedLM(PTConfig(**config)).eval()
    assert infer_word_marginals(without, prepared_synthetic.tokenizer, docs[:1])[0].root is None
