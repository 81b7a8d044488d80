"""probformer.sizing.activation_memory: the activation-memory estimate against autograd's saved tensors.

The estimate books every tensor the current forward saves, so on CPU it must equal the measurement:
per token as the slope between two batch sizes (which removes what does not grow with the batch), the
fixed bytes as the intercept. The tolerance is 1%: the bookkeeping is exact today, and 1% is below the
smallest term (an N-wide tensor is ~2% of a layer here), so a forward that starts saving one more tensor
fails this test until its term is added.
"""

from __future__ import annotations

import pytest
import torch

from probformer.config import load_config, model_config_class, model_fields
from probformer.data.batches import Batch
from probformer.models import build_model
from probformer.sizing.activation_memory import Precision, estimate_activation_memory, measure_saved_activation_bytes

VOCAB = 97
TOLERANCE = 0.01
PT = dict(hidden_size=48, num_channels=3, rank=8, latent_size=80, num_iterations=2)
ENCODER = dict(hidden_size=48, num_layers=2, num_heads=3, intermediate_size=80)
CASES = {  # name -> (arch, config fields): every kernel, depth, dropout and LayerNorm branch of the estimate
    "pt-banded": ("pt", {**PT, "mfvi_kernel": "banded"}),
    "pt-fast": ("pt", {**PT, "mfvi_kernel": "fast"}),
    "pt-fast-T3-D2-no-head-dropout": ("pt", {**PT, "mfvi_kernel": "fast", "num_iterations": 3, "max_distance": 2,
                                             "head_dropout": 0.0}),
    "pt-banded-D1-no-latent": ("pt", {**PT, "mfvi_kernel": "banded", "max_distance": 1, "use_latent_factor": False,
                                      "label_dropout": 0.0}),
    "bert": ("bert", ENCODER),
    "bert-no-dropout": ("bert", {**ENCODER, "hidden_dropout": 0.0, "attention_dropout": 0.0}),
    "bert-pre-ln": ("bert", {**ENCODER, "pre_layer_norm": True}),
    "ut-T3": ("ut", {**ENCODER, "num_layers": 3}),
}


def batch(size: int, n: int) -> Batch:
    g = torch.Generator().manual_seed(size * 1000 + n)
    ids = torch.randint(5, VOCAB, (size, n), generator=g)
    labels = torch.full((size, n), -100)
    labels[:, ::4] = ids[:, ::4]  # a scored fraction of exactly 1/4
    return Batch(ids, torch.ones(size, n, dtype=torch.long), labels)


def measured_split(model, n: int, precision: str) -> tuple[float, float]:
    """(bytes per token, fixed bytes) from the saved bytes at 2 and 4 sequences of n tokens."""
    small, large = (measure_saved_activation_bytes(model, batch(b, n), precision) for b in (2, 4))
    per_token = (large - small) / (2 * n)
    return per_token, small - per_token * 2 * n


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_estimate_equals_saved_tensors(case: str, precision: str):
    arch, fields = CASES[case]
    if "pre_layer_norm" in fields and "pre_layer_norm" not in model_fields(arch):
        pytest.skip("this BERT has no pre-LN option")
    torch.manual_seed(0)
    model = build_model(arch, vocab_size=VOCAB, **fields).train()
    for n in (16, 40):  # two lengths: the n-wide (attention) terms and the width terms change differently
        estimate = estimate_activation_memory(arch, model.config, seq_len=n, precision=Precision(precision, "cpu"),
                                              mask_fraction=0.25)
        model.enable_activation_checkpointing(False)
        per_token, fixed = measured_split(model, n, precision)
        assert estimate.per_token() == pytest.approx(per_token, rel=TOLERANCE), (n, estimate.token_terms)
        assert estimate.fixed() == pytest.approx(fixed, rel=TOLERANCE, abs=64), (n, estimate.fixed_terms)
        # Under checkpointing the forward keeps each application's inputs and what lies outside the loop.
        model.enable_activation_checkpointing(True)
        kept, _ = measured_split(model, n, precision)
        assert estimate.kept_per_token() == pytest.approx(kept, rel=TOLERANCE), n
        assert estimate.per_token(checkpointing=True) == pytest.approx(kept + estimate.repeated_per_token())


def test_checkpointing_keeps_about_a_tenth_at_the_ladder_shapes():
    """What checkpointing buys at seq_len 512 on CUDA: the PT 400M rung keeps about 1/10 of its activations
    (10.1%: 1.01 of 10.0 MB per token; 9.6% before the message path held the head marginals in bf16, which
    cut the activations without checkpointing by a quarter, issue 24)."""
    config = load_config(preset="ladder-pt-400m")
    pt = model_config_class("pt")(**{k: v for k, v in config.model.items() if k != "arch"}, vocab_size=32768)
    estimate = estimate_activation_memory("pt", pt, seq_len=512, precision=Precision("bf16", "cuda"))
    assert estimate.kernel == "fast"
    assert estimate.per_token(checkpointing=True) < 0.11 * estimate.per_token()
    assert estimate.fixed(checkpointing=True) < estimate.fixed() / 4  # weight copies: one iteration's, not T
