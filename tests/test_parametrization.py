"""The parametrization table (design note 4, 4a): roles, groups, init, and muP == SP at the base width."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM
from probformer.parametrization import Role, build_optimizer, named_roles, param_groups, tag
from probformer.training.schedule import build_scheduler

BASE = dict(vocab_size=128, hidden_size=32, num_channels=2, rank=16, latent_size=64, num_iterations=3,
            head_dropout=0.0, label_dropout=0.0)


def pt(preset: str, width: int = 32, seed: int = 0, **kw) -> PTForMaskedLM:
    cfg = PTConfig(**{**BASE, "parametrization": preset, **kw}).with_width(width)
    torch.manual_seed(seed)
    return PTForMaskedLM(cfg)


def test_every_parameter_has_a_role():
    roles = {name: role for name, _, role in named_roles(pt("mup"))}
    assert roles == {"unary.weight": Role.INPUT, "ternary.U": Role.HIDDEN, "ternary.V": Role.HIDDEN,
                     "latent.B": Role.HIDDEN, "readout.weight": Role.OUTPUT, "readout.bias": Role.VECTOR}


def test_untagged_parameter_is_an_error():
    model = pt("mup")
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="extra.weight"):
        list(named_roles(model))
    with pytest.raises(AttributeError):
        tag(torch.nn.Linear(2, 2), nonexistent=Role.HIDDEN)


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_group_lrs_follow_the_table(width, beta):
    lr = 1e-2
    for preset in ("sp", "mup"):
        model = pt(preset, width, hidden_exponent=beta)
        groups = {g["role"]: g for g in param_groups(model, lr=lr, weight_decay=0.1,
                                                      hidden_lr_mult=model.config.scales().hidden_lr_mult)}
        expected_hidden = lr * ((32 / width) ** (1 - beta) if preset == "mup" else 1.0)
        assert groups["hidden"]["lr"] == pytest.approx(expected_hidden)
        for role in ("input", "output", "vector"):
            assert groups[role]["lr"] == pytest.approx(lr)
        assert groups["hidden"]["weight_decay"] == 0.1 and groups["input"]["weight_decay"] == 0.0
        assert set(groups["hidden"]["param_names"]) == {"ternary.U", "ternary.V", "latent.B"}


def test_scheduler_keeps_per_group_factors():
    model = pt("mup", 128, hidden_exponent=0.5)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8,
                          hidden_lr_mult=model.config.scales().hidden_lr_mult)
    sched = build_scheduler(opt, total_steps=100, warmup_fraction=0.1, decay="cosine", min_ratio=0.1)
    for _ in range(30):
        opt.step()
        sched.step()
    lrs = {g["role"]: g["lr"] for g in opt.param_groups}
    assert lrs["hidden"] / lrs["input"] == pytest.approx(math.sqrt(32 / 128))


@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_init_stds_match_the_table(preset):
    width = 256
    model = pt(preset, width, hidden_exponent=0.5)
    c = model.config
    n0, r0, _ = c.resolved_base
    assert model.unary.weight.std().item() == pytest.approx(c.init_std_input, rel=0.05)
    r_ref, n_ref = (c.rank, width) if preset == "sp" else (r0, n0)
    assert model.ternary.U.std().item() == pytest.approx(1 / math.sqrt(r_ref), rel=0.05)
    assert model.latent.B.std().item() == pytest.approx(1 / math.sqrt(n_ref), rel=0.05)
    assert torch.all(model.readout.weight == 0) and torch.all(model.readout.bias == 0)
    sc = c.scales()
    if preset == "mup":  # effective U std = c_U / sqrt(r0) with c_U = (1/sqrt(N0)) (N0/N)^beta -> 1/sqrt(N r0)
        assert sc.ternary / math.sqrt(r0) == pytest.approx(1 / math.sqrt(width * r0))
        assert sc.output == pytest.approx(32 / width)
    else:
        assert sc.output == 1.0 and sc.ternary == pytest.approx(1 / math.sqrt(width))


def _train_losses(model: PTForMaskedLM, steps: int = 6) -> list[float]:
    opt = build_optimizer(model, lr=3e-2, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-8,
                          hidden_lr_mult=model.config.scales().hidden_lr_mult)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 128, (4, 12), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.3, ids, -100)
    losses = []
    for _ in range(steps):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_mup_equals_sp_at_base_width_forward_and_training():
    # Design note 4a: muP is SP-scale stored weights + multipliers equal to 1 at N0.
    for beta in (0.5, 1.0):
        sp, mup = pt("sp", 32, init_std_output=0.05), pt("mup", 32, init_std_output=0.05, hidden_exponent=beta)
        for p_sp, p_mup in zip(sp.parameters(), mup.parameters(), strict=True):
            torch.testing.assert_close(p_sp, p_mup)
        ids = torch.randint(5, 128, (2, 9), generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(sp(ids).logits, mup(ids).logits)
        assert _train_losses(sp) == pytest.approx(_train_losses(mup), rel=1e-5)


def test_mup_differs_from_sp_away_from_base_width():
    sp, mup = pt("sp", 64, init_std_output=0.05), pt("mup", 64, init_std_output=0.05)
    ids = torch.randint(5, 128, (2, 9), generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(sp(ids).logits, mup(ids).logits)


def _coordinates(model: PTForMaskedLM, ids: torch.Tensor) -> dict[str, float]:
    record: dict[str, float] = {}
    hooks = [module.register_forward_hook(
                 lambda _m, _i, out, key=f"{name}/{t}": record.__setitem__(key, out.abs().mean().item()))
             for t, taps in enumerate(model.taps) for name, module in taps.items()]
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return record


def test_mup_coordinates_width_independent_at_init():
    """Design note 2/4: mean |x| of q, head logits, messages, latent and s do not drift with N (32..512)."""
    widths = [32, 64, 128, 256, 512]
    ids = torch.randint(5, 128, (4, 24), generator=torch.Generator().manual_seed(0))
    table = {w: [_coordinates(pt("mup", w, seed=s), ids) for s in range(2)] for w in widths}
    for key in table[32][0]:
        means = [np.mean([run[key] for run in table[w]]) for w in widths]
        slope = np.polyfit(np.log2(widths), np.log2(means), 1)[0]
        assert abs(slope) <= 0.1, f"{key}: log-log slope {slope:+.2f} over widths {widths}: {means}"
        assert max(means) / min(means) < 1.5, f"{key}: {means}"


def test_build_optimizer_reads_the_models_own_scales():
    model = pt("mup", 128, hidden_exponent=0.5)
    sc = model.config.scales()
    assert sc.hidden_lr_mult != 1.0 and sc.eps_mult != 1.0 and sc.hidden_eps_mult != 1.0  # not trivially 1
    implicit = build_optimizer(model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8)
    explicit = build_optimizer(model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8,
                               hidden_lr_mult=sc.hidden_lr_mult, eps_mult=sc.eps_mult,
                               hidden_eps_mult=sc.hidden_eps_mult)
    for a, b in zip(implicit.param_groups, explicit.param_groups, strict=True):
        assert (a["lr"], a["eps"], a["weight_decay"]) == (b["lr"], b["eps"], b["weight_decay"])
    assert len({g["eps"] for g in implicit.param_groups}) > 1  # the muP eps rule is applied per group


# -- head paradigm 1 (design note 5): U, V are factors of a fixed-rank hidden matrix --------------------
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_paradigm1_ternary_factors_get_the_lowrank_lr(beta):
    """Paradigm 1 keeps r fixed: U, V (role lowrank) get the effective Adam lr eta (N0/N)^(1/2) that makes
    T = U V^T's update Theta(1/N) (parametrization module doc); B stays hidden; eps is the hidden one."""
    lr, width = 1e-2, 128
    for preset in ("sp", "mup"):
        model = pt(preset, width, hidden_exponent=beta, head_paradigm=1)
        roles = {name: role for name, _, role in named_roles(model)}
        assert roles["ternary.U"] == roles["ternary.V"] == Role.LOWRANK and roles["latent.B"] == Role.HIDDEN
        sc = model.config.scales()
        groups = {g["role"]: g for g in build_optimizer(model, lr=lr, weight_decay=0.1, betas=(0.9, 0.98),
                                                                eps=1e-8).param_groups}
        assert set(groups["lowrank"]["param_names"]) == {"ternary.U", "ternary.V"}
        assert groups["hidden"]["param_names"] == ["latent.B"]
        assert groups["lowrank"]["eps"] == groups["hidden"]["eps"] and groups["lowrank"]["weight_decay"] == 0.1
        if preset == "mup":
            assert groups["lowrank"]["lr"] == pytest.approx(lr * (32 / width) ** (0.5 - beta))
            # effective lr (forward multiplier x stored lr) relative to the base width: (N0/N)^(1/2)
            base = pt(preset, 32, hidden_exponent=beta, head_paradigm=1).config.scales()
            ratio = (sc.ternary * sc.lowrank_lr_mult) / (base.ternary * base.lowrank_lr_mult)
            assert ratio == pytest.approx(math.sqrt(32 / width))
            assert groups["hidden"]["lr"] == pytest.approx(lr * (32 / width) ** (1 - beta))
        else:
            assert groups["lowrank"]["lr"] == groups["hidden"]["lr"] == lr


def test_paradigm2_groups_unchanged_by_the_lowrank_role():
    groups = build_optimizer(pt("mup", 128), lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8).param_groups
    assert [g["role"] for g in groups] == ["input", "vector", "hidden", "output"]


def test_paradigm1_mup_equals_sp_and_paradigm2_at_base_width():
    """At N0 the paradigm-1 muP model is the paradigm-1 SP model and the paradigm-2 model, in forward and
    under AdamW (every lr and eps factor is 1 there; the lowrank group is a split of the hidden one)."""
    models = [pt(preset, 32, init_std_output=0.05, head_paradigm=paradigm)
              for preset, paradigm in (("mup", 1), ("sp", 1), ("mup", 2))]
    ids = torch.randint(5, 128, (2, 9), generator=torch.Generator().manual_seed(3))
    logits = [m(ids).logits for m in models]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    losses = [_train_losses(m) for m in models]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] == pytest.approx(losses[2], rel=1e-6)
