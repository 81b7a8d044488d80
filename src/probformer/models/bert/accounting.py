"""The encoder families' accounting: parameters, training FLOPs per token and the activation memory
of BERT's layer, embeddings and MLM head, from a :class:`ProbformerBertConfig` (docs/design.md
section 6). The Universal Transformer runs this same layer T times with one set of weights, so its
accounting (``models/ut/accounting.py``) is these functions with ``shared_layer=True``.

Bookkeeping of this implementation: tests hold the count to the built model, the FLOPs to torch's
FLOP counter and the activation terms to what autograd saves; the conventions behind the bytes are
in :mod:`probformer.sizing.activation_memory`'s docstring.
"""

from __future__ import annotations

from probformer.models.accounting import (
    LN_STATS_BYTES,
    TRAINING_FLOPS_PER_MAC,
    ActivationTerms,
    Precision,
    Term,
    readout_terms,
    split_counts,
)
from probformer.models.bert.configuration_bert import ProbformerBertConfig

# The secondary knob the budget search turns when the width grid (multiples of head_dim) is too
# coarse for a budget: the FFN size moves the count in small steps at any width.
BUDGET_KNOB = "intermediate_size"


def count_parameters(c: ProbformerBertConfig, *, shared_layer: bool = False) -> dict[str, int]:
    """Trainable parameters (``total``, ``embedding``, ``non_embedding``), tied weights once. The
    lookup tables and the decoder (its weight when untied, and its bias) are the embedding part."""
    N, I, V, L = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_layers
    embedding = V * N + c.max_position_embeddings * N + N + V  # word, position, token type, decoder bias
    if not c.tie_word_embeddings:
        embedding += V * N  # untied (muP) decoder weight
    if shared_layer:
        embedding += L * N  # UT timestep table
    layer = 4 * (N * N + N) + (N * I + I) + (I * N + N) + 2 * 2 * N  # Q K V O, FFN in/out, two LayerNorms
    head = (N * N + N) + 2 * N  # transform dense + LayerNorm
    non_embedding = (1 if shared_layer else L) * layer + 2 * N + head  # + embedding LayerNorm
    return split_counts(embedding, non_embedding)


def training_flops_per_token(c: ProbformerBertConfig, seq_len: int, mask_fraction: float) -> float:
    """6 x the multiply-adds per token of L layers and the MLM head (UT's T steps cost the same)::

        MACs = L * (4 N^2 + 2 N I + 2 n N) + f * (N^2 + N V)

    with 4N^2 the Q, K, V, O projections, 2NI the FFN, 2nN the QK^T and AV products, and the head
    (transform N^2 and decoder NV) run only at the masked fraction f of tokens.
    """
    n = seq_len
    N, I, L = c.hidden_size, c.intermediate_size, c.num_layers
    macs = L * (4 * N * N + 2 * N * I + 2 * n * N) + mask_fraction * (N * N + N * c.vocab_size)
    return TRAINING_FLOPS_PER_MAC * macs


def width_step(c: ProbformerBertConfig) -> int:
    """Widths grow by whole heads at a fixed head_dim."""
    return c.head_dim


def budget_knob_absent(c: ProbformerBertConfig) -> str | None:
    """The FFN size is always there to tune."""
    return None


def activation_terms(c: ProbformerBertConfig, seq_len: int, precision: Precision, mask_fraction: float, *,
                     shared_layer: bool = False) -> ActivationTerms:
    """BERT's layer (post-LN or pre-LN), embeddings and MLM head; ``shared_layer``: one set of layer
    weights for every application (UT), so their bf16 casts are saved once."""
    tokens, fixed = _terms(c, seq_len, precision, mask_fraction, shared_layer=shared_layer)
    return ActivationTerms(c.num_layers, None, tokens, fixed)


def _terms(c: ProbformerBertConfig, n: int, p: Precision, f: float, *,
           shared_layer: bool) -> tuple[tuple[Term, ...], tuple[Term, ...]]:
    N, V, I, H = c.hidden_size, c.vocab_size, c.intermediate_size, c.num_heads
    hn, a = H * n, p.act
    pre_ln = getattr(c, "pre_layer_norm", False)
    hidden_dropout, attention_dropout = c.hidden_dropout > 0, c.attention_dropout > 0
    ln = 4 * N + LN_STATS_BYTES  # the residual stream is fp32 under autocast, so its LayerNorms save fp32
    tokens = readout_terms(V, f)
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
