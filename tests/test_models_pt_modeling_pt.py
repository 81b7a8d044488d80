"""probformer.models.pt.modeling_pt: PTForMaskedLM against naive references (design note sections 2-3), plus
HF conventions."""

from __future__ import annotations

import json

import pytest
import torch
from pt_reference import bucket, forward_2023, naive_label_logits

from probformer.data.tokenization import MASK_ID
from probformer.models.config_utils import replace_config
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


# -- head-selection paradigm 1 (design note section 5): r_tot fixed, lambda_H x N/N0 -------------------
P1_BASE = dict(vocab_size=40, hidden_size=8, num_channels=2, rank=4, latent_size=16, num_iterations=2,
               head_dropout=0.0, label_dropout=0.0, init_std_output=0.1)


def test_head_paradigm_is_validated():
    for bad in (0, 3, "1", True, None):
        with pytest.raises(ValueError, match="head_paradigm"):
            PTConfig(head_paradigm=bad)
    assert PTConfig().head_paradigm == 2 and PTConfig(head_paradigm=1).head_paradigm == 1


@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_paradigm1_equals_paradigm2_at_base_width(preset):
    ids, mask = batch()
    logits = []
    for paradigm in (1, 2):
        torch.manual_seed(0)
        model = PTForMaskedLM(PTConfig(**P1_BASE, parametrization=preset, head_paradigm=paradigm).with_width(8))
        logits.append(model(ids, attention_mask=mask).logits)
    assert torch.equal(logits[0], logits[1])  # same seed, same weights, same temperature: bit-identical


@pytest.mark.parametrize("scaling", ["channels", "rank"])
def test_with_width_keeps_r_tot_under_paradigm1_and_grows_it_under_2(scaling):
    for paradigm, r_tot in ((1, 2 * 4), (2, 4 * 2 * 4)):
        wide = PTConfig(**P1_BASE, width_scaling=scaling, head_paradigm=paradigm).with_width(32)
        assert wide.num_channels * wide.rank == r_tot and wide.latent_size == 64 and wide.head_paradigm == paradigm
        assert wide.resolved_base == (8, 4, 16)
        if paradigm == 1:
            assert (wide.num_channels, wide.rank) == (2, 4)
            assert wide.with_width(128).resolved_base == (8, 4, 16)  # growing further keeps the base


@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_paradigm1_head_temperature_is_m_times_the_base_one(preset):
    base = PTConfig(**P1_BASE, parametrization=preset, head_paradigm=1, head_temperature=0.7)
    assert base.scales().head_temperature == 0.7
    for width in (16, 40):
        assert base.with_width(width).scales().head_temperature == pytest.approx(0.7 * width / 8)
        p2 = PTConfig(**P1_BASE, parametrization=preset, head_temperature=0.7).with_width(width)
        assert p2.scales().head_temperature == 0.7  # paradigm 2: Theta(1)


def test_paradigm1_model_divides_head_logits_by_the_grown_temperature():
    """A paradigm-1 model at N = 4 N0 is, weight for weight, the paradigm-2 config with the same h, r and
    lambda_H = 4: the model reads its temperature from scales(), nowhere else."""
    wide = PTConfig(**P1_BASE, head_paradigm=1).with_width(32)
    same_shape = replace_config(wide, head_paradigm=2, head_temperature=4.0)
    assert same_shape.scales() == wide.scales()
    torch.manual_seed(0)
    p1 = PTForMaskedLM(wide).double()
    p2 = PTForMaskedLM(same_shape).double()
    p2.load_state_dict(p1.state_dict())
    ids, mask = batch()
    out1, out2 = (m(ids, attention_mask=mask, output_attentions=True) for m in (p1, p2))
    torch.testing.assert_close(out1.logits, out2.logits, rtol=0, atol=0)
    p1.config.head_paradigm = 2  # lambda_H back to 1: sharper heads
    assert not torch.allclose(p1(ids, attention_mask=mask, output_attentions=True).attentions[0], out1.attentions[0])


def test_paradigm1_roundtrips_through_save_pretrained_and_old_configs_read_as_2(tmp_path):
    torch.manual_seed(0)
    model = PTForMaskedLM(PTConfig(**P1_BASE, head_paradigm=1).with_width(16)).eval()
    ids, mask = batch()
    model.save_pretrained(tmp_path / "p1")
    loaded = PTForMaskedLM.from_pretrained(tmp_path / "p1").eval()
    assert loaded.config.head_paradigm == 1 and loaded.config.scales() == model.config.scales()
    torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    PTConfig(**P1_BASE).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    saved.pop("head_paradigm", None)  # a config written before the field existed
    path.write_text(json.dumps(saved))
    assert PTConfig.from_pretrained(tmp_path / "old").head_paradigm == 2
