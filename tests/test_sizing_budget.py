"""probformer.sizing.budget: parameter counts against the built models, configs sized to a parameter
budget, and training FLOPs per token against torch's FLOP counter (design note 6)."""

from __future__ import annotations

import pytest
import torch
from conftest import ENCODER_BATCH as BATCH
from conftest import ENCODER_VOCAB as VOCAB
from conftest import TINY_ENCODER as TINY
from torch.utils.flop_counter import FlopCounterMode

from probformer.models import MODEL_CLASSES, build_model
from probformer.sizing.budget import config_for_budget, count_parameters, training_flops_per_token


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [("bert", {}), ("bert", {"parametrization": "sp"}), ("ut", {}), ("ut", {"parametrization": "sp"}),
     ("bert", {"pre_layer_norm": True}), ("ut", {"pre_layer_norm": True, "parametrization": "sp"}),
     ("pt", {}), ("pt", {"use_position_unary": True, "use_latent_factor": False})],
)
def test_count_parameters_matches_model(arch: str, overrides: dict):
    if arch == "pt":
        kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_channels=2, rank=8, latent_size=64, num_iterations=2,
                      max_position_embeddings=16, **overrides)
    else:
        kwargs = {**TINY, **overrides}
    model = build_model(arch, **kwargs)
    counts = count_parameters(arch, model.config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]
    other_vocab = model.config.__class__(**{**kwargs, "vocab_size": 500})
    assert count_parameters(arch, other_vocab)["non_embedding"] == counts["non_embedding"]


@pytest.mark.parametrize("arch", ["pt", "bert", "ut"])
@pytest.mark.parametrize("budget", [1_000_000, 4_000_000])
def test_config_for_budget(arch: str, budget: int):
    base = {"num_layers": 4} if arch != "pt" else {"num_iterations": 3}
    config = config_for_budget(arch, budget, vocab_size=4096, base=base)
    counts = count_parameters(arch, config)
    assert abs(counts["total"] - budget) <= 0.02 * budget
    assert counts["total"] == sum(p.numel() for p in MODEL_CLASSES[arch][1](config).parameters())
    if arch == "pt":
        assert config.rank == 32 and config.base_hidden_size == 128  # fixed rank; muP base = reference width
    else:
        assert config.head_dim == 32 and config.num_layers == 4


def test_paradigm1_budget_keeps_r_tot_and_counts_match_the_model():
    """Head paradigm 1 (design note 5): the budget search grows N and M only; its count is the built model's."""
    base = {"num_iterations": 3, "head_paradigm": 1, "num_channels": 2, "rank": 16}
    config = config_for_budget("pt", 1_000_000, vocab_size=4096, base=base)
    counts = count_parameters("pt", config)
    assert abs(counts["total"] - 1_000_000) <= 0.02 * 1_000_000
    assert (config.num_channels, config.rank, config.head_paradigm) == (2, 16, 1)
    assert config.hidden_size != config.base_hidden_size  # a wider member of the family, not its base
    assert counts["total"] == sum(p.numel() for p in MODEL_CLASSES["pt"][1](config).parameters())


def test_config_for_budget_rejects_impossible_budget():
    with pytest.raises(ValueError, match="bert"):
        config_for_budget("bert", 10_000, vocab_size=4096)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [("bert", TINY), ("ut", {**TINY, "num_layers": 3}),
     ("pt", dict(vocab_size=VOCAB, hidden_size=32, num_channels=2, rank=8, latent_size=64, num_iterations=2))],
)
def test_training_flops_match_flop_counter(arch: str, kwargs: dict):
    """torch's counter sees every matmul of forward + backward; the formula additionally counts PT's
    banded near-bucket products, which run as elementwise ops the counter does not see."""
    model = build_model(arch, **kwargs)
    n = 16
    ids = torch.randint(5, VOCAB, (BATCH, n))
    labels = torch.full((BATCH, n), -100)
    labels[:, ::4] = ids[:, ::4]  # a masked fraction of exactly 1/4
    with FlopCounterMode(display=False) as counter:  # the read-out at masked positions only, as the trainer runs it
        model(ids, labels=labels, scored_logits_only=True).loss.backward()
    counted = counter.get_total_flops() / (BATCH * n)
    expected = training_flops_per_token(arch, model.config, n, mask_fraction=0.25)
    if arch == "pt":
        c = model.config
        expected -= 6 * c.num_iterations * 6 * c.num_channels * c.rank * (c.max_distance - 1)
    assert counted == expected
    if arch == "ut":  # one shared layer applied T times costs what T BERT layers cost
        bert = MODEL_CLASSES["bert"][0](**kwargs)
        assert training_flops_per_token("bert", bert, n) == training_flops_per_token("ut", model.config, n)


def test_config_for_budget_rejects_bad_width_multiple():
    with pytest.raises(ValueError, match="width_multiple"):
        config_for_budget("pt", 1_000_000, vocab_size=4096, width_multiple=0)
