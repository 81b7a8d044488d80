"""Parameter counts, training FLOPs per token, and configs at a parameter budget (design note 6).

Which count a budget matches: the *total*, embeddings included — the paper compares models at "the
same parameter budget", and PT's embedding-like tables (S and the read-out W) are a large share of
its parameters, so excluding them would favour one family. :func:`count_parameters` reports both
splits and :func:`training_flops_per_token` the compute, because PT and UT reuse their weights and
spend more FLOPs per parameter than BERT.

"Embedding" parameters are the lookup tables and the vocabulary read-out: word / unary, position,
token-type and timestep tables, the decoder weight unless it is tied to the word table, and the
decoder bias. Everything else is "non-embedding" (it does not depend on the vocabulary).
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from probformer.models import model_classes
from probformer.models.config_utils import replace_config
from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.pt.configuration_pt import PTConfig

DEFAULT_TOLERANCE = 0.02


def count_parameters(arch: str, config: PretrainedConfig) -> dict[str, int]:
    """Trainable parameters of ``arch`` at ``config``, computed from the config (tied weights once).

    Returns ``dict(total=..., non_embedding=..., embedding=...)``; tests check it against a model.
    """
    model_classes(arch)  # validates the name
    if arch == "pt":
        return _count_pt(config)
    return _count_encoder(config, shared_layer=arch == "ut")


def _count_pt(c: PTConfig) -> dict[str, int]:
    N, V = c.hidden_size, c.vocab_size
    embedding = V * N + N * V + V  # S; read-out W and b
    if c.use_position_unary:
        embedding += c.max_position_embeddings * N  # P
    non_embedding = 2 * c.num_buckets * c.num_channels * N * c.rank  # U, V
    if c.use_latent_factor:
        non_embedding += c.latent_size * N  # B
    return _split(embedding, non_embedding)


def _count_encoder(c: ProbformerBertConfig, *, shared_layer: bool) -> dict[str, int]:
    N, I, V, L = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_layers
    embedding = V * N + c.max_position_embeddings * N + N + V  # word, position, token type, decoder bias
    if not c.tie_word_embeddings:
        embedding += V * N  # untied (muP) decoder weight
    if shared_layer:
        embedding += L * N  # UT timestep table
    layer = 4 * (N * N + N) + (N * I + I) + (I * N + N) + 2 * 2 * N  # Q K V O, FFN in/out, two LayerNorms
    head = (N * N + N) + 2 * N  # transform dense + LayerNorm
    non_embedding = (1 if shared_layer else L) * layer + 2 * N + head  # + embedding LayerNorm
    return _split(embedding, non_embedding)


def _split(embedding: int, non_embedding: int) -> dict[str, int]:
    return {"total": embedding + non_embedding, "non_embedding": non_embedding, "embedding": embedding}


def training_flops_per_token(arch: str, config: PretrainedConfig, seq_len: int, mask_fraction: float = 0.15) -> float:
    """Training FLOPs per input token: 6 x (multiply-adds per token of the forward pass).

    6 = 2 FLOPs per multiply-add x (1 forward + 2 backward). Only matrix products are counted;
    embedding lookups, norms, softmaxes, GELU and biases (O(N) per token) are left out. n = seq_len.

    BERT (L layers) and UT (one layer applied L times: same compute as L layers)::

        MACs = L * (4 N^2 + 2 N I + 2 n N) + f * (N^2 + N V)

    with 4N^2 the Q, K, V, O projections, 2NI the FFN, 2nN the QK^T and AV products, and the head
    (transform N^2 and decoder NV) run only at the masked fraction f of tokens.

    PT (T MFVI iterations, as :class:`~probformer.models.pt.modeling_pt.PTForMaskedLM` computes it)::

        MACs = T * (2 K h r N + 2 K h r N + 6 h r (n + D' ) + 2 N M) + f * N V

    per iteration: the queries q U and keys q V for all K buckets and h channels (K h r wide each);
    the back-projections of both message directions onto U and V (K h r N each); the n x n work of
    the two far buckets (scores q.k, and the two message directions a key and a^T qry: 3 products
    of n r per token and channel, 6 for the two buckets) plus the banded near buckets
    (D' = min(D, n) - 1 diagonals, same 6 h r each); the latent factor's B q and B^T g (N M each,
    absent without the latent factor). The read-out N V runs at the masked fraction f.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not 0.0 <= mask_fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction!r}")
    model_classes(arch)
    n = seq_len
    if arch == "pt":
        c: PTConfig = config
        N, K, h, r = c.hidden_size, c.num_buckets, c.num_channels, c.rank
        near = min(c.max_distance, n) - 1
        per_iteration = 4 * K * h * r * N + 6 * h * r * (n + near)
        if c.use_latent_factor:
            per_iteration += 2 * N * c.latent_size
        macs = c.num_iterations * per_iteration + mask_fraction * N * c.vocab_size
    else:
        N, I, L = config.hidden_size, config.intermediate_size, config.num_layers
        macs = L * (4 * N * N + 2 * N * I + 2 * n * N) + mask_fraction * (N * N + N * config.vocab_size)
    return 6.0 * macs


def config_for_budget(
    arch: str,
    params: int,
    *,
    vocab_size: int,
    base: dict | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    width_multiple: int = 1,
) -> PretrainedConfig:
    """The member of ``arch``'s family whose *total* parameter count is within ``tolerance`` of ``params``.

    ``base`` holds the family's fixed fields (depth, dropout, preset, ...) and its shape at a reference
    width: ``hidden_size`` there is the muP base N0, and the ratios to it are kept (PT: channels grow
    at fixed rank, or rank at fixed channels with ``width_scaling="rank"``, and M in proportion,
    M = 2N by PTConfig's defaults; BERT / UT: heads grow at fixed head_dim, 32 by default, and the FFN
    in proportion, 4N by default). Omitted fields take the config class's defaults.

    Search: every width the family allows (BERT / UT: multiples of head_dim; with ``width_multiple``
    only multiples of it too, for GPU-friendly shapes) up to twice the budget;
    the width closest to the budget wins if it is within tolerance. Otherwise (the width grid is too
    coarse, or PT's channel count jumps) one secondary knob is set to land on the budget — the FFN
    size for BERT / UT, the latent size M for PT — at the width that needs the smallest relative
    change of that knob. Raises ValueError if no config lands within tolerance.
    """
    if params < 1:
        raise ValueError(f"params must be a positive integer, got {params!r}")
    if width_multiple < 1:
        raise ValueError(f"width_multiple must be a positive integer, got {width_multiple!r}")
    config_cls, _ = model_classes(arch)
    ref = config_cls(**{**(base or {}), "vocab_size": vocab_size})
    candidates = _family(arch, ref, params, width_multiple)
    if not candidates:
        raise ValueError(f"{arch}: no width fits a budget of {params} parameters (vocab_size={vocab_size})")

    def error(cfg: PretrainedConfig) -> float:
        return abs(count_parameters(arch, cfg)["total"] - params) / params

    best = min(candidates, key=error)
    if error(best) <= tolerance:
        return best

    knob = "latent_size" if arch == "pt" else "intermediate_size"
    if arch == "pt" and not ref.use_latent_factor:
        raise ValueError(f"pt without the latent factor: no width within {tolerance:.0%} of {params} parameters "
                         f"(closest {count_parameters(arch, best)['total']})")
    scored = []
    for cfg in candidates:
        default = getattr(cfg, knob)
        total = count_parameters(arch, cfg)["total"]
        per_unit = count_parameters(arch, replace_config(cfg, **{knob: default + 1}))["total"] - total  # linear in knob
        value = round(default + (params - total) / per_unit)
        if value >= 1:
            scored.append((abs(math.log(value / default)), cfg, value))
    if scored:
        _, cfg, value = min(scored, key=lambda item: item[0])
        best = replace_config(cfg, **{knob: value})
        if error(best) <= tolerance:
            return best
    raise ValueError(f"{arch}: no config within {tolerance:.0%} of {params} parameters "
                     f"(closest {count_parameters(arch, best)['total']})")


def _family(arch: str, ref: PretrainedConfig, params: int, width_multiple: int = 1) -> list[PretrainedConfig]:
    """``ref.with_width(N)`` for every allowed width N whose default-shape count is below 2 * params."""
    step = math.lcm(ref.head_dim if arch in ("bert", "ut") else 1, width_multiple)
    out = []
    width = step
    while True:
        cfg = ref.with_width(width)
        if count_parameters(arch, cfg)["total"] > 2 * params:
            return out
        out.append(cfg)
        width += step
