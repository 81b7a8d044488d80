"""Words <-> subword pieces, and PT's token-level marginals aggregated to words.

A word of several WordPiece pieces is one node of a dependency tree. Its head distribution over
the other words: the mass its pieces send, averaged over those pieces, summed over the pieces of
each receiving word (``A[u, v] = mean_{i in u} sum_{j in v} a[i, j]``). The mass a word's pieces send
to each other (``within_word``) is reported and removed; the remaining row is renormalised so that
it is a distribution over the other words. Label marginals Q(Z) are averaged over a word's pieces.

With the model's own ROOT (PT with ``use_root``, docs/design.md §9) a piece's head ranges over ROOT
and the other pieces, and the model returns P(head = ROOT) per piece (``root_attentions``). A word's
ROOT mass is combined like the mass it sends to a word: averaged over the pieces it sends from
(``R[u] = mean_{i in u} root[i]``). Its ROOT and word-head masses are then renormalised *together*
(the within-word mass removed), so that ROOT and the other words are one distribution
(``heads[u].sum() + root[u] = 1``) and a tree decoder can compare a ROOT arc with a word arc.
Without ROOT nothing changes: rows of ``heads`` sum to 1 over the other words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from probformer.data.tokenization import SPECIAL_TOKENS, UNK_ID
from probformer.inspection.errors import InspectionError


@dataclass
class WordPieces:
    words: list[str]
    ids: list[int]  # piece ids of the whole sentence
    word_of_piece: list[int]  # word index (0-based) of every piece

    @property
    def num_words(self) -> int:
        return len(self.words)


def word_spans(tokenizer: Tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets in ``text`` of each word the tokenizer's pre-tokenizer cuts
    (whitespace and punctuation; ``[MASK]`` stays one word), in order; a word the tokenizer drops
    entirely (nothing but a control character, say) is not one. Offsets, not the tokenizer's
    normalised pieces, so callers show words in their original casing and spelling."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    spans: dict[int, list[int]] = {}
    for word_id, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
        if word_id is None:
            continue
        span = spans.setdefault(word_id, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return [(start, end) for _, (start, end) in sorted(spans.items())]


def split_words(tokenizer: Tokenizer, sentence: str) -> list[str]:
    """The words of raw text as the tokenizer's pre-tokenizer cuts them (:func:`word_spans`), in their
    original spelling."""
    words = [sentence[start:end] for start, end in word_spans(tokenizer, sentence)]
    if not words:
        raise InspectionError(f"no words in {sentence!r}")
    return words


def word_pieces(tokenizer: Tokenizer, words: Sequence[str]) -> WordPieces:
    """Pieces of pre-split words (gold treebank words are never re-split into other words). A word
    that normalises to nothing becomes one [UNK] piece, so every word is a node."""
    if not words:
        raise InspectionError("an empty sentence has no tree")
    enc = tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for piece_id, word_id in zip(enc.ids, enc.word_ids, strict=True):
        if word_id is not None:
            pieces[word_id].append(piece_id)
    ids, owner = [], []
    for w, word in enumerate(pieces):
        for piece_id in word or [_unk_id(tokenizer, words[w])]:
            ids.append(piece_id)
            owner.append(w)
    return WordPieces(list(words), ids, owner)


def _unk_id(tokenizer: Tokenizer, word: str) -> int:
    """The tokenizer's own [UNK] (a pretrained tokenizer's is not 1), for a word with no pieces."""
    unk = tokenizer.token_to_id(SPECIAL_TOKENS[UNK_ID])
    if unk is None:
        raise InspectionError(f"the word {word!r} has no word pieces and the tokenizer has no "
                              f"{SPECIAL_TOKENS[UNK_ID]} token to stand for it")
    return unk


def piece_to_word_matrix(pieces: WordPieces) -> np.ndarray:
    """P (n_pieces, n_words): P[i, u] = 1 if piece i belongs to word u."""
    matrix = np.zeros((len(pieces.ids), pieces.num_words))
    matrix[np.arange(len(pieces.ids)), pieces.word_of_piece] = 1.0
    return matrix


def aggregate_heads(marginals: np.ndarray, pieces: WordPieces) -> tuple[np.ndarray, np.ndarray]:
    """Token head marginals (..., n, n) -> word head distributions (..., W, W) and within-word mass (..., W).

    Rows are dependents, columns heads; the diagonal of the result is 0 and every row sums to 1
    (a one-word sentence has an all-zero row: its only head is ROOT)."""
    words, within = _word_mass(marginals, pieces)
    total = words.sum(axis=-1, keepdims=True)
    words = np.divide(words, total, out=np.zeros_like(words), where=total > 0)
    return words, within


def _word_mass(marginals: np.ndarray, pieces: WordPieces) -> tuple[np.ndarray, np.ndarray]:
    """The head mass word u sends to each other word v (..., W, W; diagonal 0), not renormalised, and
    the mass it keeps inside itself (..., W)."""
    P = piece_to_word_matrix(pieces)
    counts = P.sum(axis=0)  # pieces per word
    # mean over sent, sum over received
    words = np.einsum("iu,...ij,jv->...uv", P, marginals, P, optimize=True) / counts[:, None]
    within = np.diagonal(words, axis1=-2, axis2=-1).copy()
    W = pieces.num_words
    return words * (1.0 - np.eye(W)), within


def aggregate_heads_with_root(marginals: np.ndarray, root: np.ndarray,
                              pieces: WordPieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token head marginals (..., n, n) and ROOT marginals (..., n) of a model with ROOT -> word head
    distributions (..., W, W), word ROOT probabilities (..., W) and within-word mass (..., W).

    A word's ROOT mass is the mean over its pieces (as the mass it sends to a word); heads and ROOT are
    renormalised together over ROOT + the other words (module docstring), so each word's row of the
    heads plus its ROOT probability sums to 1 (a row with no mass outside the word is all zero)."""
    words, within = _word_mass(marginals, pieces)
    P = piece_to_word_matrix(pieces)
    root_words = np.einsum("iu,...i->...u", P, root) / P.sum(axis=0)
    total = words.sum(axis=-1) + root_words  # = 1 - within, up to rounding
    words = np.divide(words, total[..., None], out=np.zeros_like(words), where=total[..., None] > 0)
    root_words = np.divide(root_words, total, out=np.zeros_like(root_words), where=total > 0)
    return words, root_words, within


