"""probformer.inspection.trees: the maximum spanning tree (Chu-Liu-Edmonds, against networkx's) and argmax
heads."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from probformer.inspection.trees import arc_scores, argmax_heads, chu_liu_edmonds, mst_heads


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
