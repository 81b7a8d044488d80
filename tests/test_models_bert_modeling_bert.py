"""probformer.models.bert.modeling_bert: the BERT encoder (and the Universal Transformer built on its
layers) -- shapes, equality with Hugging Face's BERT (post-LN ``BertForMaskedLM``, pre-LN
``MegatronBertForMaskedLM``), muP (design note sections 4, 4a, 6), parameter roles and groups, the FFN's
own fan-in multiplier, optimizer state from earlier versions.

Tiny configs (hidden 32, 2 layers, 4 heads, vocab 99, seq 7, batch 3); references: HF BertForMaskedLM and
MegatronBertForMaskedLM given the same weights, the SP model at the base width.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from conftest import ENCODER_BATCH as BATCH
from conftest import ENCODER_SEQ as SEQ
from conftest import ENCODER_VOCAB as VOCAB
from conftest import ENCODERS, encoder_batch_half_scored, perturb_norms_and_biases
from conftest import TINY_ENCODER as TINY
from conftest import encoder_batch as batch
from conftest import tiny_encoder as tiny

from probformer.models import MODEL_CLASSES, build_model
from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.bert.modeling_bert import ProbformerBertForMaskedLM
from probformer.models.config_utils import replace_config
from probformer.parametrization import Role, build_optimizer, named_roles, param_groups
from probformer.sizing.budget import count_parameters

PRESETS = ("sp", "mup")


def slope(widths: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


# -- shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_with_and_without_labels(arch: str, preset: str):
    torch.manual_seed(0)
    model = tiny(arch, preset).eval()
    ids, mask, labels = batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (BATCH, SEQ, VOCAB) and out.loss is None
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (BATCH, SEQ, 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (BATCH, 4, SEQ, SEQ)
    assert out.attentions[1][2, :, :, 3:].abs().max() == 0  # padded keys get no attention
    scored = model(ids, attention_mask=mask, labels=labels, scored_logits_only=True)
    assert scored.logits.shape == (4, VOCAB) and torch.isfinite(scored.loss)
    # The head at scored positions only gives the full logits at those positions, and the same loss.
    torch.testing.assert_close(scored.logits, out.logits[labels != -100], rtol=0, atol=1e-6)
    full = model(ids, attention_mask=mask, labels=labels)  # HF convention: (B, n, V) even with labels
    assert full.logits.shape == (BATCH, SEQ, VOCAB)
    torch.testing.assert_close(full.loss, scored.loss, rtol=0, atol=1e-6)
    # Padding is invisible: other ids in the padded slots leave real positions unchanged.
    other = model(ids.masked_fill(mask == 0, 17), attention_mask=mask).logits
    torch.testing.assert_close(other[mask.bool()], out.logits[mask.bool()], rtol=0, atol=1e-6)


# -- HF equivalence (SP) -----------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_sp_bert_matches_hf_bert(attn_implementation: str):
    hf_config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_config).eval()
    with torch.no_grad():  # move norms and biases off their 1 / 0 init so that they are tested too
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = ProbformerBertForMaskedLM.from_hf_bert(hf).eval()
    assert ours.decoder.weight is ours.embeddings.word.weight  # SP ties, like HF
    ids, mask, labels = batch()
    for attention_mask in (None, mask):
        ref = hf(input_ids=ids, attention_mask=attention_mask, labels=labels)
        got = ours(ids, attention_mask=attention_mask, labels=labels)
        full = ours(ids, attention_mask=attention_mask).logits
        valid = attention_mask.bool() if attention_mask is not None else torch.ones(BATCH, SEQ, dtype=torch.bool)
        err = (full - ref.logits)[valid].abs().max().item()
        assert err < 1e-5, f"max |logit difference| {err:.2e}"
        torch.testing.assert_close(got.loss, ref.loss, rtol=0, atol=1e-5)


def test_sp_bert_trains_and_initialises_like_hf_bert():
    """The SP BERT is HF BertForMaskedLM in training too: from the same weights, 3 AdamW steps through
    our optimizer groups (as the trainer builds them; gradient clipping at 1.0) give HF's weights after
    3 plain AdamW steps; and a fresh SP model draws every tensor from HF's init distribution."""
    from probformer.models.bert.modeling_bert import convert_hf_state_dict
    from probformer.parametrization import build_optimizer

    hf_config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_config).train()
    ours = ProbformerBertForMaskedLM.from_hf_bert(hf).train()
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    our_opt = build_optimizer(ours, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8, scales=ours.config.scales())
    for step in range(3):
        ids, mask, labels = batch(seed=step)
        for model, opt, kwargs in ((hf, hf_opt, {}), (ours, our_opt, {"scored_logits_only": True})):
            loss = model(ids, attention_mask=mask, labels=labels, **kwargs).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    expected = convert_hf_state_dict(hf.state_dict())
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)

    wide = dict(vocab_size=2000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512)
    torch.manual_seed(1)
    hf_fresh = convert_hf_state_dict(transformers.BertForMaskedLM(transformers.BertConfig(**wide)).state_dict())
    torch.manual_seed(2)
    ours_fresh = build_model("bert", parametrization="sp", vocab_size=2000, hidden_size=256, num_layers=2, num_heads=4,
                             intermediate_size=512, pad_token_id=0).state_dict()
    assert sorted(ours_fresh) == sorted(hf_fresh)
    for name, value in ours_fresh.items():
        ref = hf_fresh[name]
        assert value.shape == ref.shape, name
        torch.testing.assert_close(value.mean(), ref.mean(), rtol=0, atol=2e-3, msg=name)
        torch.testing.assert_close(value.std(), ref.std(), rtol=0.05, atol=1e-6, msg=name)


