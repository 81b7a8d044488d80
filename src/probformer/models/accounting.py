"""The vocabulary each family's accounting module speaks: parameter splits, training FLOPs, and the
named activation-memory terms with the precision rules that fix their bytes.

The families' own formulas live with their models (``models/<family>/accounting.py``, reached through
:func:`probformer.models.architecture`); the generic machinery that adds them up (budget search,
activation estimate, memory fit, size report) lives in :mod:`probformer.sizing`, which re-exports
these types. They sit here, below ``sizing``, so that a model package never imports upward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["once", "repeat", "shared", "kept_repeat", "kept_once"]
DTYPES = ("fp32", "bf16")
DEVICES = ("cuda", "cpu")
ID_BYTES = 8  # int64 token ids / targets
LN_STATS_BYTES = 8  # LayerNorm's saved mean and rstd (fp32)
# 2 FLOPs per multiply-add x (1 forward + 2 backward passes): training FLOPs from forward MACs.
TRAINING_FLOPS_PER_MAC = 6.0


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
class ActivationTerms:
    """What a family's forward saves for backward at one config: the raw material of
    :class:`probformer.sizing.activation_memory.ActivationEstimate`."""

    depth: int  # applications of the repeated terms: layers, recurrent steps or MFVI iterations
    kernel: str | None  # the kernel variant the terms describe, where a family has several
    token_terms: tuple[Term, ...]
    fixed_terms: tuple[Term, ...]


def split_counts(embedding: int, non_embedding: int) -> dict[str, int]:
    """The parameter-count dict every family's ``count_parameters`` returns."""
    return {"total": embedding + non_embedding, "non_embedding": non_embedding, "embedding": embedding}


def readout_terms(vocab_size: int, mask_fraction: float) -> list[Term]:
    """The vocabulary read-out at the scored fraction of tokens, and the loss (every MLM family)."""
    return [
        Term("token ids (embedding backward, int64)", ID_BYTES, "once"),
        Term("scored-position mask (bool)", 1, "once"),
        Term("log-softmax of the logits (fp32, scored tokens)", mask_fraction * 4 * vocab_size, "once"),
        Term("targets (int64, scored tokens)", mask_fraction * ID_BYTES, "once"),
    ]
