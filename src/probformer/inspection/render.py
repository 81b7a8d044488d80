"""Pictures of PT's head marginals: displaCy-style arc diagrams and iteration x channel heatmaps.

Arc diagram: the words on a baseline; one arc per word from its head to it, higher for longer
spans, the arrow at the dependent, labelled with P(head) and drawn with that opacity; the root gets
a vertical arrow from ROOT. One panel per channel. Heatmap: a grid of panels, rows the MFVI
iterations and columns the channels; in each, rows are dependents and columns heads, one fixed
0..1 colour scale for every panel, each row's argmax marked with a dot.

Files are byte-stable for a fixed model: no dates in the metadata, fixed SVG id salt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from probformer.figures import pyplot, save_formats
from probformer.inspection.trees import argmax_heads

MIN_ALPHA = 0.2  # arcs of improbable heads stay visible


def _max_span(heads: Sequence[int]) -> int:
    """The longest |head - dependent| among non-root arcs (1 when there are none): sets arc heights."""
    return max((abs(h - (u + 1)) for u, h in enumerate(heads) if h != 0), default=1)


def _draw_arcs(ax, words: Sequence[str], heads: Sequence[int], probs: Sequence[float | None], title: str) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    W = len(words)
    xs = np.arange(W, dtype=float)
    top = 0.9 + 0.45 * _max_span(heads)
    for u, (head, p) in enumerate(zip(heads, probs, strict=True)):
        if head == 0:
            ax.add_patch(FancyArrowPatch((xs[u], top), (xs[u], 0.12), arrowstyle="-|>", mutation_scale=10,
                                         color="black", lw=1.2, shrinkA=0, shrinkB=0))
            ax.text(xs[u], top, "ROOT", ha="center", va="bottom", fontsize=8)
            continue
        start, end = xs[head - 1], xs[u]
        side = np.sign(end - start)
        start, end = start + 0.08 * side, end - 0.08 * side  # arcs into and out of a word do not meet
        height = 0.45 * abs(head - (u + 1)) + 0.3
        path = MplPath([(start, 0.12), (start, 0.12 + height / 0.75), (end, 0.12 + height / 0.75), (end, 0.12)],
                       [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
        alpha = max(MIN_ALPHA, float(p))
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9, lw=1.3,
                                     color=(0.12, 0.29, 0.58, alpha), shrinkA=0, shrinkB=0))
        ax.text((start + end) / 2, 0.12 + height + 0.04, f"{p:.2f}", ha="center", va="bottom", fontsize=7,
                color=(0, 0, 0, max(0.45, alpha)))
    for x, word in zip(xs, words, strict=True):
        ax.text(x, 0.0, word, ha="center", va="top", fontsize=10)
    ax.set_xlim(-0.7, W - 0.3)
    ax.set_ylim(-0.45, top + 0.35)
    ax.set_title(title, fontsize=9, loc="left")
    ax.axis("off")


def arc_diagram(words: Sequence[str], trees: Sequence[tuple[str, Sequence[int], Sequence[float | None]]],
                stem: Path, formats: Sequence[str] = ("svg", "png")) -> list[Path]:
    """One panel per (title, heads, head probabilities) tree, stacked; written as ``stem.svg/.png``."""
    plt = pyplot()
    heights = [1.3 + 0.32 * _max_span(heads) for _, heads, _ in trees]
    width = max(4.0, 0.85 * len(words) + 0.6)
    fig, axes = plt.subplots(len(trees), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, heads, probs) in zip(axes[:, 0], trees, strict=True):
        _draw_arcs(ax, words, heads, probs, title)
    paths = save_formats(fig, stem, formats)
    plt.close(fig)
    return paths


def heatmap_grid(words: Sequence[str], heads: np.ndarray, stem: Path, formats: Sequence[str] = ("png",),
                 title: str = "") -> list[Path]:
    """``heads`` (T, h, W, W) word-level head distributions; one panel per (iteration, channel)."""
    plt = pyplot()
    T, h, W, _ = heads.shape
    panel = max(2.2, 0.22 * W + 1.0)
    fig, axes = plt.subplots(T, h, figsize=(panel * h + 1.0, panel * T + 0.4), squeeze=False)
    image = None
    for t in range(T):
        for c in range(h):
            ax = axes[t, c]
            probs = heads[t, c]
            image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            if W > 1:
                ax.scatter(argmax_heads(probs) - 1, np.arange(W), s=10, c="white", edgecolors="black", linewidths=0.5)
            ax.set_xticks(range(W))
            ax.set_yticks(range(W))
            ax.set_xticklabels(words if t == T - 1 else [], rotation=90, fontsize=7)
            ax.set_yticklabels(words if c == 0 else [], fontsize=7)
            ax.tick_params(length=0)
            ax.set_title(f"iteration {t + 1}, channel {c}", fontsize=8)
            if t == T - 1:
                ax.set_xlabel("head", fontsize=8)
            if c == 0:
                ax.set_ylabel("dependent", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="P(head)")
    if title:
        fig.suptitle(title, fontsize=10)
    paths = save_formats(fig, stem, formats)
    plt.close(fig)
    return paths
