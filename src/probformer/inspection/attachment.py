"""Unlabelled attachment scores of PT's trees against gold heads, beside structure-free baselines.

For every MFVI iteration t, channel c (and ``mean``: the channels' head distributions averaged)
and decoder (``mst``: the single-root maximum spanning tree; ``argmax``: each word's most probable
head, which never picks ROOT unless the model has its own ROOT), three scores, micro-averaged over
words. With the model's own ROOT (PT with ``use_root``) both decoders score ROOT by its probabilities
(:mod:`.trees`), per channel, and for ``mean`` averaged over the channels like the word heads:
- ``uas``: the main figure: predicted head = gold head, punctuation excluded (UPOS PUNCT), as in
  the unsupervised-parsing literature;
- ``uas_all``: the same over all words;
- ``undirected``: the predicted arc is a gold arc in either direction (head = gold head, or the
  word is the gold head of its predicted head), punctuation excluded.

Baselines, named for what they do (``left-/right-branching`` means opposite things in different
papers): ``next word`` (head = the word after; the last word is the root), ``previous word``
(head = the word before; the first word is the root), ``random head`` (uniform over the other words
and ROOT, seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from probformer.data.conllu import Sentence
from probformer.inspection.errors import InspectionError
from probformer.inspection.trees import argmax_heads, mst_heads
from probformer.inspection.words import WordMarginals

PUNCT = "PUNCT"
# (word heads (W, W), ROOT probabilities (W,) or None) -> 1-based heads, 0 = ROOT
DECODERS: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {"mst": mst_heads,
                                                                               "argmax": argmax_heads}
MEAN_CHANNEL = "mean"


@dataclass
class Counts:
    correct: int = 0  # non-punctuation words with the gold head
    scored: int = 0  # non-punctuation words
    correct_all: int = 0
    words: int = 0
    undirected: int = 0  # non-punctuation words whose arc is a gold arc in either direction

    def add(self, predicted: np.ndarray, sentence: Sentence) -> None:
        gold = np.asarray(sentence.heads)
        if predicted.shape != gold.shape:
            raise InspectionError(f"sentence {sentence.sent_id}: {len(predicted)} predicted heads "
                                  f"for {len(gold)} words")
        scored = np.asarray([tag != PUNCT for tag in sentence.upos])
        hit = predicted == gold
        # gold_head_of[v] for v = 0..W (ROOT has none): the word u is the gold head of its predicted head.
        gold_head_of = np.concatenate([[-1], gold])
        reverse = gold_head_of[predicted] == np.arange(1, len(gold) + 1)
        self.correct += int((hit & scored).sum())
        self.scored += int(scored.sum())
        self.correct_all += int(hit.sum())
        self.words += len(gold)
        self.undirected += int(((hit | reverse) & scored).sum())

    def scores(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")
        return {"uas": ratio(self.correct, self.scored), "uas_all": ratio(self.correct_all, self.words),
                "undirected": ratio(self.undirected, self.scored), "words": self.words, "scored_words": self.scored}


@dataclass(frozen=True)
class Row:
    """One line of the table: a model reading (iteration, channel, decoder) or a baseline."""

    name: str  # e.g. 'it2 c1 mst', or a baseline's name
    iteration: int | None  # 1-based MFVI iteration; None for baselines
    channel: str | None  # '0'..'h-1' or 'mean'
    decoder: str | None
    uas: float
    uas_all: float
    undirected: float
    words: int
    scored_words: int

    def to_dict(self) -> dict:
        return asdict(self)


def baseline_heads(sentences: Sequence[Sentence], seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"next word": [], "previous word": [], "random head": []}
    for sentence in sentences:
        W = len(sentence)
        idx = np.arange(1, W + 1)
        out["next word"].append(np.where(idx < W, idx + 1, 0))
        out["previous word"].append(idx - 1)
        draws = rng.integers(0, W, size=W)  # uniform over the W candidates {0..W} minus the word itself
        out["random head"].append(np.where(draws >= idx, draws + 1, draws))
    return out


def channel_heads(marginals: WordMarginals, iteration: int, channel: str) -> np.ndarray:
    """(W, W) head distribution of one channel (or the channels' mean) at a 0-based iteration."""
    heads = marginals.heads[iteration]
    return heads.mean(axis=0) if channel == MEAN_CHANNEL else heads[int(channel)]


def channel_root(marginals: WordMarginals, iteration: int, channel: str) -> np.ndarray | None:
    """(W,) ROOT probabilities of one channel (or the channels' mean, as :func:`channel_heads` averages
    the word heads) at a 0-based iteration; None for a model without ROOT."""
    if marginals.root is None:
        return None
    root = marginals.root[iteration]
    return root.mean(axis=0) if channel == MEAN_CHANNEL else root[int(channel)]


def score_model(sentences: Sequence[Sentence], marginals: Sequence[WordMarginals],
                progress: Callable[[int], None] | None = None) -> list[Row]:
    """Every (iteration, channel, decoder) reading of PT's marginals against the gold trees."""
    if len(sentences) != len(marginals):
        raise InspectionError(f"{len(sentences)} sentences but {len(marginals)} marginals")
    T, h = marginals[0].heads.shape[:2]
    channels = [str(c) for c in range(h)] + [MEAN_CHANNEL]
    counts = {(t, c, d): Counts() for t in range(T) for c in channels for d in DECODERS}
    for sentence, sentence_marginals in zip(sentences, marginals, strict=True):
        for (t, c, d), count in counts.items():
            count.add(DECODERS[d](channel_heads(sentence_marginals, t, c), channel_root(sentence_marginals, t, c)),
                      sentence)
        if progress is not None:
            progress(1)
    return [Row(name=f"it{t + 1} c{c} {d}", iteration=t + 1, channel=c, decoder=d, **count.scores())
            for (t, c, d), count in counts.items()]


def score_baselines(sentences: Sequence[Sentence], seed: int = 0) -> list[Row]:
    rows = []
    for name, heads in baseline_heads(sentences, seed).items():
        count = Counts()
        for predicted, sentence in zip(heads, sentences, strict=True):
            count.add(predicted, sentence)
        rows.append(Row(name=name, iteration=None, channel=None, decoder=None, **count.scores()))
    return rows


def best_row(rows: Iterable[Row], metric: str = "uas") -> Row:
    """The model reading with the highest ``metric`` (ties: the first, in iteration/channel/decoder order)."""
    candidates = [row for row in rows if row.iteration is not None]
    if not candidates:
        raise InspectionError("no model rows to select from")
    return max(candidates, key=lambda row: getattr(row, metric))


def find_row(rows: Iterable[Row], iteration: int, channel: str, decoder: str) -> Row:
    for row in rows:
        if (row.iteration, row.channel, row.decoder) == (iteration, channel, decoder):
            return row
    raise InspectionError(f"no row it{iteration} c{channel} {decoder}")
