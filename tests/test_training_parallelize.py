"""probformer.training.parallelize's model hooks on the BERT and UT baselines (issues 10, 12): activation
checkpointing and regional compilation (design note 6, 8), as ``apply_model_hooks`` calls them
(``enable_activation_checkpointing`` and ``compile_regions``, defined in models/bert/modeling_bert.py).

References: the plain model's values and gradients (float64, dropout off; with dropout, the same RNG
seed) and the eager model for the compiled one.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ENCODERS, perturb_norms_and_biases
from conftest import encoder_batch_half_scored as batch
from conftest import tiny_encoder as tiny

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0)


def loss_and_grads(model, ids, mask, labels) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


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
