"""How one MFVI iteration evaluates the ternary factors T_ck = U_ck V_ck^T over distance buckets.

Every kernel computes the same three quantities of docs/design.md §2, for K directed buckets k(i, j)
and h channels c, from the scaled label marginals q (B, n, N):

    project   qry_ck = q U_ck,  key_ck = q V_ck                                      (per bucket)
    scores    <qry_{c,k(i,j)}[i], key_{c,k(i,j)}[j]>  for every ordered pair            (B, h, n, n)
    messages  m_i = sum_cj a[c,i,j] U_{c,k(i,j)} key[j]  +  sum_cj a[c,j,i] V_{c,k(j,i)} qry[j]   (B, n, N)

They differ only in how much work that takes (docs/design.md §8):

- ``reference``: every bucket as a full n x n product, selected by k(i, j); K products. Obviously
  right, and what the other two are tested against (float64, 1e-10).
- ``banded``: the v0.2 path. Projections by einsum; the near buckets (|i - j| < D) as banded dot
  products; the two far buckets as two masked full products.
- ``fast``: ONE GEMM of q with the stacked [N, 2*K*h*r] U|V weights gives every query and key; the
  near buckets live on the 2(D-1) diagonals next to the main one (banded dot products, O(n r) each);
  the two far buckets come from one batched n x n product per channel, split by triangle (j <= i-D
  from the "left" bucket, j >= i+D from the "right" one); contexts go back through ONE GEMM with the
  same stacked weights. Only explicit matmuls (no 3-operand einsum: under torch.compile those start
  a contraction-path search and recompile).

A kernel is built once per forward for a sequence length n (its masks depend only on n and D) and
is called T times. Padding is not the kernel's business: q is 0 on pad rows and the caller masks
scores and marginals.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

KERNEL_NAMES = ("reference", "banded", "fast")


def bucket_index(n: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """k(i, j) for every ordered pair: (min(|j-i|, D) - 1) + D * [j > i]; the diagonal is unused."""
    pos = torch.arange(n, device=device)
    offset = pos[None, :] - pos[:, None]  # (n, n): j - i
    dist = offset.abs().clamp(min=1, max=max_distance)
    return (dist - 1) + max_distance * (offset > 0).long()


def near_buckets(max_distance: int) -> list[tuple[int, int]]:
    """(bucket id, offset j - i) of the buckets that hold a single distance: |j - i| < D."""
    D = max_distance
    return [(d - 1, -d) for d in range(1, D)] + [(D + d - 1, d) for d in range(1, D)]


Buckets = tuple[torch.Tensor, ...]  # K tensors, one per bucket k: (B, h, n, r), or (B, n, h, r) in the fast kernel


class BucketKernel(Protocol):
    # The effective U, V are the same in all T iterations: a kernel lays them out once per forward
    # (``weights``) and every iteration's projection and messages use that one copy.
    def weights(self, U: torch.Tensor, V: torch.Tensor) -> tuple:
        """U, V (K, h, N, r) in the layout ``project`` and ``messages`` take."""

    # Queries and keys travel as one tensor per bucket: indexing one big (K, ...) tensor per bucket
    # would make every backward of that index allocate and fill a K-times larger zero gradient.
    def project(self, q: torch.Tensor, weights: tuple) -> tuple[Buckets, Buckets]:
        """(qry, key): qry[k] = q U_k and key[k] = q V_k, in the kernel's own layout."""

    def scores(self, qry: Buckets, key: Buckets) -> torch.Tensor:
        """(B, h, n, n); the diagonal i = j is arbitrary (the caller masks it)."""

    def messages(self, a: torch.Tensor, qry: Buckets, key: Buckets, weights: tuple) -> torch.Tensor:
        """(B, n, N) from head marginals a (B, h, n, n) that are 0 on the diagonal."""


class ReferenceKernel:
    """Every bucket as a full product, the pair's own bucket selected by a mask."""

    def __init__(self, n: int, max_distance: int, device: torch.device):
        K = 2 * max_distance
        index = bucket_index(n, max_distance, device)
        self.masks = torch.stack([index == k for k in range(K)])[:, None, None]  # (K, 1, 1, n, n)

    def weights(self, U, V):
        return U, V

    def project(self, q, weights):
        U, V = weights
        # (1, B, 1, n, N) @ (K, 1, h, N, r): queries and keys of every bucket and channel.
        return (q[None, :, None] @ U[:, None]).unbind(0), (q[None, :, None] @ V[:, None]).unbind(0)

    def scores(self, qry, key):
        qry, key = torch.stack(qry), torch.stack(key)
        return ((qry @ key.transpose(-1, -2)) * self.masks).sum(0)

    def messages(self, a, qry, key, weights):
        U, V = weights
        qry, key = torch.stack(qry), torch.stack(key)
        a_k = a[None] * self.masks  # (K, B, h, n, n): each pair's mass in its own bucket only
        child = (a_k @ key) @ U.transpose(-1, -2)[:, None]  # (K, B, h, n, N): i as child of j
        head = (a_k.transpose(-1, -2) @ qry) @ V.transpose(-1, -2)[:, None]  # i as head of j
        return (child + head).sum(dim=(0, 2))


