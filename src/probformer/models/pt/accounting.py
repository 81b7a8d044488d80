"""PT's accounting: parameters, training FLOPs per token and the activation memory its forward saves,
computed from a :class:`PTConfig` (docs/design.md section 6).

These are bookkeeping of this implementation, :meth:`PTForMaskedLM._iteration` with its bucket
kernels: tests hold the parameter count to the built model, the FLOPs to torch's FLOP counter and
the activation terms to what autograd saves. When the forward changes, the terms here change with it.
The generic machinery that uses them is :mod:`probformer.sizing`; the conventions behind the bytes
are in :mod:`probformer.sizing.activation_memory`'s docstring.
"""

from __future__ import annotations

import torch

from probformer.models.accounting import (
    TRAINING_FLOPS_PER_MAC,
    ActivationTerms,
    Precision,
    Term,
    readout_terms,
    split_counts,
)
from probformer.models.pt.bucket_kernels import resolve_kernel_name
from probformer.models.pt.configuration_pt import PTConfig

# The secondary knob the budget search turns when the width grid misses a budget: M scales only
# the latent factor, so it moves the count in small steps at any width.
BUDGET_KNOB = "latent_size"


def count_parameters(c: PTConfig) -> dict[str, int]:
    """Trainable parameters of :class:`PTForMaskedLM` (``total``, ``embedding``, ``non_embedding``):
    S, the read-out, P and ROOT's unary rho (a row of S) are the embedding-like tables; U, V, B and
    ROOT's root-bucket U^R, V^R (docs/design.md §9) are the rest. A task model has its
    ``num_labels x N`` read-out instead of the vocabulary one."""
    N, V = c.hidden_size, c.vocab_size
    embedding = V * N + N * V + V  # S; read-out W and b
    if c.use_position_unary:
        embedding += c.max_position_embeddings * N  # P
    non_embedding = 2 * c.num_buckets * c.num_channels * N * c.rank  # U, V
    if c.use_latent_factor:
        non_embedding += c.latent_size * N  # B
    if c.use_root:
        embedding += N  # rho
        non_embedding += 2 * c.num_channels * N * c.rank  # U^R, V^R: one more bucket
    return split_counts(embedding, non_embedding)


def training_flops_per_token(c: PTConfig, seq_len: int, mask_fraction: float) -> float:
    """6 x the multiply-adds per token of T MFVI iterations and the read-out::

        MACs = T * (2 K h r N + 2 K h r N + 6 h r (n + D' ) + 2 N M) + f * N V

    per iteration: the queries q U and keys q V for all K buckets and h channels (K h r wide each);
    the back-projections of both message directions onto U and V (K h r N each); the n x n work of
    the two far buckets (scores q.k, and the two message directions a key and a^T qry: 3 products
    of n r per token and channel, 6 for the two buckets) plus the banded near buckets
    (D' = min(D, n) - 1 diagonals, same 6 h r each); the latent factor's B q and B^T g (N M each,
    absent without the latent factor). The read-out N V runs at the masked fraction f.

    With ROOT (docs/design.md §9, :mod:`.root`), per iteration and token: the root-bucket query
    q U^R and the child message's back-projection through U^R (h r N each), ROOT's head logit, the
    child context a key^R and ROOT's share of the head context a^T qry^R (h r each); per sequence,
    so over n tokens: ROOT's key q_0 V^R and its message's back-projection through V^R (h r N each).
    The MLM loss never reaches ROOT's last update (ROOT is not read out), so that update's message
    (the head context and its back-projection) has a forward and no backward.
    """
    n = seq_len
    N, K, h, r = c.hidden_size, c.num_buckets, c.num_channels, c.rank
    near = min(c.max_distance, n) - 1
    per_iteration = 4 * K * h * r * N + 6 * h * r * (n + near)
    if c.use_latent_factor:
        per_iteration += 2 * N * c.latent_size
    if c.use_root:
        per_iteration += 2 * h * r * N + 3 * h * r + 2 * h * r * N / n
    macs = c.num_iterations * per_iteration + mask_fraction * N * c.vocab_size
    flops = TRAINING_FLOPS_PER_MAC * macs
    if c.use_root:  # the two gradient products (2 FLOPs per MAC each) of ROOT's last message, not run
        flops -= 2 * 2 * (h * r * N / n + h * r)
    return flops


def width_step(c: PTConfig) -> int:
    """Every width is allowed: channels (or rank) and M round to the nearest integer (under head
    paradigm 1 channels and rank stay fixed and only M rounds; the counts above read the config)."""
    return 1


def budget_knob_absent(c: PTConfig) -> str | None:
    """Why :data:`BUDGET_KNOB` cannot be tuned at ``c`` (None: it can)."""
    return None if c.use_latent_factor else "without the latent factor"


def activation_terms(c: PTConfig, seq_len: int, precision: Precision, mask_fraction: float) -> ActivationTerms:
    """The saved-for-backward terms of the bucket kernel ``c.mfvi_kernel`` resolves to on
    ``precision.device`` (auto: fast on CUDA, banded on CPU). Not modelled with ROOT (docs/design.md
    §9): its terms (the concatenated head logits, ROOT's column and contexts) are not booked yet, so
    such a config is refused rather than under-estimated."""
    if c.use_root:
        raise ValueError("pt: the activation-memory estimate does not model use_root=True yet "
                         "(ROOT's saved tensors are not booked); estimate the model without ROOT, "
                         "which saves slightly less")
    kernel = resolve_kernel_name(c.mfvi_kernel, torch.device(precision.device))
    tokens, fixed = _terms(c, seq_len, precision, mask_fraction, kernel)
    return ActivationTerms(c.num_iterations, kernel, tokens, fixed)


