"""Label marginals: which of the N values of Z_i PT puts on a word, and what those values mean.

A label value is read through the unary factor: the vocabulary words whose unary S (alone, before
any message) puts the most probability on it, ``P_S(a | w) = softmax_a(alpha_in S[w, :] / lambda_Z)``
(docs/design.md §2: that is q at the start of inference, divided by N)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from probformer.data.tokenization import NUM_SPECIAL


@dataclass
class LabelValue:
    label: int  # the value a of Z
    probability: float  # Q(Z_u = a), averaged over the word's pieces
    words: list[tuple[str, float]]  # vocabulary tokens with the highest P_S(a | token)


@torch.no_grad()
def unary_label_distribution(model) -> np.ndarray:
    """(V, N): P_S(a | token) for every vocabulary token."""
    c = model.config
    unary = c.scales().input * model.unary.weight.double()
    return torch.softmax(unary / c.label_temperature, dim=-1).numpy()


def top_labels(word_labels: np.ndarray, unary: np.ndarray, tokenizer: Tokenizer,
               labels_per_word: int = 3, words_per_label: int = 5) -> list[list[LabelValue]]:
    """For each word (rows of ``word_labels`` (W, N)): its most probable label values, each with the
    vocabulary tokens (special tokens excluded) that the unary factor ties most to that value."""
    out = []
    for row in word_labels:
        values = []
        for a in np.argsort(-row, kind="stable")[:labels_per_word]:
            column = unary[NUM_SPECIAL:, a]
            best = np.argsort(-column, kind="stable")[:words_per_label] + NUM_SPECIAL
            values.append(LabelValue(int(a), float(row[a]),
                                     [(tokenizer.id_to_token(int(t)), float(unary[t, a])) for t in best]))
        out.append(values)
    return out