class BandedKernel:
    """The v0.2 path, kept as the speed baseline: einsum projections, near buckets gathered from a
    band of shifted dot products, far buckets as two masked full products."""

    def __init__(self, n: int, max_distance: int, device: torch.device):
        D = self.max_distance = max_distance
        offset = torch.arange(n, device=device)
        offset = offset[None, :] - offset[:, None]  # (n, n): j - i
        self.far = (offset <= -D, offset >= D)
        self.near = near_buckets(D)
        rows = torch.arange(n, device=device)[:, None]
        cols = rows + torch.tensor([off for _, off in self.near], device=device, dtype=torch.long)[None, :]
        self.band_exists = (cols >= 0) & (cols < n)  # (n, W): entry (i, i + off) inside the sequence
        self.band_index = rows * n + cols.clamp(0, n - 1)  # flat index of (i, i + off)

    @staticmethod
    def _shift(x: torch.Tensor, off: int) -> torch.Tensor:
        """y[..., i, :] = x[..., i + off, :], zero where i + off is outside the sequence."""
        n = x.shape[-2]
        if abs(off) >= n:  # a bucket reaching past the sequence: no pair in it
            return torch.zeros_like(x)
        if off >= 0:
            return F.pad(x[..., off:, :], (0, 0, 0, off))
        return F.pad(x[..., : n + off, :], (0, 0, -off, 0))

    def weights(self, U, V):
        return U, V

    def project(self, q, weights):
        U, V = weights
        return torch.einsum("bia,khar->kbhir", q, U).unbind(0), torch.einsum("bia,khar->kbhir", q, V).unbind(0)

    def scores(self, qry, key):
        D = self.max_distance
        lo, hi = D - 1, 2 * D - 1  # bucket ids of j <= i-D and j >= i+D
        e = (qry[lo] @ key[lo].transpose(-1, -2)) * self.far[0] + (qry[hi] @ key[hi].transpose(-1, -2)) * self.far[1]
        if not self.near:
            return e
        # band: (B, h, n, W)
        band = torch.stack([(qry[k] * self._shift(key[k], off)).sum(-1) for k, off in self.near], dim=-1)
        flat_index = self.band_index.flatten().expand(*band.shape[:2], -1)
        return e.flatten(-2).scatter_add(-1, flat_index, band.flatten(-2)).view_as(e)

    def messages(self, a, qry, key, weights):
        U, V = weights
        D = self.max_distance
        child: list[torch.Tensor] = [None] * (2 * D)  # type: ignore[list-item]
        head: list[torch.Tensor] = [None] * (2 * D)  # type: ignore[list-item]
        for k, mask in ((D - 1, self.far[0]), (2 * D - 1, self.far[1])):
            a_k = a * mask
            child[k] = a_k @ key[k]
            head[k] = a_k.transpose(-1, -2) @ qry[k]
        if self.near:
            n = a.shape[-1]
            a_band = a.flatten(-2).gather(-1, self.band_index.flatten().expand(*a.shape[:2], -1))
            a_band = a_band.view(*a.shape[:2], n, len(self.near)) * self.band_exists.to(a.dtype)  # a[i, i+off]
            for w, (k, off) in enumerate(self.near):
                a_w = a_band[..., w, None]
                child[k] = a_w * self._shift(key[k], off)
                head[k] = self._shift(a_w * qry[k], -off)
        child_t, head_t = torch.stack(child), torch.stack(head)
        return torch.einsum("kbhir,khar->bia", child_t, U) + torch.einsum("kbhir,khar->bia", head_t, V)


