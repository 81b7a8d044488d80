"""Activation memory of MLM training: the bytes autograd saves for backward, estimated and measured.

Why an estimate: a GPU micro-batch has to be chosen before the first step, and the ladder's large
models do not fit on the machines that write them. Why a measurement: the estimate is bookkeeping
of one implementation (every tensor its forward saves), so tests hold it to what autograd really
saves (:func:`measure_saved_activation_bytes`) for each architecture, PT kernel and precision.
When a model's forward changes, its terms here change with it; each term is named after the tensor.

What is counted: the distinct storages the saved-tensor hooks see in one training forward (dropout
on; the read-out only at the scored positions, as the trainer runs it), parameters excluded:
- token terms, bytes per token (they scale with batch_size x seq_len), and
- fixed terms, bytes per forward that do not depend on the batch: weight-derived copies (bf16 casts,
  PT's effective and stacked weights) and per-length masks.
Each term has a scope: ``once`` per forward, ``repeat`` (once per layer / MFVI iteration), ``shared``
(saved inside every layer but one storage for all, e.g. a mask computed before the loop), and the
``kept_*`` scopes that only exist under activation checkpointing (what the checkpoint holds).
Not counted: gradients, optimizer state (:mod:`probformer.training_memory`) and temporaries that
die inside the forward.

Conventions that fix the bytes (checked by the tests on CPU; the CUDA rules are PyTorch's):
- bf16 autocast: matmul outputs are bf16, and each matmul casts its fp32 inputs anew (autocast only
  caches casts of leaf weights), so an fp32 tensor read by k matmuls is saved as k bf16 copies,
  against one shared fp32 tensor without autocast (:meth:`Precision.matmul_input`).
- The models keep their residual stream / label logits in fp32 under autocast (embeddings are not
  autocast) and compute their softmaxes in fp32.
- Dropout on CUDA saves a bool mask (1 byte per element, the fused kernel); on CPU it multiplies
  by a saved noise tensor of its input's dtype.
- LayerNorm under CUDA autocast runs in fp32 (a bf16 input is saved as an fp32 copy); on CPU it
  keeps its input's dtype. Its mean and rstd add 8 bytes per token.

Activation checkpointing (``enable_activation_checkpointing``: per layer / iteration, non-reentrant)
keeps each application's inputs (``kept_*``) plus the terms outside the loop; backward recomputes
one application at a time, so the peak adds one application's ``repeat`` terms.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PretrainedConfig

from probformer.models import model_classes

Scope = Literal["once", "repeat", "shared", "kept_repeat", "kept_once"]
DTYPES = ("fp32", "bf16")
DEVICES = ("cuda", "cpu")
ID_BYTES = 8  # int64 token ids / targets
LN_STATS_BYTES = 8  # LayerNorm's saved mean and rstd (fp32)


@dataclass(frozen=True)
class Precision:
    """Training precision: ``bf16`` is bf16 autocast over fp32 weights (the trainer's mode on CUDA)."""

    dtype: Literal["fp32", "bf16"] = "fp32"
    device: Literal["cuda", "cpu"] = "cuda"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"precision must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")

    @property
    def act(self) -> int:
        """Bytes of a matmul output element (and of a matmul's low-precision input copy)."""
        return 2 if self.dtype == "bf16" else 4

    def matmul_input(self, elements: float, uses: int) -> float:
        """Bytes saved for an fp32 tensor that ``uses`` matmuls read: itself, or one bf16 copy per use."""
        return 2 * elements * uses if self.dtype == "bf16" else 4 * elements

    def dropout_mask(self, input_bytes: int) -> int:
        return 1 if self.device == "cuda" else input_bytes

    def layer_norm_input(self, input_bytes: int) -> int:
        return 4 if self.device == "cuda" and self.dtype == "bf16" else input_bytes


@dataclass(frozen=True)
class Term:
    name: str
    nbytes: float  # per token (token terms) or per forward (fixed terms), for ONE application if repeated
    scope: Scope = "repeat"


