"""Naive references for the PT forward, written straight from the design-note equations.

Loops over tokens, heads and channels (no vectorisation, no banding) so that a bug in the fast
implementation cannot be shared by the reference. Dropout is assumed off.
"""

from __future__ import annotations

import torch

from probformer.models.pt.modeling_pt import PTForMaskedLM


def bucket(i: int, j: int, max_distance: int) -> int:
    dist = min(abs(j - i), max_distance)
    return (dist - 1) + (max_distance if j > i else 0)


def naive_label_logits(model: PTForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Design note section 2, token by token: returns the final s (B, n, N)."""
    c = model.config
    sc = c.scales()
    N, M, D, h = c.hidden_size, c.latent_size, c.max_distance, c.num_channels
    U = sc.ternary * model.ternary.U
    V = sc.ternary * model.ternary.V
    Bm = sc.latent * model.latent.B if model.latent is not None else None
    out = []
    for b in range(input_ids.shape[0]):
        ids, valid = input_ids[b], attention_mask[b].bool()
        n = ids.shape[0]
        unary = [sc.input * model.unary.weight[ids[i]] for i in range(n)]
        s = list(unary)
        for _ in range(c.num_iterations):
            q = [N * torch.softmax(s[i] / c.label_temperature, -1) if valid[i] else torch.zeros(N, dtype=U.dtype) for i in range(n)]
            new_s = []
            # head marginals a[c][i][j]
            a = [[[torch.tensor(0.0, dtype=U.dtype)] * n for _ in range(n)] for _ in range(h)]
            for ch in range(h):
                for i in range(n):
                    cands = [j for j in range(n) if j != i and valid[j] and valid[i]]
                    if not cands:
                        continue
                    logits = []
                    for j in cands:
                        k = bucket(i, j, D)
                        logits.append(sc.head_logit * torch.dot(q[i] @ U[k, ch], q[j] @ V[k, ch]) / c.head_temperature)
                    probs = torch.softmax(torch.stack(logits), 0)
                    for j, p in zip(cands, probs):
                        a[ch][i][j] = p
            for i in range(n):
                m = torch.zeros(N, dtype=U.dtype)
                for ch in range(h):
                    for j in range(n):
                        if j == i:
                            continue
                        k_ij, k_ji = bucket(i, j, D), bucket(j, i, D)
                        m = m + a[ch][i][j] * (U[k_ij, ch] @ (q[j] @ V[k_ij, ch]))  # i as child of j
                        m = m + a[ch][j][i] * (V[k_ji, ch] @ (q[j] @ U[k_ji, ch]))  # i as head of j
                if Bm is not None and valid[i]:
                    g = M * torch.softmax(sc.latent_logit * (Bm @ q[i]) / c.latent_temperature, -1)
                    m = m + Bm.t() @ g
                new_s.append(unary[i] + m)
            s = new_s
        out.append(torch.stack(s))
    return torch.stack(out)


def forward_2023(model: PTForMaskedLM, input_ids: torch.Tensor) -> torch.Tensor:
    """The 2023 PT forward (reference/original-pt-code.md section 2) with T_2023 = N * U_eff V_eff^T.

    Unscaled probabilities Q, head logits N * <Q U_2023, Q V_2023>, messages T Q; no latent factor,
    no padding. Written with dense T per bucket and channel, as the 2023 code's "full" mode.
    """
    c = model.config
    sc = c.scales()
    N, D = c.hidden_size, c.max_distance
    U = sc.ternary * model.ternary.U
    V = sc.ternary * model.ternary.V
    T = N * torch.einsum("khar,khbr->khab", U, V)  # (K, h, N, N)
    bsz, n = input_ids.shape
    k_of = torch.tensor([[bucket(i, j, D) if i != j else 0 for j in range(n)] for i in range(n)])
    eye = torch.eye(n, dtype=torch.bool)
    unary = sc.input * model.unary.weight[input_ids]
    s = unary
    for _ in range(c.num_iterations):
        Q = torch.softmax(s, -1)  # (B, n, N)
        Tij = T[k_of]  # (n, n, h, N, N)
        F = torch.einsum("bix,ijhxy,bjy->bhij", Q, Tij, Q)
        logits = (N * F).masked_fill(eye, -1e9)
        a = torch.softmax(logits, -1)
        G = torch.einsum("bhij,ijhxy,bjy->bix", a, Tij, Q) + torch.einsum("bhji,jihyx,bjy->bix", a, Tij, Q)
        s = unary + G
    return s
