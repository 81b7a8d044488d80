"""probformer.models.pt.modeling_pt: PTForMaskedLM against naive references (design note sections 2-3), plus
HF conventions."""

from __future__ import annotations

import pytest
import torch
from pt_reference import bucket, forward_2023, naive_label_logits

from probformer.data.tokenization import MASK_ID
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM, bucket_index

TINY = dict(vocab_size=20, hidden_size=6, num_channels=2, rank=3, latent_size=4, num_iterations=2, max_distance=4,
            head_dropout=0.0, label_dropout=0.0, init_std_output=0.1)


def tiny_model(preset: str, **overrides) -> PTForMaskedLM:
    torch.manual_seed(0)
    # base width 3 != 6 so the muP multipliers are not trivially 1
    return PTForMaskedLM(PTConfig(**{**TINY, "parametrization": preset, "base_hidden_size": 3, **overrides})).double()


def batch(n: int = 5, pad_last: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 20, (2, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, n - pad_last:] = 0
    return ids, mask


def test_bucket_index_matches_definition():
    idx = bucket_index(9, 4, torch.device("cpu"))
    for i in range(9):
        for j in range(9):
            if i != j:
                assert idx[i, j] == bucket(i, j, 4)


@pytest.mark.parametrize("preset", ["sp", "mup"])
@pytest.mark.parametrize("latent", [True, False])
def test_vectorised_mfvi_equals_naive_loops(preset, latent):
    model = tiny_model(preset, use_latent_factor=latent)
    ids, mask = batch()
    fast, _, _ = model.encode(ids, mask)
    ref = naive_label_logits(model, ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(fast[valid], ref[valid], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_gradients_equal_naive_loops(preset):
    model = tiny_model(preset)
    ids, mask = batch()
    valid = mask.bool()
    weights = torch.randn(2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [model.unary.weight, model.ternary.U, model.ternary.V, model.latent.B]
    fast = torch.autograd.grad((model.encode(ids, mask)[0] * weights)[valid].sum(), params)
    ref = torch.autograd.grad((naive_label_logits(model, ids, mask) * weights)[valid].sum(), params)
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_equals_2023_forward_without_latent(preset):
    # Design note 2: the 2023 forward (unscaled Q, head logits N<QU,QV>, messages TQ) is this model
    # with T_2023 = N U_eff V_eff^T and alpha_H = r (head factor 1: channels scaling keeps r = r0).
    model = tiny_model(preset, use_latent_factor=False, max_distance=2)
    ids, _ = batch(n=6)
    ours, _, _ = model.encode(ids)
    torch.testing.assert_close(ours, forward_2023(model, ids), rtol=1e-10, atol=1e-10)


def test_head_marginals_are_distributions_over_real_tokens():
    model = tiny_model("mup")
    ids, mask = batch(n=6, pad_last=2)
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == model.config.num_iterations
    a = out.attentions[-1]  # (B, h, n, n)
    assert a.shape == (2, 2, 6, 6)
    assert torch.allclose(a[0].sum(-1), torch.ones(2, 6, dtype=a.dtype))
    assert torch.all(a[1, :, :, 4:] == 0) and torch.all(a[1, :, 4:, :] == 0)  # pads neither head nor child
    assert torch.all(torch.diagonal(a, dim1=-2, dim2=-1) == 0)  # no token heads itself


@pytest.mark.parametrize("n", range(1, 11))
def test_every_short_length_equals_naive_loops(n):
    # n < max_distance - 1 leaves near buckets with no pair at all (their band shift passes the end).
    model = tiny_model("mup")
    ids, mask = batch(n=n, pad_last=min(1, n - 1))
    valid = mask.bool()
    torch.testing.assert_close(model.encode(ids, mask)[0][valid], naive_label_logits(model, ids, mask)[valid],
                               rtol=1e-10, atol=1e-10)


def test_single_token_sequence_is_finite():
    model = tiny_model("mup")
    out = model(torch.tensor([[7, 8, 9]]), attention_mask=torch.tensor([[1, 0, 0]]))
    assert torch.isfinite(out.logits).all()


def test_masked_only_readout_equals_full_readout():
    model = tiny_model("mup")
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 2] = 7, 9
    full = model(ids, attention_mask=mask).logits
    scored = model(ids, attention_mask=mask, labels=labels, scored_logits_only=True)
    torch.testing.assert_close(scored.logits, full[labels != -100])
    expected = torch.nn.functional.cross_entropy(full[labels != -100], labels[labels != -100])
    torch.testing.assert_close(scored.loss, expected)
    hf_style = model(ids, attention_mask=mask, labels=labels)  # (B, n, V) logits even with labels, as HF
    torch.testing.assert_close(hf_style.logits, full)
    torch.testing.assert_close(hf_style.loss, expected)


@pytest.mark.parametrize("kernel", ["reference", "banded", "fast"])
def test_no_answer_reaches_a_masked_position(kernel):
    """PT's one-epoch lead over BERT / UT is only meaningful if a masked token's logits see nothing but
    the masked inputs of its own sequence: not the labels, not the other sequences of the batch."""
    model = tiny_model("mup", mfvi_kernel=kernel).eval()
    ids, mask = batch(n=7, pad_last=0)
    inputs = ids.clone()
    inputs[0, 3] = MASK_ID  # every model sees this input; the answer lives only in the labels
    labels = torch.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    together = model(inputs, attention_mask=mask, labels=labels).logits[0]  # (n, vocab), HF style
    other_answer = labels.clone()
    other_answer[0, 3] = 5 if ids[0, 3] != 5 else 6
    torch.testing.assert_close(model(inputs, attention_mask=mask, labels=other_answer).logits[0], together,
                               rtol=0, atol=0)
    other_sequence = inputs.clone()
    other_sequence[1] = torch.randint(5, 20, (7,), generator=torch.Generator().manual_seed(3))
    assert not torch.equal(other_sequence[1], inputs[1])
    torch.testing.assert_close(model(other_sequence, attention_mask=mask).logits[0], together, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(inputs[:1], attention_mask=mask[:1]).logits[0], together, rtol=1e-12, atol=1e-12)


def test_ternary_norm_without_building_t():
    model = tiny_model("sp")
    T = torch.einsum("khar,khbr->khab", model.ternary.U, model.ternary.V)
    torch.testing.assert_close(model.ternary_norm(), T.flatten(2).norm(dim=-1).sum())


def test_save_and_load_pretrained_roundtrip(tmp_path):
    model = tiny_model("mup").float().eval()
    ids, mask = batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = PTForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.config.parametrization == "mup" and loaded.config.base_hidden_size == 3
    torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="hidden_size"):
        PTConfig(hidden_size=0)
    with pytest.raises(ValueError, match="parametrization"):
        PTConfig(parametrization="ntk")
    with pytest.raises(ValueError, match="head_dropout"):
        PTConfig(head_dropout=1.5)


def test_with_width_scales_channels_and_latent_keeps_base():
    cfg = PTConfig(hidden_size=32, num_channels=2, rank=16, latent_size=64)
    wide = cfg.with_width(128)
    assert (wide.num_channels, wide.rank, wide.latent_size) == (8, 16, 256)
    assert wide.resolved_base == (32, 16, 64)
    by_rank = PTConfig(hidden_size=32, num_channels=2, rank=16, latent_size=64, width_scaling="rank").with_width(128)
    assert (by_rank.num_channels, by_rank.rank) == (2, 64) and by_rank.resolved_base == (32, 16, 64)