@dataclass(frozen=True)
class ActivationEstimate:
    """Saved-for-backward bytes of one training forward, as named terms (see the module docstring)."""

    arch: str
    precision: Precision
    seq_len: int
    depth: int  # applications of the repeated terms: BERT layers, UT steps, PT iterations
    kernel: str | None  # PT's bucket kernel the terms describe; None for BERT / UT
    token_terms: tuple[Term, ...]
    fixed_terms: tuple[Term, ...]

    def _total(self, terms: tuple[Term, ...], checkpointing: bool, recompute: bool) -> float:
        if not checkpointing:
            weight = {"once": 1, "shared": 1, "repeat": self.depth, "kept_repeat": 0, "kept_once": 0}
        else:
            weight = {"once": 1, "shared": 1, "repeat": int(recompute), "kept_repeat": self.depth, "kept_once": 1}
        return sum(weight[t.scope] * t.nbytes for t in terms)

    def per_token(self, checkpointing: bool = False) -> float:
        """Bytes per token at the peak: all applications' activations, or under checkpointing the kept
        inputs plus one application recomputed in backward."""
        return self._total(self.token_terms, checkpointing, recompute=True)

    def fixed(self, checkpointing: bool = False) -> float:
        return self._total(self.fixed_terms, checkpointing, recompute=True)

    def kept_per_token(self) -> float:
        """Under checkpointing, what the forward itself saves per token (the measurable part)."""
        return self._total(self.token_terms, True, recompute=False)

    def micro_batch_bytes(self, batch_size: int, checkpointing: bool = False) -> float:
        return self.per_token(checkpointing) * batch_size * self.seq_len + self.fixed(checkpointing)

    def repeated_per_token(self) -> float:
        """One application's token terms (the extra a recompute or an extra layer costs)."""
        return sum(t.nbytes for t in self.token_terms if t.scope == "repeat")


