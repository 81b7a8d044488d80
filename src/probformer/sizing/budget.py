"""Parameter counts, training FLOPs per token, and configs at a parameter budget (docs/design.md §6).

Which count a budget matches: the *total*, embeddings included — the paper compares models at "the
same parameter budget", and PT's embedding-like tables (S and the read-out W) are a large share of
its parameters, so excluding them would favour one family. :func:`count_parameters` reports both
splits and :func:`training_flops_per_token` the compute, because PT and UT reuse their weights and
spend more FLOPs per parameter than BERT.

"Embedding" parameters are the lookup tables and the vocabulary read-out: word / unary, position,
token-type and timestep tables, the decoder weight unless it is tied to the word table, and the
decoder bias. Everything else is "non-embedding" (it does not depend on the vocabulary).

Each family's formulas live with its model (``models/<family>/accounting.py``) and are reached
through :func:`probformer.models.architecture`; this module validates, dispatches and searches.
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from probformer.models import architecture
from probformer.models.config_utils import replace_config

DEFAULT_TOLERANCE = 0.02


def count_parameters(arch: str, config: PretrainedConfig) -> dict[str, int]:
    """Trainable parameters of ``arch`` at ``config``, computed from the config (tied weights once).

    Returns ``dict(total=..., non_embedding=..., embedding=...)``; tests check it against a model.
    """
    return architecture(arch).count_parameters(config)


def training_flops_per_token(arch: str, config: PretrainedConfig, seq_len: int, mask_fraction: float = 0.15) -> float:
    """Training FLOPs per input token: 6 x (multiply-adds per token of the forward pass).

    6 = 2 FLOPs per multiply-add x (1 forward + 2 backward). Only matrix products are counted;
    embedding lookups, norms, softmaxes, GELU and biases (O(N) per token) are left out; the
    vocabulary read-out runs at the masked fraction of tokens only. Each family's formula is in its
    ``models/<family>/accounting.py``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not 0.0 <= mask_fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction!r}")
    return architecture(arch).flops_per_token(config, seq_len, mask_fraction)


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
    at fixed rank, or rank at fixed channels with ``width_scaling="rank"``, or neither under
    ``head_paradigm=1`` (r_tot fixed), and M in proportion,
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
    entry = architecture(arch)
    ref = entry.config_class(**{**(base or {}), "vocab_size": vocab_size})
    candidates = _family(arch, ref, params, width_multiple)
    if not candidates:
        raise ValueError(f"{arch}: no width fits a budget of {params} parameters (vocab_size={vocab_size})")

    def error(cfg: PretrainedConfig) -> float:
        return abs(count_parameters(arch, cfg)["total"] - params) / params

    best = min(candidates, key=error)
    if error(best) <= tolerance:
        return best

    knob = entry.budget_knob
    absent = entry.budget_knob_absent(ref)
    if absent is not None:
        raise ValueError(f"{arch} {absent}: no width within {tolerance:.0%} of {params} parameters "
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


# The search tries every allowed width (about 10,000 for the 1B PT preset, a few seconds); a budget
# that would need more is refused with the flag that coarsens the grid, instead of searching for minutes.
MAX_WIDTHS = 50_000


def _family(arch: str, ref: PretrainedConfig, params: int, width_multiple: int = 1) -> list[PretrainedConfig]:
    """``ref.with_width(N)`` for every allowed width N whose default-shape count is below 2 * params."""
    step = math.lcm(architecture(arch).width_step(ref), width_multiple)
    top = _largest_width_below(arch, ref, 2 * params, step)
    if top // step > MAX_WIDTHS:
        coarser = step * 2 ** math.ceil(math.log2(top / step / MAX_WIDTHS))
        raise ValueError(f"{arch}: a budget of {params:,} parameters allows {top // step:,} widths, more than the "
                         f"{MAX_WIDTHS:,} the search tries; search a coarser grid with width_multiple={coarser} "
                         f"(--width-multiple {coarser})")
    return [ref.with_width(width) for width in range(step, top + 1, step)]


def _largest_width_below(arch: str, ref: PretrainedConfig, limit: int, step: int) -> int:
    """The largest multiple of ``step`` whose count is at most ``limit`` (0 if none): counts grow with
    the width, so doubling then bisecting finds it in O(log N) counts."""
    def fits(width: int) -> bool:
        return count_parameters(arch, ref.with_width(width))["total"] <= limit

    if not fits(step):
        return 0
    low, high = 1, 2  # in steps: low fits, high is to be tried
    while fits(high * step):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle * step) else (low, middle)
    return low * step
