"""PT's ROOT variable (docs/design.md §9): its parameters and its terms in one MFVI iteration.

ROOT is a label variable Z_0 with N values placed before the first word. Every word's head H_i^c
ranges over {ROOT} and the other words; ROOT has no head of its own. Choosing ROOT scores the pair
through a dedicated *root bucket* T^R_c = U^R_c V^R_c^T per channel (no distance, no direction), so
in docs/design.md §2's equations ROOT is position 0 with k(i, 0) = root:

    qry^R[i] = q_i U^R_c,   key^R = q_0 V^R_c                                  (B, h, n, r), (B, h, r)
    e[c, i, ROOT] = (alpha_H / r) <qry^R[i], key^R>                            joins word i's head softmax
    m_i += sum_c a[c, i, ROOT] U^R_c key^R                                     i as the child of ROOT
    m_0  = sum_c sum_i a[c, i, ROOT] V^R_c qry^R[i]                            ROOT as the head of every word
    s_0  = dropout(alpha_in rho + m_0)                                          no latent G for ROOT

ROOT is kept out of the bucket kernels (:mod:`.bucket_kernels`): its terms are added beside theirs,
so the kernels' distance buckets, bands and triangles stay exactly as they are for the words, and
every kernel gets ROOT from the same few GEMMs here. Roles (docs/design.md §4, 9): rho is an input
(a row of S, with S's init and alpha_in), U^R and V^R have U and V's role (hidden; lowrank under
head paradigm 1), init, lr and forward multiplier, so ROOT adds no width rule of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from probformer.parametrization import Role, tag


class RootFactors(nn.Module):
    """ROOT's parameters: unary rho in R^N and root-bucket factors U^R, V^R in R^{h x N x r}."""

    def __init__(self, num_channels: int, hidden_size: int, rank: int, role: Role = Role.HIDDEN):
        super().__init__()
        self.rho = nn.Parameter(torch.empty(hidden_size))
        self.U = nn.Parameter(torch.empty(num_channels, hidden_size, rank))
        self.V = nn.Parameter(torch.empty(num_channels, hidden_size, rank))
        tag(self, rho=Role.INPUT, U=role, V=role)  # U, V's role: hidden, lowrank under head paradigm 1

    def frobenius_norm(self) -> torch.Tensor:
        """sum_c ||U^R_c V^R_c^T||_F: the root bucket's share of the 2023 regulariser (docs/design.md §3)."""
        utu = self.U.transpose(-1, -2) @ self.U
        vtv = self.V.transpose(-1, -2) @ self.V
        return (utu * vtv.transpose(-1, -2)).sum(dim=(-1, -2)).clamp_min(1e-30).sqrt().sum()


class RootTerms:
    """ROOT's effective weights, laid out once per forward, and its three computations per iteration.

    U^R and V^R are stacked over channels as (N, h r) matrices, so each projection and each message
    back-projection is one GEMM, as in the fast kernel (docs/design.md §8).
    """

    def __init__(self, unary: torch.Tensor, U: torch.Tensor, V: torch.Tensor):
        h, N, r = U.shape
        self.unary = unary  # alpha_in rho, (N,)
        self.shape = (h, r)
        self.U = U.transpose(0, 1).reshape(N, h * r)  # (N, h r), columns (channel, rank)
        self.V = V.transpose(0, 1).reshape(N, h * r)

    def project(self, q: torch.Tensor, q_root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """qry^R = q U^R (B, h, n, r) for every word, key^R = q_0 V^R (B, h, r, 1) for ROOT."""
        (h, r), (bsz, n, _) = self.shape, q.shape
        qry = (q @ self.U).view(bsz, n, h, r).transpose(1, 2)
        key = (q_root @ self.V).view(bsz, h, r, 1)
        return qry, key

    @staticmethod
    def scores(qry: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """<qry^R[i], key^R> per channel and word: (B, h, n, 1), ROOT's column of the head logits."""
        return qry @ key

    def messages(self, a_root: torch.Tensor, qry: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From a_root = a[:, :, :, ROOT] (B, h, n): the child-direction message to every word (B, n, N)
        and the head-direction message ROOT receives from all of them (B, N)."""
        bsz, _, n = a_root.shape
        a = a_root[..., None]  # (B, h, n, 1)
        child = (a @ key.transpose(-1, -2)).transpose(1, 2).reshape(bsz, n, -1)  # a[c,i,0] key^R: (B, n, h r)
        head = (a.transpose(-1, -2) @ qry).reshape(bsz, -1)  # sum_i a[c,i,0] qry^R[i]: (B, h r)
        return child @ self.U.t(), head @ self.V.t()
