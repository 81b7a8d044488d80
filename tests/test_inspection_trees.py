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


# -- with the model's own ROOT: root arcs scored by P(head = ROOT) -----------------------------------------
def _with_root(rng: np.random.Generator, W: int, concentration: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Random word heads (W, W) and ROOT probabilities (W,), one distribution per word over ROOT + the others."""
    full = rng.dirichlet(np.full(W, concentration), size=W)  # column 0: ROOT, then the W - 1 other words
    probs = np.zeros((W, W))
    for u in range(W):
        probs[u, [v for v in range(W) if v != u]] = full[u, 1:]
    return probs, full[:, 0]


def _best_single_root_tree(probs: np.ndarray, root: np.ndarray) -> float:
    """networkx's best tree for each choice of the root word (ROOT -> that word the only root arc)."""
    W = len(root)
    logp = np.log(np.maximum(probs, 1e-12))
    best = -np.inf
    for r in range(W):
        graph = nx.DiGraph()
        graph.add_edge(0, r + 1, weight=float(np.log(max(root[r], 1e-12))))
        for dep in range(W):
            for head in range(W):
                if head != dep:
                    graph.add_edge(head + 1, dep + 1, weight=float(logp[dep, head]))
        tree = nx.maximum_spanning_arborescence(graph)
        best = max(best, sum(d["weight"] for _, _, d in tree.edges(data=True)))
    return best


def _true_score(probs: np.ndarray, root: np.ndarray, heads: np.ndarray) -> float:
    logp, log_root = np.log(np.maximum(probs, 1e-12)), np.log(np.maximum(root, 1e-12))
    return float(sum(log_root[u] if h == 0 else logp[u, h - 1] for u, h in enumerate(heads)))


def _is_tree(heads: np.ndarray) -> bool:
    for start in range(1, len(heads) + 1):
        seen, node = set(), start
        while node != 0:
            if node in seen:
                return False
            seen.add(node)
            node = heads[node - 1]
    return True


def test_with_root_the_root_word_is_the_one_root_favours_when_word_arcs_say_nothing():
    W = 6
    probs = (1 - np.eye(W)) / (W - 1) * 0.5  # every other word equally likely: the words say nothing
    for favoured in range(W):
        root = np.full(W, 0.02)
        root[favoured] = 0.5
        heads = mst_heads(probs, root)
        assert (heads == 0).sum() == 1 and heads[favoured] == 0 and _is_tree(heads)
        assert argmax_heads(probs, root)[favoured] == 0
    # Without ROOT probabilities, the constant root score leaves the choice to the word arcs alone:
    # here all equal, so ROOT's preference is invisible.
    assert (mst_heads(probs) == 0).sum() == 1


def test_with_root_trees_stay_single_rooted_when_root_is_everyones_best_head():
    rng = np.random.default_rng(7)
    for W in (2, 3, 8, 15):
        probs = rng.dirichlet(np.ones(W), size=W) * (1 - np.eye(W)) * 0.01
        root = np.full(W, 0.99) - rng.random(W) * 0.01  # every word prefers ROOT by far
        heads = mst_heads(probs, root)
        assert (heads == 0).sum() == 1 and _is_tree(heads)
        assert (argmax_heads(probs, root) == 0).all()  # argmax is not a tree: it follows each word's best head


@pytest.mark.parametrize("seed", range(4))
def test_with_root_mst_is_the_best_single_root_tree_as_networkx_finds_it(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(15):
        W = int(rng.integers(1, 9))
        probs, root = _with_root(rng, W, concentration=float(rng.choice([0.2, 1.0])))
        heads = mst_heads(probs, root)
        assert (heads == 0).sum() == 1 and _is_tree(heads)
        assert _true_score(probs, root, heads) == pytest.approx(_best_single_root_tree(probs, root), abs=1e-9)
        # and the penalised scores it maximises agree with networkx's unrestricted arborescence on them
        scores = arc_scores(probs, root)
        assert _tree_score(scores, heads) == pytest.approx(_tree_score(scores, _networkx_tree(scores)), abs=1e-9)


def test_without_root_probabilities_nothing_changes():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5), size=5) * (1 - np.eye(5))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(arc_scores(probs, None), arc_scores(probs))
    np.testing.assert_array_equal(mst_heads(probs, None), mst_heads(probs))
    np.testing.assert_array_equal(argmax_heads(probs, None), argmax_heads(probs))