def aggregate_labels(label_marginals: np.ndarray, pieces: WordPieces) -> np.ndarray:
    """Token label marginals (..., n, N) -> word label marginals (..., W, N): mean over a word's pieces."""
    P = piece_to_word_matrix(pieces)
    return np.einsum("iu,...ia->...ua", P, label_marginals, optimize=True) / P.sum(axis=0)[:, None]


@dataclass
class WordMarginals:
    """What PT infers about one sentence, at the word level."""

    pieces: WordPieces
    heads: np.ndarray  # (T, h, W, W): P(head of word u = word v) per MFVI iteration and channel
    within_word: np.ndarray  # (T, h, W): head mass kept inside the word (dropped from ``heads``)
    labels: np.ndarray  # (W, N): Q(Z) after the last iteration, averaged over a word's pieces
    # (T, h, W): P(head of word u = ROOT) per iteration and channel, for a model with its own ROOT
    # (``heads`` then sums to 1 - root over the other words); None without ROOT.
    root: np.ndarray | None = None


@torch.no_grad()
def infer_word_marginals(model, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]],
                         batch_size: int = 32, progress=None) -> list[WordMarginals]:
    """Word-level head and label marginals of PT for pre-split sentences, batched with padding
    (PT masks padding exactly, so a sentence's marginals do not depend on its batch). With the
    model's own ROOT, also the words' ROOT probabilities (module docstring)."""
    if model.training:
        raise InspectionError("put the model in eval mode first (dropout on head marginals would be sampled)")
    pieces = [word_pieces(tokenizer, words) for words in sentences]
    order = sorted(range(len(pieces)), key=lambda k: len(pieces[k].ids))  # similar lengths share a batch
    results: list[WordMarginals | None] = [None] * len(pieces)
    temperature = model.config.label_temperature
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        n = max(len(pieces[k].ids) for k in chunk)
        ids = torch.zeros(len(chunk), n, dtype=torch.long)
        mask = torch.zeros(len(chunk), n, dtype=torch.long)
        for row, k in enumerate(chunk):
            ids[row, : len(pieces[k].ids)] = torch.tensor(pieces[k].ids)
            mask[row, : len(pieces[k].ids)] = 1
        out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        heads = torch.stack(out.attentions, dim=1).double().numpy()  # (B, T, h, n, n)
        labels = torch.softmax(out.hidden_states[-1].double() / temperature, dim=-1).numpy()  # (B, n, N)
        root_attentions = getattr(out, "root_attentions", None)  # with ROOT: (B, h, n) per iteration
        roots = None if root_attentions is None else torch.stack(root_attentions, dim=1).double().numpy()
        for row, k in enumerate(chunk):
            m = len(pieces[k].ids)
            word_labels = aggregate_labels(labels[row, :m], pieces[k])
            if roots is None:
                word_heads, within = aggregate_heads(heads[row, :, :, :m, :m], pieces[k])
                results[k] = WordMarginals(pieces[k], word_heads, within, word_labels)
            else:
                word_heads, word_root, within = aggregate_heads_with_root(heads[row, :, :, :m, :m],
                                                                          roots[row, :, :, :m], pieces[k])
                results[k] = WordMarginals(pieces[k], word_heads, within, word_labels, word_root)
        if progress is not None:
            progress(len(chunk))
    return results  # type: ignore[return-value]
