"""Trees from a head distribution: the argmax head of each word, and the maximum spanning tree.

Input everywhere: ``probs`` (W, W), rows dependents, columns heads, ``probs[u, v]`` = P(head of
word u = word v) (:mod:`.words`). Output: heads as in CoNLL-U, 1-based, 0 = ROOT.

The tree is the maximum spanning arborescence (Chu-Liu/Edmonds) of the graph ROOT + words, arc
score log P(head of u = v), with every ROOT arc at one constant score low enough that a tree with
two root arcs always scores below any tree with one: the tree has a single root, and since every
word's ROOT arc scores the same, which word is the root is decided by the arcs between words
alone. Chu-Liu/Edmonds is implemented here (numpy, O(W^3)); the tests check it against networkx's
``maximum_spanning_arborescence`` (pure Python: far too slow for 30 readings of a whole treebank).
"""

from __future__ import annotations

import numpy as np

LOG_FLOOR = 1e-12  # probabilities below this score as log(1e-12): arcs the model rules out stay usable


def argmax_heads(probs: np.ndarray) -> np.ndarray:
    """Each word's most probable head (ties: the leftmost); not a tree in general, and never ROOT
    (a one-word sentence's word gets ROOT)."""
    W = probs.shape[0]
    if W == 1:
        return np.zeros(1, dtype=np.int64)
    scores = np.where(np.eye(W, dtype=bool), -np.inf, probs)
    return scores.argmax(axis=1) + 1


def arc_scores(probs: np.ndarray) -> np.ndarray:
    """(W + 1, W + 1) scores[dep, head] over ROOT (index 0) + words; ROOT has no head."""
    W = probs.shape[0]
    logp = np.log(np.maximum(probs, LOG_FLOOR))
    off_diagonal = logp[~np.eye(W, dtype=bool)]
    lo, hi = (off_diagonal.min(), off_diagonal.max()) if W > 1 else (0.0, 0.0)
    # One root arc + (W - 1) word arcs >= root + (W - 1) lo  >  2 root + (W - 2) hi >= any two-root tree.
    root = (W - 1) * lo - (W - 2) * hi - 1.0
    scores = np.full((W + 1, W + 1), -np.inf)
    scores[1:, 1:] = np.where(np.eye(W, dtype=bool), -np.inf, logp)
    scores[1:, 0] = root
    return scores


def mst_heads(probs: np.ndarray) -> np.ndarray:
    """The maximum spanning tree over words + ROOT with a single root (module docstring)."""
    heads = chu_liu_edmonds(arc_scores(probs))[1:]
    if int((heads == 0).sum()) != 1:  # guaranteed by the root score; a violation is a bug
        raise AssertionError(f"tree with {(heads == 0).sum()} roots")
    return heads


def chu_liu_edmonds(scores: np.ndarray) -> np.ndarray:
    """Maximum spanning arborescence rooted at node 0 of the complete graph with arc scores
    ``scores[dep, head]`` (-inf: no arc). Returns ``heads`` with ``heads[0] = -1``.

    Edmonds' algorithm: every node takes its best head; if that has no cycle it is optimal;
    otherwise contract the cycle into one node (an arc into the cycle is scored by what it gains
    over the cycle arc it replaces), solve the smaller problem, and expand."""
    n = scores.shape[0]
    s = scores.astype(np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    s[0, :] = -np.inf
    heads = s.argmax(axis=1)
    heads[0] = -1
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    in_cycle = np.zeros(n, dtype=bool)
    in_cycle[cycle] = True
    outside = np.flatnonzero(~in_cycle)  # includes the root 0
    cyc = np.asarray(cycle)
    keep = s[cyc, heads[cyc]]  # the score of each cycle node's cycle arc
    m = len(outside)  # contracted graph: outside nodes (their new ids 0..m-1) + the cycle as node m
    sub = np.full((m + 1, m + 1), -np.inf)
    sub[:m, :m] = s[np.ix_(outside, outside)]
    # Arcs entering the cycle from head h: best cycle node to redirect, by its gain over its cycle arc.
    gain = s[np.ix_(cyc, outside)] - keep[:, None]  # (|C|, m)
    enter = gain.argmax(axis=0)
    sub[m, :m] = gain[enter, np.arange(m)]
    # Arcs leaving the cycle to dependent d: the best cycle node as its head.
    leave_scores = s[np.ix_(outside, cyc)]  # (m, |C|)
    leave = leave_scores.argmax(axis=1)
    sub[:m, m] = leave_scores[np.arange(m), leave]
    sub_heads = chu_liu_edmonds(sub)
    result = heads.copy()
    for new_dep, new_head in enumerate(sub_heads[:m]):
        if new_dep == 0:
            continue
        dep = outside[new_dep]
        result[dep] = cyc[leave[new_dep]] if new_head == m else outside[new_head]
    head_of_cycle = sub_heads[m]  # the outside node the cycle hangs from
    result[cyc[enter[head_of_cycle]]] = outside[head_of_cycle]
    result[0] = -1
    return result


def _find_cycle(heads: np.ndarray) -> list[int] | None:
    """A cycle of the head graph (not through the root), or None."""
    n = len(heads)
    state = np.zeros(n, dtype=np.int8)  # 0 unvisited, 1 on the current path, 2 done
    state[0] = 2
    for start in range(1, n):
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = heads[node]
        if state[node] == 1:  # closed a loop on this path
            return path[path.index(node):]
        for visited in path:
            state[visited] = 2
    return None