def _terms(c: PTConfig, n: int, p: Precision, f: float, kernel: str) -> tuple[tuple[Term, ...], tuple[Term, ...]]:
    """PTForMaskedLM._iteration with the ``banded`` or ``fast`` bucket kernel."""
    if kernel not in ("banded", "fast"):
        raise ValueError(f"pt: the activation estimate models the 'banded' and 'fast' kernels, not {kernel!r}")
    N, V, M, h, r = c.hidden_size, c.vocab_size, c.latent_size, c.num_channels, c.rank
    K, D = c.num_buckets, c.max_distance
    hr, hn, a = h * r, h * n, p.act
    near = D > 1  # buckets |i - j| < D live on diagonals; without them only the two far buckets exist
    latent = c.use_latent_factor
    q_uses = (2 if kernel == "banded" else 1) + int(latent)  # projections (einsum per U and V, or one GEMM) + B q
    tokens = [
        *readout_terms(V, f),
        Term("read-out input s (scored tokens)", f * p.matmul_input(N, 1), "once"),
        Term("candidate-head mask allowed (bool, B x n x n)", n, "shared"),
        Term("pad-row mask row_valid", 4, "shared"),
        Term("q: softmax(s) output (fp32)", 4 * N),
        Term("q as matmul input (queries, keys, latent)", p.matmul_input(N, q_uses)),
        Term("not-allowed mask of the head logits (bool)", n),
        Term("head marginals: softmax output (fp32, h x n per token)", 4 * hn),
    ]
    # From the softmax on, the message path holds a in the matmul dtype (a.to(matmul_dtype(s)) before
    # the head dropout, _iteration): p.act bytes per element, 2 under bf16 autocast.
    if c.head_dropout > 0:
        tokens.append(Term("head dropout mask (in a's matmul dtype)", p.dropout_mask(a) * hn))
    if kernel == "banded":
        tokens += [
            Term("far-bucket score operands (qry, key copies)", a * 4 * hr),
            Term("far-bucket marginals a_k (one storage for both message directions)", a * 2 * hn),
            Term("far-bucket context operands (key, qry copies)", a * 4 * hr),
            Term("contexts, child and head stacked (message einsums)", 2 * p.matmul_input(K * hr, 1)),
        ]
        if near:
            W = 2 * (D - 1)
            tokens += [
                Term("queries of all buckets (kept by the band products)", a * K * hr),
                Term("near-bucket shifted keys (scores and contexts)", a * 2 * W * hr),
                Term("head marginals a after dropout (kept by the band gather)", a * hn),
                Term("near-bucket marginals a[i, i+off]", a * h * W),
            ]
    else:
        tokens += [
            Term("far-bucket operands, channel-major copies (scores and contexts)", a * 8 * hr),
            Term("far-bucket marginals a split by triangle (one storage, both directions)", a * 2 * hn),
            Term("contexts stacked for the one message GEMM", p.matmul_input(2 * K * hr, 1)),
        ]
        if near:
            tokens += [
                Term("queries and keys q [U|V] (kept by the diagonal products)", a * 2 * K * hr),
                Term("head marginals a after dropout (kept by the diagonal products)", a * hn),
            ]
    if latent:
        tokens += [
            Term("latent g: softmax output (fp32)", 4 * M),
            Term("latent g as matmul input", p.matmul_input(M, 1)),
        ]
    if c.label_dropout > 0:
        tokens.append(Term("label dropout mask", p.dropout_mask(4) * N))
    tokens.append(Term("iteration input s_t (fp32, held by the checkpoint)", 4 * N, "kept_repeat"))

    KhNr = K * hr * N
    if kernel == "banded":
        fixed = [Term("U, V permuted for the einsums (4 copies)", a * 4 * KhNr),
                 Term("far-bucket masks (bool, n x n each)", 2 * n * n, "shared")]
        if near:
            W = 2 * (D - 1)
            fixed += [Term("band index (int64, n x W)", 8 * n * W, "shared"),
                      Term("band-exists mask in a's dtype (converted every iteration)", a * n * W)]
        fixed.append(Term("effective U, V (fp32, held by the checkpoint)", 4 * 2 * KhNr, "kept_once"))
    else:
        # The stacked [U|V] weight is built once per forward (kernel.weights) and used by both GEMMs
        # of every iteration; under autocast each GEMM saves its own low-precision cast of it.
        fixed = [Term("left-triangle mask (bool, n x n)", n * n, "shared")]
        if a == 4:
            fixed.append(Term("stacked [U|V] weights (built once per forward)", 4 * 2 * KhNr, "shared"))
        else:
            fixed += [Term("stacked [U|V] weight casts (projection and messages)", a * 2 * 2 * KhNr),
                      Term("stacked [U|V] weights (fp32, held by the checkpoint)", 4 * 2 * KhNr, "kept_once")]
    if latent:
        if p.dtype == "bf16":
            fixed += [Term("B casts (B q and B^T g)", 2 * 2 * M * N),
                      Term("effective B (fp32, held by the checkpoint)", 4 * M * N, "kept_once")]
        else:
            fixed.append(Term("effective B (fp32)", 4 * M * N, "shared"))
    if p.dtype == "bf16":
        fixed.append(Term("read-out weight cast (bf16)", 2 * V * N, "once"))
    return tuple(tokens), tuple(fixed)
