"""probformer.models.pt.bucket_kernels: PT's bucket kernels (reference / banded / fast) agree, and so do
compiled and checkpointed iterations.

The reference kernel is itself checked against the naive token-by-token loops of tests/pt_reference.py
(test_models_pt_modeling_pt.py); here every kernel must equal it in float64 to 1e-10, forward and gradients, with
padding, under both presets and at widths grown by channels and by rank.
"""

from __future__ import annotations

import pytest
import torch
from pt_reference import naive_label_logits

from probformer.models.pt.bucket_kernels import KERNEL_NAMES, resolve_kernel_name
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM

BASE = dict(vocab_size=30, hidden_size=8, num_channels=2, rank=4, latent_size=8, num_iterations=2, max_distance=4,
            head_dropout=0.0, label_dropout=0.0, init_std_output=0.1, base_hidden_size=4)
WIDTHS = {  # (name, config): the base model and the same family grown 3x by channels and by rank
    "base": PTConfig(**BASE),
    "wide-channels": PTConfig(**BASE).with_width(24),
    "wide-rank": PTConfig(**{**BASE, "width_scaling": "rank"}).with_width(24),
}


def model_with(config: PTConfig, kernel: str, preset: str) -> PTForMaskedLM:
    torch.manual_seed(0)
    config = PTConfig(**{**config.to_dict(), "mfvi_kernel": kernel, "parametrization": preset})
    return PTForMaskedLM(config).double()


def padded_batch(n: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 30, (3, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, n - 3:] = 0
    mask[2, max(1, n - 7):] = 0
    return ids, mask


def loss_and_grads(model: PTForMaskedLM, ids, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
    weights = torch.randn(*ids.shape, model.config.hidden_size, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(2))
    s = model.encode(ids, mask)[0]
    value = (s * weights)[mask.bool()].sum()
    return s, torch.autograd.grad(value, [p for p in model.parameters()], allow_unused=True)


@pytest.mark.parametrize("kernel", ["banded", "fast"])
@pytest.mark.parametrize("preset", ["sp", "mup"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_kernel_equals_reference_forward_and_gradients(kernel, preset, width):
    ids, mask = padded_batch()
    ref_s, ref_grads = loss_and_grads(model_with(WIDTHS[width], "reference", preset), ids, mask)
    s, grads = loss_and_grads(model_with(WIDTHS[width], kernel, preset), ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(s[valid], ref_s[valid], rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads, strict=True):
        if r is None:
            assert g is None
        else:
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_reference_kernel_equals_naive_loops():
    model = model_with(WIDTHS["base"], "reference", "mup")
    ids, mask = padded_batch(n=7)
    valid = mask.bool()
    torch.testing.assert_close(model.encode(ids, mask)[0][valid], naive_label_logits(model, ids, mask)[valid],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("n", range(1, 11))
def test_every_kernel_at_every_short_length(kernel, n):
    # n < max_distance - 1 leaves near buckets without a single pair (empty diagonals).
    model = model_with(PTConfig(**{**BASE, "max_distance": 5}), kernel, "mup")
    ids, mask = padded_batch(n=n)
    valid = mask.bool()
    torch.testing.assert_close(model.encode(ids, mask)[0][valid], naive_label_logits(model, ids, mask)[valid],
                               rtol=1e-10, atol=1e-10)


def test_head_marginals_equal_across_kernels():
    ids, mask = padded_batch()
    marginals = {k: model_with(WIDTHS["base"], k, "mup")(ids, attention_mask=mask, output_attentions=True).attentions
                 for k in KERNEL_NAMES}
    for k in ("banded", "fast"):
        for a, r in zip(marginals[k], marginals["reference"], strict=True):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_activation_checkpointing_keeps_values_and_gradients():
    ids, mask = padded_batch()
    plain = model_with(WIDTHS["base"], "fast", "mup").train()
    checkpointed = model_with(WIDTHS["base"], "fast", "mup").train()
    checkpointed.enable_activation_checkpointing()
    s0, g0 = loss_and_grads(plain, ids, mask)
    s1, g1 = loss_and_grads(checkpointed, ids, mask)
    torch.testing.assert_close(s1, s0, rtol=0, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_activation_checkpointing_replays_dropout():
    # Recomputation in backward must draw the same dropout masks as the forward did.
    torch.manual_seed(0)
    config = PTConfig(**{**BASE, "head_dropout": 0.3, "label_dropout": 0.3})
    ids, mask = padded_batch()
    grads = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = PTForMaskedLM(config).double().train()
        model.enable_activation_checkpointing(enabled)
        torch.manual_seed(5)
        grads.append(loss_and_grads(model, ids, mask)[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_compiled_iteration_equals_eager():
    ids, mask = padded_batch()
    eager = model_with(WIDTHS["base"], "fast", "mup").float()
    compiled = model_with(WIDTHS["base"], "fast", "mup").float()
    compiled.compile_regions()
    s0, g0 = loss_and_grads(eager, ids, mask)
    s1, g1 = loss_and_grads(compiled, ids, mask)
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_models_with_different_kernels_compile_in_one_process():
    # Each model compiles its own copy of the iteration's code, so the second model's kernel never
    # meets the first one's guards (that crashed torch 2.11-2.13, pytorch/pytorch#184793).
    ids, mask = padded_batch()
    for kernel in ("banded", "fast", "reference"):
        eager = model_with(WIDTHS["base"], kernel, "mup").float()
        compiled = model_with(WIDTHS["base"], kernel, "mup").float()
        compiled.compile_regions()
        s0, _ = loss_and_grads(eager, ids, mask)
        s1, _ = loss_and_grads(compiled, ids, mask)
        torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-5)


def test_unknown_kernel_is_a_config_error():
    with pytest.raises(ValueError, match="mfvi_kernel"):
        PTConfig(mfvi_kernel="flash")
    assert resolve_kernel_name("auto", torch.device("cpu")) == "banded"
    assert resolve_kernel_name("auto", torch.device("cuda")) == "fast"
