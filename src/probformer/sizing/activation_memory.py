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
Not counted: gradients, optimizer state (:mod:`probformer.sizing.memory_fit`) and temporaries that
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

Each family's terms live with its model (``models/<family>/accounting.py``, through
:func:`probformer.models.architecture`); :class:`Term` and :class:`Precision` are defined in
:mod:`probformer.models.accounting` and re-exported here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from probformer.models import architecture
from probformer.models.accounting import DEVICES, DTYPES, ID_BYTES, LN_STATS_BYTES, Precision, Scope, Term

DEFAULT_PRECISION = Precision()  # frozen: one shared default instance is safe


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
    precision: Precision = DEFAULT_PRECISION,
    mask_fraction: float = 0.15,
) -> ActivationEstimate:
    """The saved-for-backward bytes of ``arch`` at ``config`` for sequences of ``seq_len`` tokens,
    a fraction ``mask_fraction`` of them scored (the read-out runs there only). PT's terms follow the
    bucket kernel its ``mfvi_kernel`` resolves to on ``precision.device`` (auto: fast on CUDA)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not 0.0 <= mask_fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction!r}")
    terms = architecture(arch).activation_terms(config, seq_len, precision, mask_fraction)
    return ActivationEstimate(arch, precision, seq_len, terms.depth, terms.kernel, terms.token_terms,
                              terms.fixed_terms)


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


__all__ = ["DEVICES", "DTYPES", "ID_BYTES", "LN_STATS_BYTES", "ActivationEstimate", "Precision", "Scope", "Term",
           "estimate_activation_memory", "measure_saved_activation_bytes"]