# -- muP ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ENCODERS)
def test_mup_equals_sp_at_base_width(arch: str):
    torch.manual_seed(0)
    sp, mup = tiny(arch, "sp").eval(), tiny(arch, "mup").eval()
    # At init they differ only in the zero query and the untied zero decoder (design note 4a) ...
    first = mup.layer_at(0)
    assert first.query.weight.abs().max() == 0 and mup.decoder.weight.abs().max() == 0
    assert mup.decoder.weight is not mup.embeddings.word.weight
    assert sp.decoder.weight is sp.embeddings.word.weight and sp.layer_at(0).query.weight.abs().max() > 0
    # ... and given the same weights they compute the same function.
    mup.load_state_dict(sp.state_dict())
    ids, mask, labels = batch()
    torch.testing.assert_close(mup(ids, attention_mask=mask).logits, sp(ids, attention_mask=mask).logits, rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(mup(ids, mask, labels).loss, sp(ids, mask, labels).loss, rtol=0, atol=1e-6)


def tap_means(arch: str, preset: str, widths: list[int], seeds: tuple[int, ...], **overrides) -> dict[str, list[float]]:
    """Mean |activation| at every tap, per width, averaged over seeds, at initialisation."""
    config_cls, model_cls = MODEL_CLASSES[arch]
    base = config_cls(**{**TINY, "intermediate_size": 128, "parametrization": preset, "hidden_dropout": 0.0,
                         "attention_dropout": 0.0, "init_std_output": 0.02, **overrides})
    table: dict[str, list[float]] = {}
    for width in widths:
        sums: dict[str, float] = {}
        for seed in seeds:
            torch.manual_seed(seed)
            model = model_cls(base.with_width(width)).eval()
            ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(100 + seed))
            hooks = [
                module.register_forward_hook(
                    lambda _m, _i, out, name=name, sums=sums: sums.__setitem__(
                        name, sums.get(name, 0.0) + out.abs().mean().item())
                )
                for name, module in model.named_modules() if isinstance(module, torch.nn.Identity)
            ]
            with torch.no_grad():
                model(ids)
            for hook in hooks:
                hook.remove()
        for name, total in sums.items():
            table.setdefault(name, []).append(total / len(seeds))
    return table


