"""probformer.models.ut.modeling_ut: the Universal Transformer, one BERT layer applied at every step.

Its shapes, muP, roles and pre-LN are tested with BERT's in test_models_bert_modeling_bert.py, its
activation checkpointing and regional compilation in test_training_parallelize.py (both parametrized over
the two encoders); here what is the UT's own."""

from __future__ import annotations

from conftest import tiny_encoder as tiny

from probformer.sizing.budget import count_parameters


def test_ut_shares_weights_across_steps():
    shallow, deep = tiny("ut", num_layers=2), tiny("ut", num_layers=6)
    n_shallow = sum(p.numel() for p in shallow.parameters())
    assert sum(p.numel() for p in deep.parameters()) - n_shallow == 4 * 32  # four more timestep rows
    assert count_parameters("ut", deep.config)["total"] - count_parameters("ut", shallow.config)["total"] == 4 * 32
    bert_deep = tiny("bert", num_layers=6)
    assert sum(p.numel() for p in bert_deep.parameters()) > n_shallow + 4 * 32 * 32  # BERT's grows by layers
