"""Everything PT says about one sentence: head marginals per iteration and channel, trees, labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probformer.data.conllu import format_conllu
from probformer.inspection.labels import LabelValue, top_labels, unary_label_distribution
from probformer.inspection.loading import LoadedModel
from probformer.inspection.render import arc_diagram, heatmap_grid
from probformer.inspection.trees import argmax_heads, mst_heads
from probformer.inspection.words import WordMarginals, infer_word_marginals


@dataclass
class Tree:
    iteration: int  # 1-based
    channel: int
    decoder: str  # 'mst' or 'argmax'
    heads: list[int]  # 1-based, 0 = ROOT
    # P(head) of each word's chosen head; for the root word P(ROOT) with the model's own ROOT, else None
    probabilities: list[float | None]

    @property
    def title(self) -> str:
        return f"iteration {self.iteration}, channel {self.channel} ({self.decoder})"


@dataclass
class SentenceInspection:
    words: list[str]
    pieces: list[str]
    marginals: WordMarginals
    trees: list[Tree]  # every iteration x channel x decoder
    labels: list[list[LabelValue]]  # per word: its top label values

    def tree(self, iteration: int, channel: int, decoder: str) -> Tree:
        for tree in self.trees:
            if (tree.iteration, tree.channel, tree.decoder) == (iteration, channel, decoder):
                return tree
        raise KeyError((iteration, channel, decoder))

    @property
    def num_iterations(self) -> int:
        return self.marginals.heads.shape[0]

    @property
    def num_channels(self) -> int:
        return self.marginals.heads.shape[1]

    def to_dict(self) -> dict:
        m = self.marginals
        return {
            "words": self.words,
            "pieces": self.pieces,
            "word_of_piece": m.pieces.word_of_piece,
            "head_marginals": np.round(m.heads, 6).tolist(),  # [iteration][channel][dependent][head]
            "within_word_mass": np.round(m.within_word, 6).tolist(),
            # only with the model's own ROOT: [iteration][channel][dependent] P(head = ROOT)
            **({} if m.root is None else {"root_marginals": np.round(m.root, 6).tolist()}),
            "trees": [vars(t) for t in self.trees],
            "labels": [[{"label": v.label, "probability": round(v.probability, 6),
                         "unary_words": [[w, round(p, 6)] for w, p in v.words]} for v in word] for word in self.labels],
        }

    def conllu(self, iteration: int, channels: Sequence[int], decoder: str) -> str:
        blocks = []
        for c in channels:
            tree = self.tree(iteration, c, decoder)
            comments = [f"# text = {' '.join(self.words)}",
                        f"# probformer = iteration {iteration}, channel {c}, {decoder}"]
            blocks.append(format_conllu(self.words, tree.heads, tree.probabilities, comments))
        return "".join(blocks)

    def render(self, out_dir: Path, iteration: int, decoder: str) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        trees = [self.tree(iteration, c, decoder) for c in range(self.num_channels)]
        paths = arc_diagram(self.words, [(t.title, t.heads, t.probabilities) for t in trees], out_dir / "arcs")
        paths += heatmap_grid(self.words, self.marginals.heads, out_dir / "heatmap", formats=("png", "svg"),
                              title="P(head | dependent), words; dots: argmax")
        return paths


def inspect_words(loaded: LoadedModel, words: Sequence[str], labels_per_word: int = 3,
                  words_per_label: int = 5) -> SentenceInspection:
    marginals = infer_word_marginals(loaded.model, loaded.tokenizer, [list(words)])[0]
    trees = []
    for t in range(marginals.heads.shape[0]):
        for c in range(marginals.heads.shape[1]):
            probs = marginals.heads[t, c]
            root = None if marginals.root is None else marginals.root[t, c]
            for decoder, decode in (("mst", mst_heads), ("argmax", argmax_heads)):
                heads = decode(probs, root)
                chosen = [float(probs[u, h - 1]) if h != 0 else (None if root is None else float(root[u]))
                          for u, h in enumerate(heads)]
                trees.append(Tree(t + 1, c, decoder, [int(h) for h in heads], chosen))
    unary = unary_label_distribution(loaded.model)
    labels = top_labels(marginals.labels, unary, loaded.tokenizer, labels_per_word, words_per_label)
    pieces = [loaded.tokenizer.id_to_token(i) for i in marginals.pieces.ids]
    return SentenceInspection(list(words), pieces, marginals, trees, labels)


def describe(inspection: SentenceInspection, iteration: int, decoder: str) -> str:
    """A plain-text summary: each channel's tree, then each word's label values."""
    lines = [f"words: {' '.join(inspection.words)}", f"pieces: {' '.join(inspection.pieces)}", ""]
    for c in range(inspection.num_channels):
        tree = inspection.tree(iteration, c, decoder)
        arcs = [f"{w} <- {'ROOT' if h == 0 else inspection.words[h - 1]}" + ("" if p is None else f" ({p:.2f})")
                for w, h, p in zip(inspection.words, tree.heads, tree.probabilities, strict=True)]
        lines.append(f"{tree.title}: " + ", ".join(arcs))
    lines += ["", "label marginals Q(Z) after the last iteration (top values; the words the unary S ties to each):"]
    for word, values in zip(inspection.words, inspection.labels, strict=True):
        parts = [f"z{v.label} {v.probability:.2f} [{' '.join(w for w, _ in v.words)}]" for v in values]
        lines.append(f"  {word}: " + "; ".join(parts))
    return "\n".join(lines)