@pytest.mark.parametrize("arch", ENCODERS)
def test_mup_coordinates_width_independent_at_init(arch: str):
    widths = [32, 64, 128, 256]
    mup = tap_means(arch, "mup", widths, seeds=(0, 1, 2))
    sp = tap_means(arch, "sp", widths, seeds=(0, 1, 2))
    flat = [n for n in mup
            if n == "embeddings_tap" or n.split(".")[-1] in ("attention_output", "ffn_output", "layer_output")]
    assert len(flat) == 1 + 3 * 2
    slopes = {name: slope(widths, mup[name]) for name in flat}
    assert all(abs(s) <= 0.1 for s in slopes.values()), slopes
    # SP: sublayer outputs grow ~ N (two std-0.02 matrices, each sqrt(N)); norms keep the stream at O(1).
    for name in flat:
        if name.endswith(("attention_output", "ffn_output")):
            assert 0.8 < slope(widths, sp[name]) < 1.3, (name, sp[name])
        else:
            assert abs(slope(widths, sp[name])) <= 0.1
    # Read-out at init: SP's tied decoder gives logits ~ sqrt(N); muP's (alpha/m) W gives ~ 1/sqrt(N)
    # (with the default zero-init decoder they are exactly 0); muP's logits become O(1) through training.
    assert 0.4 < slope(widths, sp["logits_tap"]) < 0.6
    assert -0.6 < slope(widths, mup["logits_tap"]) < -0.4
    # muP's zero query makes attention logits exactly 0 at init; SP's grow ~ N (q.k / sqrt(d), d fixed).
    assert max(mup["taps.0.attention_logits"]) == 0
    assert slope(widths, sp["taps.0.attention_logits"]) > 0.8


@pytest.mark.parametrize("arch", ENCODERS)
def test_pre_ln_mup_coordinates_width_independent_at_init(arch: str):
    """Pre-LN under muP: every tap (the un-normalised residual stream included) is flat in width;
    under SP no norm caps the stream, so it grows with the sublayer outputs (~N)."""
    widths = [32, 64, 128, 256]
    mup = tap_means(arch, "mup", widths, seeds=(0, 1, 2), pre_layer_norm=True)
    sp = tap_means(arch, "sp", widths, seeds=(0, 1, 2), pre_layer_norm=True)
    flat = [n for n in mup
            if n == "embeddings_tap" or n.split(".")[-1] in ("attention_output", "ffn_output", "layer_output")]
    assert len(flat) == 1 + 3 * 2
    slopes = {name: slope(widths, mup[name]) for name in flat}
    assert all(abs(s) <= 0.1 for s in slopes.values()), slopes
    assert all(slope(widths, sp[name]) > 0.4 for name in flat if name.endswith("layer_output")), sp
    assert -0.6 < slope(widths, mup["logits_tap"]) < -0.4  # as post-LN: (alpha/m) W at init, O(1) after training


@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("preset", PRESETS)
def test_roles_and_param_groups(arch: str, preset: str):
    config_cls, model_cls = MODEL_CLASSES[arch]
    model = model_cls(config_cls(**{**TINY, "parametrization": preset}).with_width(128))  # m = 4
    roles = {name: role for name, _, role in named_roles(model)}  # raises on an untagged parameter
    assert len(roles) == len(list(model.parameters()))
    hidden = {n for n, r in roles.items() if r == Role.HIDDEN}
    ffn = {n for n, r in roles.items() if r == Role.FFN}
    assert {n.split(".")[-2] for n in hidden} == {"query", "key", "value", "attn_out", "ffn_in", "dense"}
    assert {n.split(".")[-2] for n in ffn} == {"ffn_out"} and all(n.endswith("weight") for n in hidden | ffn)
    assert roles["decoder.bias"] == Role.VECTOR
    assert roles.get("decoder.weight") == (Role.OUTPUT if preset == "mup" else None)  # SP: tied to the INPUT table
    sc = model.config.scales()
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, hidden_lr_mult=sc.hidden_lr_mult,
                          ffn_lr_mult=sc.ffn_lr_mult)
    by_role = {g["role"]: g for g in groups}
    assert set(by_role["hidden"]["param_names"]) == hidden and set(by_role["ffn"]["param_names"]) == ffn
    # the FFN grew with N (with_width), so its fan-in multiplier is N/N0 too
    assert by_role["hidden"]["lr_mult"] == by_role["ffn"]["lr_mult"] == (0.25 if preset == "mup" else 1.0)
    assert all(g["lr_mult"] == 1.0 for role, g in by_role.items() if role not in ("hidden", "ffn"))


