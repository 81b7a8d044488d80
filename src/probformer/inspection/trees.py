"""Trees from a head distribution: the argmax head of each word, and the maximum spanning tree.

Input everywhere: ``probs`` (W, W), rows dependents, columns heads, ``probs[u, v]`` = P(head of
word u = word v) (:mod:`.words`), and ``root`` (W,) = P(head of word u = ROOT) for a model with its
own ROOT (PT with ``use_root``, docs/design.md §9), None for one without. Output: heads as in
CoNLL-U, 1-based, 0 = ROOT.

The tree is the maximum spanning arborescence (Chu-Liu/Edmonds) of the graph ROOT + words, arc
score log P(head of u = v), with a single root:

- Without ROOT, every ROOT arc gets one constant score low enough that a tree with two root arcs
  always scores below any tree with one: the tree has a single root, and since every word's ROOT
  arc scores the same, which word is the root is decided by the arcs between words alone.
- With ROOT, word u's ROOT arc scores log P(head of u = ROOT) - C, one penalty C for all words.
  Every single-root tree loses exactly C, so the best single-root tree is unchanged (which word is
  the root is decided by the model's ROOT probabilities together with the word arcs), and C is
  chosen so large that any tree with two or more root arcs scores below every single-root tree
  (:func:`arc_scores`): the maximum spanning arborescence is then the best single-root tree. That is
  the constant-penalty reduction of Gabow & Tarjan (1984), also used by Zmigrod et al. (2020,
  "Please Mind the Root"); the tests check it against networkx's best tree over every choice of
  the root word.

Chu-Liu/Edmonds is implemented here (numpy, O(W^3)); the tests check it against networkx's
``maximum_spanning_arborescence`` (pure Python: far too slow for 30 readings of a whole treebank).
"""

from __future__ import annotations

import numpy as np

LOG_FLOOR = 1e-12  # probabilities below this score as log(1e-12): arcs the model rules out stay usable


def argmax_heads(probs: np.ndarray, root: np.ndarray | None = None) -> np.ndarray:
    """Each word's most probable head (ties: the leftmost, ROOT before the words); not a tree in
    general. Without ROOT probabilities never ROOT (a one-word sentence's word gets ROOT); with them
    ROOT whenever the model puts the most mass there."""
    W = probs.shape[0]
    if root is not None:
        words = np.where(np.eye(W, dtype=bool), -np.inf, probs)
        return np.concatenate([np.asarray(root, dtype=np.float64)[:, None], words], axis=1).argmax(axis=1)
    if W == 1:
        return np.zeros(1, dtype=np.int64)
    scores = np.where(np.eye(W, dtype=bool), -np.inf, probs)
    return scores.argmax(axis=1) + 1


def arc_scores(probs: np.ndarray, root: np.ndarray | None = None) -> np.ndarray:
    """(W + 1, W + 1) scores[dep, head] over ROOT (index 0) + words; ROOT has no head. Root arcs: a
    constant without ``root``; log ``root`` minus one penalty with it (module docstring)."""
    W = probs.shape[0]
    logp = np.log(np.maximum(probs, LOG_FLOOR))
    off_diagonal = logp[~np.eye(W, dtype=bool)]
    lo, hi = (off_diagonal.min(), off_diagonal.max()) if W > 1 else (0.0, 0.0)
    if root is None:
        # One root arc + (W - 1) word arcs >= root + (W - 1) lo  >  2 root + (W - 2) hi >= any two-root tree.
        root_scores = (W - 1) * lo - (W - 2) * hi - 1.0
    else:
        log_root = np.log(np.maximum(np.asarray(root, dtype=np.float64), LOG_FLOOR))
        # A single-root tree scores >= min(log_root) - C + (W - 1) lo; a tree with k >= 2 root arcs at most
        # k (max(log_root) - C) + (W - k) hi, largest at k = 2 once C > max(log_root) - hi (implied below).
        # C > 2 max - min + (W - 2) hi - (W - 1) lo puts every such tree below every single-root tree.
        penalty = 2 * log_root.max() - log_root.min() + (W - 2) * hi - (W - 1) * lo + 1.0
        root_scores = log_root - penalty
    scores = np.full((W + 1, W + 1), -np.inf)
    scores[1:, 1:] = np.where(np.eye(W, dtype=bool), -np.inf, logp)
    scores[1:, 0] = root_scores
    return scores


def mst_heads(probs: np.ndarray, root: np.ndarray | None = None) -> np.ndarray:
    """The maximum spanning tree over words + ROOT with a single root; ROOT arcs scored by the
    model's ``root`` probabilities when given (module docstring)."""
    heads = chu_liu_edmonds(arc_scores(probs, root))[1:]
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
