"""The Universal Transformer's accounting: BERT's (``models/bert/accounting.py``) with one shared
layer applied T times. Sharing changes the parameters (one layer, plus the timestep table) and the
bf16 weight casts (saved once, not per step); the FLOPs are T layers' and the knobs are BERT's."""

from __future__ import annotations

from probformer.models.accounting import ActivationTerms, Precision
from probformer.models.bert import accounting as bert
from probformer.models.bert.accounting import BUDGET_KNOB, budget_knob_absent, training_flops_per_token, width_step
from probformer.models.ut.configuration_ut import UniversalTransformerConfig


def count_parameters(c: UniversalTransformerConfig) -> dict[str, int]:
    return bert.count_parameters(c, shared_layer=True)


def activation_terms(c: UniversalTransformerConfig, seq_len: int, precision: Precision,
                     mask_fraction: float) -> ActivationTerms:
    return bert.activation_terms(c, seq_len, precision, mask_fraction, shared_layer=True)


__all__ = ["BUDGET_KNOB", "activation_terms", "budget_knob_absent", "count_parameters", "training_flops_per_token",
           "width_step"]