def ffn_output_std(model, x: torch.Tensor) -> float:
    layer = model.layer_at(0)
    return layer.ffn_out(torch.nn.functional.gelu(layer.ffn_in(x))).std().item()


@pytest.mark.parametrize("arch", ENCODERS)
def test_ffn_output_uses_its_own_fan_in_multiplier(arch: str):
    """Design note 4's m is each matrix's fan-in multiplier: when the FFN width I is set apart from N
    (`probformer size` does so to land on a budget), the FFN output projection is scaled by I/I0, so its
    output keeps the base model's size at init and its Adam lr is eta * I0/I; every other hidden matrix
    stays at N/N0."""
    config_cls, model_cls = MODEL_CLASSES[arch]
    base = config_cls(**{**TINY, "hidden_dropout": 0.0, "attention_dropout": 0.0}).with_width(64)  # N0 = 32 -> N = 64
    assert base.base_intermediate_size == TINY["intermediate_size"]
    x = torch.randn(64, 16, 64, generator=torch.Generator().manual_seed(0))
    stds = {}
    for factor in (1, 8):  # I = 4N (in proportion) and 8 times that
        torch.manual_seed(0)
        model = model_cls(replace_config(base, intermediate_size=base.intermediate_size * factor))
        sc = model.config.scales()
        m_ffn = 2 * factor  # I / I0
        assert sc.ffn_init == pytest.approx(sc.init_std / math.sqrt(m_ffn))
        assert sc.ffn_lr_mult == pytest.approx(1 / m_ffn)
        assert sc.hidden_lr_mult == pytest.approx(1 / 2) and sc.hidden_init == pytest.approx(sc.init_std / math.sqrt(2))
        optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8)
        groups = {g["role"]: g for g in optimizer.param_groups}
        assert groups["ffn"]["lr"] == pytest.approx(1e-3 / m_ffn) and groups["hidden"]["lr"] == pytest.approx(1e-3 / 2)
        with torch.no_grad():
            stds[factor] = ffn_output_std(model, x)
    # fan-in 8x larger, init 1/sqrt(8) smaller: the same output scale (N/N0 for every matrix would give sqrt(8)x)
    assert stds[8] == pytest.approx(stds[1], rel=0.1)


def test_models_saved_without_base_intermediate_size_keep_their_parametrization():
    """A config from before base_intermediate_size: I0 is I in proportion to N0, so the FFN output's
    multiplier is N/N0 as it was."""
    config = ProbformerBertConfig(**{**TINY, "hidden_size": 64, "num_heads": 2, "intermediate_size": 300,
                                     "base_hidden_size": 32})
    for legacy in (config, config.with_width(96)):  # a wider member stays in proportion too
        sc = legacy.scales()
        assert legacy.base_intermediate_size is None
        assert sc.ffn_lr_mult == pytest.approx(sc.hidden_lr_mult) and sc.ffn_init == pytest.approx(sc.hidden_init)


def test_an_explicit_hidden_lr_factor_moves_the_ffn_output_by_the_same_ratio():
    config_cls, model_cls = MODEL_CLASSES["bert"]
    model = model_cls(replace_config(config_cls(**TINY).with_width(64), intermediate_size=37 * 8))  # m 2, m_ffn 8
    groups = {g["role"]: g for g in build_optimizer(model, lr=1.0, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8,
                                                    hidden_lr_mult=0.1).param_groups}
    assert groups["hidden"]["lr"] == pytest.approx(0.1) and groups["ffn"]["lr"] == pytest.approx(0.1 * 2 / 8)