class FastKernel:
    """Stacked GEMMs, diagonals for the near buckets, one triangular-split product for the far ones.

    Its queries and keys stay in the GEMM's token-major layout, (B, n, h, r) per bucket (views of
    the one projection), so that neither the projection nor the contexts need a layout copy; only
    the two far buckets are copied, into the channel-major (2, B, h, n, r) their products need.
    """

    def __init__(self, n: int, max_distance: int, device: torch.device):
        D = self.max_distance = max_distance
        self.n = n
        offset = torch.arange(n, device=device)
        self.left = (offset[None, :] - offset[:, None]) <= -D  # j <= i - D: bucket D-1; the rest of the
        self.far = [D - 1, 2 * D - 1]  # off-band triangle (and the masked diagonal) is bucket 2D-1
        self.near = near_buckets(D)

    def weights(self, U, V):
        K, h, N, r = U.shape
        # [N, 2*K*h*r]: columns ordered (U|V, bucket, channel, rank), the layout both GEMMs use.
        return torch.stack([U, V]).permute(3, 0, 1, 2, 4).reshape(N, 2 * K * h * r), U.shape

    def project(self, q, weights):
        W, (K, h, _N, r) = weights
        B, n, _ = q.shape
        proj = q @ W  # (B, n, 2Khr): all queries and keys, ONE GEMM
        # unbind (not indexing): its backward is one stack, not 2K zero-filled full-size gradients.
        buckets = proj.view(B, n, 2 * K, h, r).unbind(2)  # 2K x (B, n, h, r)
        return buckets[:K], buckets[K:]

    def _far(self, x: Buckets) -> torch.Tensor:
        return torch.stack([x[k].transpose(1, 2) for k in self.far])  # (2, B, h, n, r)

    def _diagonal(self, off: int) -> tuple[int, int, int]:
        """Pair (i, i+off) lies on diagonal ``off``: its length and the first row i0 and column j0
        (clamped, so an empty diagonal, |off| >= n, pads to n)."""
        n = self.n
        return max(n - abs(off), 0), min(max(-off, 0), n), min(max(off, 0), n)

    def scores(self, qry, key):
        far = self._far(qry) @ self._far(key).transpose(-1, -2)  # (2, B, h, n, n): one batched product
        e = torch.where(self.left, far[0], far[1])
        for k, off in self.near:  # the band: <qry[i], key[i+off]> on diagonal `off`, O(n r) each
            length, i0, j0 = self._diagonal(off)
            band = (qry[k][:, i0:i0 + length] * key[k][:, j0:j0 + length]).sum(-1)  # (B, length, h)
            e.diagonal(off, -2, -1).copy_(band.transpose(1, 2))
        return e

    def messages(self, a, qry, key, weights):
        W, (K, h, _N, r) = weights
        B, n = a.shape[0], self.n
        D = self.max_distance
        # Far buckets: a split by triangle; both directions from the same materialised a.
        a_far = torch.stack([a.tril(-D), a.triu(D)])  # (2, B, h, n, n)
        child_far = (a_far @ self._far(key)).transpose(-2, -3)  # sum_j a[i,j] key[j], (2, B, n, h, r)
        head_far = (a_far.transpose(-1, -2) @ self._far(qry)).transpose(-2, -3)  # sum_i a[i,j] qry[i]
        child: list[torch.Tensor] = [None] * K  # type: ignore[list-item]
        head: list[torch.Tensor] = [None] * K  # type: ignore[list-item]
        for w, k in enumerate(self.far):
            child[k], head[k] = child_far[w], head_far[w]
        for k, off in self.near:
            length, i0, j0 = self._diagonal(off)
            a_d = a.diagonal(off, -2, -1).transpose(1, 2)[..., None]  # (B, length, h, 1)
            child[k] = F.pad(a_d * key[k][:, j0:j0 + length], (0, 0, 0, 0, i0, n - i0 - length))
            head[k] = F.pad(a_d * qry[k][:, i0:i0 + length], (0, 0, 0, 0, j0, n - j0 - length))
        # Child contexts go back through U, head contexts through V: stacked straight into the GEMM's
        # layout (B, n, [U|V, bucket, channel, rank]) and ONE GEMM with the stacked weights.
        contexts = torch.stack(child + head, dim=2).view(B, n, 2 * K * h * r)
        return contexts @ W.t()


KERNELS: dict[str, type] = {"reference": ReferenceKernel, "banded": BandedKernel, "fast": FastKernel}


def resolve_kernel_name(name: str, device: torch.device) -> str:
    """``auto``: the fast kernel on accelerators; on CPU the banded one, which trains as fast there
    in eager mode (benchmarks/results: the GEMMs are the same, CPU elementwise passes cost the same)
    and keeps every committed CPU result reproducible to the bit."""
    if name == "auto":
        return "banded" if device.type == "cpu" else "fast"
    if name not in KERNELS:
        raise ValueError(f"mfvi_kernel must be 'auto' or one of {KERNEL_NAMES}, got {name!r}")
    return name


def build_kernel(name: str, n: int, max_distance: int, device: torch.device) -> BucketKernel:
    return KERNELS[resolve_kernel_name(name, device)](n, max_distance, device)
