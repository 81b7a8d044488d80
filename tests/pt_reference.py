"""Naive references for the PT forward, written straight from docs/design.md's equations (§2; ROOT §9).

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
            q = [N * torch.softmax(s[i] / c.label_temperature, -1) if valid[i] else torch.zeros(N, dtype=U.dtype)
                 for i in range(n)]
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
                        logits.append(sc.head_logit * torch.dot(q[i] @ U[k, ch], q[j] @ V[k, ch]) / sc.head_temperature)
                    probs = torch.softmax(torch.stack(logits), 0)
                    for j, p in zip(cands, probs, strict=True):
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
    n = input_ids.shape[1]
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


def naive_root_inference(
    model: PTForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """docs/design.md §2 with the ROOT variable of §9, token by token, from the model's parameters only.

    ROOT is an extra label Z_0 with unary alpha_in * rho; every real word's head ranges over ROOT and the
    other real words; choosing ROOT scores through the root bucket U^R_c V^R_c^T; ROOT has no head, sends
    the child-direction message to each word and receives the head-direction message from all;
    s_0 = alpha_in * rho + m_0 (no latent). Returns the final s (B, n, N), ROOT's final s_0 (B, N), and
    the last iteration's head marginals over words (B, h, n, n) and over ROOT (B, h, n).
    """
    c = model.config
    sc = c.scales()
    N, M, D, h = c.hidden_size, c.latent_size, c.max_distance, c.num_channels
    U, V = sc.ternary * model.ternary.U, sc.ternary * model.ternary.V  # (K, h, N, r)
    UR, VR = sc.ternary * model.root.U, sc.ternary * model.root.V  # (h, N, r)
    rho = sc.input * model.root.rho
    Bm = sc.latent * model.latent.B if model.latent is not None else None
    zero = torch.zeros((), dtype=U.dtype)
    words, roots, word_heads, root_heads = [], [], [], []
    for b in range(input_ids.shape[0]):
        ids, valid = input_ids[b], attention_mask[b].bool()
        n = ids.shape[0]
        unary = []
        for i in range(n):
            u = sc.input * model.unary.weight[ids[i]]
            if model.position is not None:
                u = u + sc.input * model.position.weight[i]
            unary.append(u)
        s, s0 = list(unary), rho
        for _ in range(c.num_iterations):
            q = [N * torch.softmax(s[i] / c.label_temperature, -1) if valid[i] else torch.zeros(N, dtype=U.dtype)
                 for i in range(n)]
            q0 = N * torch.softmax(s0 / c.label_temperature, -1)
            a = [[[zero] * n for _ in range(n)] for _ in range(h)]  # a[c][i][j] = Q(H_i^c = j)
            a0 = [[zero] * n for _ in range(h)]  # a0[c][i] = Q(H_i^c = ROOT)
            for ch in range(h):
                for i in range(n):
                    if not valid[i]:
                        continue
                    cands = [j for j in range(n) if j != i and valid[j]]
                    logits = [sc.head_logit * torch.dot(q[i] @ U[bucket(i, j, D), ch], q[j] @ V[bucket(i, j, D), ch])
                              for j in cands]
                    logits.append(sc.head_logit * torch.dot(q[i] @ UR[ch], q0 @ VR[ch]))  # ROOT as i's head
                    probs = torch.softmax(torch.stack(logits) / sc.head_temperature, 0)
                    for j, p in zip(cands, probs[:-1], strict=True):
                        a[ch][i][j] = p
                    a0[ch][i] = probs[-1]
            new_s = []
            for i in range(n):
                m = torch.zeros(N, dtype=U.dtype)
                for ch in range(h):
                    for j in range(n):
                        if j == i:
                            continue
                        k_ij, k_ji = bucket(i, j, D), bucket(j, i, D)
                        m = m + a[ch][i][j] * (U[k_ij, ch] @ (q[j] @ V[k_ij, ch]))  # i as child of j
                        m = m + a[ch][j][i] * (V[k_ji, ch] @ (q[j] @ U[k_ji, ch]))  # i as head of j
                    m = m + a0[ch][i] * (UR[ch] @ (q0 @ VR[ch]))  # i as ROOT's child
                if Bm is not None and valid[i]:
                    g = M * torch.softmax(sc.latent_logit * (Bm @ q[i]) / c.latent_temperature, -1)
                    m = m + Bm.t() @ g
                new_s.append(unary[i] + m)
            m0 = torch.zeros(N, dtype=U.dtype)
            for ch in range(h):
                for i in range(n):
                    m0 = m0 + a0[ch][i] * (VR[ch] @ (q[i] @ UR[ch]))  # ROOT as i's head
            s, s0 = new_s, rho + m0
        words.append(torch.stack(s))
        roots.append(s0)
        word_heads.append(torch.stack([torch.stack([torch.stack(row) for row in a[ch]]) for ch in range(h)]))
        root_heads.append(torch.stack([torch.stack(a0[ch]) for ch in range(h)]))
    return torch.stack(words), torch.stack(roots), torch.stack(word_heads), torch.stack(root_heads)