def test_optimizer_state_from_before_the_ffn_group_resumes():
    """Checkpoints of earlier versions hold 4 groups (the FFN output inside hidden): resuming one
    regroups every parameter's Adam moments by name into this version's groups."""
    from probformer.training.distributed import ProcessContext, load_optimizer_state

    config_cls, model_cls = MODEL_CLASSES["bert"]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**TINY, "hidden_dropout": 0.0, "attention_dropout": 0.0}).with_width(64))
    current = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8)
    ffn = next(g for g in current.param_groups if g["role"] == "ffn")
    earlier = []
    for group in current.param_groups:
        if group["role"] != "ffn":
            group = dict(group)
            if group["role"] == "hidden":
                group["params"] = group["params"] + ffn["params"]
                group["param_names"] = group["param_names"] + ffn["param_names"]
            earlier.append(group)
    old = torch.optim.AdamW(earlier, lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    ids = torch.randint(5, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    old.step()
    load_optimizer_state(model, current, old.state_dict(), ProcessContext())
    assert [g["role"] for g in current.param_groups] == ["input", "vector", "hidden", "ffn", "output"]
    for name, param in model.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(current.state[param][key], old.state[param][key]), name


# -- pre-LN ------------------------------------------------------------------------------------------
def test_pre_ln_sp_bert_matches_hf_megatron_bert():
    hf_config = transformers.MegatronBertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=1,
    )
    torch.manual_seed(0)
    hf = transformers.MegatronBertForMaskedLM(hf_config).eval()
    perturb_norms_and_biases(hf)
    ours = ProbformerBertForMaskedLM.from_hf_bert(hf).eval()
    assert ours.config.pre_layer_norm and ours.embeddings.norm is None and ours.final_norm is not None
    ids, mask, labels = encoder_batch_half_scored()
    for attention_mask in (None, mask):
        ref = hf(input_ids=ids, attention_mask=attention_mask, labels=labels)
        full = ours(ids, attention_mask=attention_mask).logits
        valid = attention_mask.bool() if attention_mask is not None else torch.ones(BATCH, SEQ, dtype=torch.bool)
        err = (full - ref.logits)[valid].abs().max().item()
        assert err < 1e-5, f"max |logit difference| {err:.2e}"
        torch.testing.assert_close(ours(ids, attention_mask=attention_mask, labels=labels).loss, ref.loss,
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("preset", ("sp", "mup"))
def test_pre_ln_parameters_count_and_roles(arch: str, preset: str):
    pre = tiny(arch, parametrization=preset, pre_layer_norm=True)
    post = tiny(arch, parametrization=preset)
    n_pre = sum(p.numel() for p in pre.parameters())
    # The embedding LayerNorm moves to the end (final_norm): the same count, which sizing computes.
    assert n_pre == sum(p.numel() for p in post.parameters())
    assert count_parameters(arch, pre.config)["total"] == n_pre
    roles = {name: role for name, _, role in named_roles(pre)}  # raises on an untagged parameter
    assert len(roles) == len(list(pre.parameters()))
    assert roles["final_norm.weight"] == roles["final_norm.bias"] == Role.VECTOR
    assert not any(name.startswith("embeddings.norm") for name in roles)
    # Pre-LN reads LN(x) into each sublayer: the residual stream itself is never normalised in a layer.
    layer = pre.layer_at(0)
    x = 5.0 + 3.0 * torch.randn(BATCH, SEQ, 32)
    with torch.no_grad():
        out, _ = layer.eval()(x, None, pre.config.scales().attention, pre.taps[0])
    assert (out - x).abs().mean() < x.abs().mean()  # a normalised output would lose the offset of 5


@pytest.mark.parametrize("arch", ENCODERS)
def test_pre_ln_mup_equals_sp_at_base_width(arch: str):
    torch.manual_seed(0)
    sp = tiny(arch, parametrization="sp", pre_layer_norm=True).eval()
    mup = tiny(arch, parametrization="mup", pre_layer_norm=True).eval()
    mup.load_state_dict(sp.state_dict())
    ids, mask, _labels = encoder_batch_half_scored()
    torch.testing.assert_close(mup(ids, attention_mask=mask).logits, sp(ids, attention_mask=mask).logits,
                               rtol=0, atol=1e-6)