def estimate_activation_memory(
    arch: str,
    config: PretrainedConfig,
    *,
    seq_len: int,
    precision: Precision = Precision(),
    mask_fraction: float = 0.15,
) -> ActivationEstimate:
    """The saved-for-backward bytes of ``arch`` at ``config`` for sequences of ``seq_len`` tokens,
    a fraction ``mask_fraction`` of them scored (the read-out runs there only). PT's terms follow the
    bucket kernel its ``mfvi_kernel`` resolves to on ``precision.device`` (auto: fast on CUDA)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not 0.0 <= mask_fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction!r}")
    model_classes(arch)  # validates the name
    if arch == "pt":
        from probformer.models.pt.bucket_kernels import resolve_kernel_name

        kernel = resolve_kernel_name(config.mfvi_kernel, torch.device(precision.device))
        tokens, fixed = _pt_terms(config, seq_len, precision, mask_fraction, kernel)
        return ActivationEstimate(arch, precision, seq_len, config.num_iterations, kernel, tokens, fixed)
    tokens, fixed = _encoder_terms(config, seq_len, precision, mask_fraction, shared_layer=arch == "ut")
    return ActivationEstimate(arch, precision, seq_len, config.num_layers, None, tokens, fixed)


def _readout_terms(V: int, f: float) -> list[Term]:
    """The vocabulary read-out at the scored fraction f of tokens, and the loss (all architectures)."""
    return [
        Term("token ids (embedding backward, int64)", ID_BYTES, "once"),
        Term("scored-position mask (bool)", 1, "once"),
        Term("log-softmax of the logits (fp32, scored tokens)", f * 4 * V, "once"),
        Term("targets (int64, scored tokens)", f * ID_BYTES, "once"),
    ]


def _pt_terms(c, n: int, p: Precision, f: float, kernel: str) -> tuple[tuple[Term, ...], tuple[Term, ...]]:
    """PTForMaskedLM._iteration with the ``banded`` or ``fast`` bucket kernel (models/pt)."""
    if kernel not in ("banded", "fast"):
        raise ValueError(f"pt: the activation estimate models the 'banded' and 'fast' kernels, not {kernel!r}")
    N, V, M, h, r = c.hidden_size, c.vocab_size, c.latent_size, c.num_channels, c.rank
    K, D = c.num_buckets, c.max_distance
    hr, hn, a = h * r, h * n, p.act
    near = D > 1  # buckets |i - j| < D live on diagonals; without them only the two far buckets exist
    latent = c.use_latent_factor
    q_uses = (2 if kernel == "banded" else 1) + int(latent)  # projections (einsum per U and V, or one GEMM) + B q
    tokens = _readout_terms(V, f) + [
        Term("read-out input s (scored tokens)", f * p.matmul_input(N, 1), "once"),
        Term("candidate-head mask allowed (bool, B x n x n)", n, "shared"),
        Term("pad-row mask row_valid", 4, "shared"),
        Term("q: softmax(s) output (fp32)", 4 * N),
        Term("q as matmul input (queries, keys, latent)", p.matmul_input(N, q_uses)),
        Term("not-allowed mask of the head logits (bool)", n),
        Term("head marginals: softmax output (fp32, h x n per token)", 4 * hn),
    ]
    if c.head_dropout > 0:
        tokens.append(Term("head dropout mask", p.dropout_mask(4) * hn))
    if kernel == "banded":
        tokens += [
            Term("far-bucket score operands (qry, key copies)", a * 4 * hr),
            Term("far-bucket marginals a_k (both message directions)", 2 * p.matmul_input(hn, 2)),
            Term("far-bucket context operands (key, qry copies)", a * 4 * hr),
            Term("contexts, child and head stacked (message einsums)", 2 * p.matmul_input(K * hr, 1)),
        ]
        if near:
            W = 2 * (D - 1)
            tokens += [
                Term("queries of all buckets (kept by the band products)", a * K * hr),
                Term("near-bucket shifted keys (scores and contexts)", a * 2 * W * hr),
                Term("head marginals a (kept by the band gather, fp32)", 4 * hn),
                Term("near-bucket marginals a[i, i+off] (fp32)", 4 * h * W),
            ]
    else:
        tokens += [
            Term("far-bucket operands, channel-major copies (scores and contexts)", a * 8 * hr),
            Term("far-bucket marginals a split by triangle (both directions)", p.matmul_input(2 * hn, 2)),
            Term("contexts stacked for the one message GEMM", p.matmul_input(2 * K * hr, 1)),
        ]
        if near:
            tokens += [
                Term("queries and keys q [U|V] (kept by the diagonal products)", a * 2 * K * hr),
                Term("head marginals a (kept by the diagonal products, fp32)", 4 * hn),
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
                      Term("band-exists mask as fp32 (converted every iteration)", 4 * n * W)]
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


def _encoder_terms(c, n: int, p: Precision, f: float, *,
                   shared_layer: bool) -> tuple[tuple[Term, ...], tuple[Term, ...]]:
    """BERT's layer (post-LN or pre-LN), embeddings and MLM head; UT runs the same layer T times."""
    N, V, I, H = c.hidden_size, c.vocab_size, c.intermediate_size, c.num_heads
    hn, a = H * n, p.act
    pre_ln = getattr(c, "pre_layer_norm", False)
    hidden_dropout, attention_dropout = c.hidden_dropout > 0, c.attention_dropout > 0
    ln = 4 * N + LN_STATS_BYTES  # the residual stream is fp32 under autocast, so its LayerNorms save fp32
    tokens = _readout_terms(V, f)
    if not pre_ln:
        tokens.append(Term("embedding LayerNorm input + stats", ln, "once"))
    if hidden_dropout:
        tokens.append(Term("embedding dropout mask", p.dropout_mask(4) * N, "once"))
    if pre_ln:
        tokens.append(Term("final LayerNorm input + stats (scored tokens)", f * ln, "once"))
    tokens += [
        Term("head dense input (scored tokens)", f * p.matmul_input(N, 1), "once"),
        Term("head GELU input (scored tokens)", f * a * N, "once"),
        Term("head LayerNorm input + stats (scored tokens)", f * (p.layer_norm_input(a) * N + LN_STATS_BYTES), "once"),
        Term("decoder input (scored tokens)", f * a * N, "once"),
        Term("Q, K, V projection input", p.matmul_input(N, 3)),
        Term("q, k, v per head (contiguous copies)", 3 * a * N),
        Term("attention softmax output (fp32, heads x n per token)", 4 * hn),
        Term("key padding mask (bool)", 1),
        Term("attention output projection input (context)", a * N),
        Term("first LayerNorm input + stats", ln),
        Term("FFN input", p.matmul_input(N, 1)),
        Term("GELU input", a * I),
        Term("FFN output projection input (GELU output)", a * I),
        Term("second LayerNorm input + stats", ln),
        Term("layer input (fp32, held by the checkpoint)", 4 * N, "kept_repeat"),
        Term("key padding mask (bool, held by the checkpoint)", 1, "kept_once"),
    ]
    if attention_dropout:
        tokens.append(Term("attention dropout mask", p.dropout_mask(a) * hn))
    if attention_dropout or a != 4:  # without dropout in fp32 the AV operand IS the softmax output
        tokens.append(Term("attention probabilities as AV operand", a * hn))
    if hidden_dropout:
        tokens += [Term("attention-output dropout mask", p.dropout_mask(a) * N),
                   Term("FFN dropout mask", p.dropout_mask(a) * N)]
    fixed: list[Term] = []
    if p.dtype == "bf16":  # autocast caches one cast per leaf weight per forward; the matmuls save it
        layer = 2 * (4 * N * N + 2 * N * I)
        fixed += [Term("layer weight casts (bf16)", layer, "shared" if shared_layer else "repeat"),
                  Term("head and decoder weight casts (bf16)", 2 * (N * N + V * N), "once")]
    return tuple(tokens), tuple(fixed)


def measure_saved_activation_bytes(model: torch.nn.Module, batch, precision: str = "fp32") -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward of
    ``model`` on ``batch`` (a :class:`~probformer.data.batches.Batch`), parameters excluded.

    Storages are deduplicated by data pointer (views and tensors saved by several ops count once)
    and kept alive until the count is done, so no address is reused. ``precision="bf16"`` runs the
    forward under bf16 autocast on the model's device, as the trainer does.
    """
    device = next(model.parameters()).device
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage
        return t

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                    scored_logits_only=True)
    total = sum(s.nbytes() for s in saved.values())
    del out
    return total
