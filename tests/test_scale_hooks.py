"""Training hooks of the BERT and UT baselines (issues 10, 12): pre-LN blocks, activation
checkpointing and regional compilation (design note 6, 8).

References: HF ``MegatronBertForMaskedLM`` (the pre-LN BERT) given the same weights, the plain
model's values and gradients (float64, dropout off; with dropout, the same RNG seed), the eager
model for the compiled one, and the instantiated model for the parameter count.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from probformer.models import MODEL_CLASSES
from probformer.models.bert.modeling_bert import ProbformerBertForMaskedLM
from probformer.parametrization import Role, named_roles
from probformer.sizing.budget import count_parameters

VOCAB, BATCH, SEQ = 99, 3, 7
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0)
ENCODERS = ("bert", "ut")


def tiny(arch: str, **overrides):
    config_cls, model_cls = MODEL_CLASSES[arch]
    return model_cls(config_cls(**{**TINY, **overrides}))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.where(mask.bool() & (torch.rand(BATCH, SEQ, generator=g) < 0.5), ids, -100)
    labels[0, 0] = ids[0, 0]  # at least one scored position
    return ids, mask, labels


def loss_and_grads(model, ids, mask, labels) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def perturb_norms_and_biases(model: torch.nn.Module) -> None:
    """Move norms and biases off their 1 / 0 init, so that a comparison tests them too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or ".ln." in name or name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


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
    ids, mask, labels = batch()
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
    ids, mask, labels = batch()
    torch.testing.assert_close(mup(ids, attention_mask=mask).logits, sp(ids, attention_mask=mask).logits,
                               rtol=0, atol=1e-6)


# -- activation checkpointing ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("pre_layer_norm", (False, True))
def test_activation_checkpointing_keeps_values_and_gradients(arch: str, pre_layer_norm: bool):
    ids, mask, labels = batch()
    torch.manual_seed(0)
    plain = tiny(arch, pre_layer_norm=pre_layer_norm, init_std_output=0.02, **NO_DROPOUT).double().train()
    perturb_norms_and_biases(plain)
    checkpointed = tiny(arch, pre_layer_norm=pre_layer_norm, **NO_DROPOUT).double().train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_activation_checkpointing()
    loss0, grads0 = loss_and_grads(plain, ids, mask, labels)
    loss1, grads1 = loss_and_grads(checkpointed, ids, mask, labels)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    assert all(g.abs().max() > 0 for g in grads0)  # every parameter takes part
    for a, b in zip(grads1, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ENCODERS)
def test_activation_checkpointing_replays_dropout(arch: str):
    ids, mask, labels = batch()
    grads = []
    for enabled in (False, True):
        torch.manual_seed(0)
        model = tiny(arch, hidden_dropout=0.3, attention_dropout=0.3, init_std_output=0.02).double().train()
        model.enable_activation_checkpointing(enabled)
        torch.manual_seed(5)
        grads.append(loss_and_grads(model, ids, mask, labels)[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def saved_activation_bytes(model, ids, mask, labels) -> int:
    """Bytes autograd saves for backward during one forward (outside a checkpointed region)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, attention_mask=mask, labels=labels)
    return total


@pytest.mark.parametrize("arch", ENCODERS)
def test_activation_checkpointing_saves_memory_in_training_only(arch: str):
    ids, mask, labels = batch()
    model = tiny(arch, num_layers=4, **NO_DROPOUT)
    plain_train = saved_activation_bytes(model.train(), ids, mask, labels)
    plain_eval = saved_activation_bytes(model.eval(), ids, mask, labels)
    model.enable_activation_checkpointing()
    assert saved_activation_bytes(model.train(), ids, mask, labels) < plain_train / 2
    assert saved_activation_bytes(model.eval(), ids, mask, labels) == plain_eval  # eval: not checkpointed
    model.enable_activation_checkpointing(False)
    assert saved_activation_bytes(model.train(), ids, mask, labels) == plain_train


# -- regional compilation ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arch", ENCODERS)
def test_compile_regions_equals_eager_and_compiles_one_layer(arch: str):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ids, mask, labels = batch()
    torch.manual_seed(0)
    eager = tiny(arch, num_layers=3, init_std_output=0.02, **NO_DROPOUT)
    compiled = tiny(arch, num_layers=3, **NO_DROPOUT)
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    compiled.compile_regions()
    assert list(compiled.state_dict()) == keys  # compiled in place: checkpoints keep their names
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(ids, attention_mask=mask).logits,
                                   eager.eval()(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    loss0, grads0 = loss_and_grads(eager.train(), ids, mask, labels)
    loss1, grads1 = loss_and_grads(compiled.train(), ids, mask, labels)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads1, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # One graph per mode (eval, train) for all three steps: BERT's layers share it, UT has one layer.
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    # Checkpointing a compiled layer recomputes that same graph.
    compiled.enable_activation_checkpointing()
    loss2, grads2 = loss_and_grads(compiled, ids, mask, labels)
    torch.testing.assert_close(loss2, loss0, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads2, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
