"""probformer.models.pt (modeling_pt, root, accounting): PT's ROOT variable (docs/design.md §9).

- ROOT against the naive token-by-token reference of tests/pt_reference.py (§2 + §9 written as loops
  over i, j and c), forward values, head marginals and gradients, float64, with padding, every kernel;
- use_root=False is what PT was before ROOT, to the bit (a snapshot taken before ROOT was written,
  tests/data/pt_mlm_without_root.safetensors) and for a config.json saved without the new keys;
- muP equals SP at the base width with ROOT and the task heads; every ROOT parameter has its role;
- the accounting (parameters, FLOPs) follows ROOT; the activation estimate refuses it;
- the reduced coordinate check passes for PT-muP with ROOT (ROOT's state tapped) and fails for SP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pt_reference import naive_root_inference
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from probformer.experiments.coord_check import activation_taps, corpus_batch, run_coord_check
from probformer.models import architecture
from probformer.models.accounting import Precision
from probformer.models.pt.bucket_kernels import KERNEL_NAMES
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM, PTForSequenceClassification, PTForTokenClassification
from probformer.parametrization import Role, named_roles, param_groups

TINY = dict(vocab_size=30, hidden_size=8, num_channels=2, rank=4, latent_size=8, num_iterations=2, max_distance=3,
            head_dropout=0.0, label_dropout=0.0, init_std_output=0.1, base_hidden_size=4, use_root=True)


def root_model(kernel: str = "reference", preset: str = "mup", cls=PTForMaskedLM, **overrides) -> PTForMaskedLM:
    torch.manual_seed(0)  # base width 4 != 8, so the muP multipliers are not trivially 1
    config = PTConfig(**{**TINY, "mfvi_kernel": kernel, "parametrization": preset, **overrides})
    return cls(config).double()


def padded_batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 30, (3, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, max(1, n - 3):] = 0
    mask[2, 1:] = 0  # a single word: its only candidate head is ROOT
    return ids, mask


# -- ROOT against the naive reference ---------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("preset", ["sp", "mup"])
@pytest.mark.parametrize("variant", [{}, {"use_latent_factor": False}, {"use_position_unary": True},
                                     {"head_paradigm": 1}])  # paradigm 1: lambda_H x N/N0 = 2 on ROOT's column too
def test_root_forward_equals_naive_loops(kernel, preset, variant):
    model = root_model(kernel, preset, **variant)
    ids, mask = padded_batch()
    inference = model.mfvi(ids, mask, output_attentions=True)
    words, root, word_heads, root_heads = naive_root_inference(model, ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(inference.labels[valid], words[valid], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inference.root_labels, root, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inference.marginals[-1], word_heads, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inference.root_marginals[-1], root_heads, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("preset", ["sp", "mup"])
def test_root_gradients_equal_naive_loops(kernel, preset):
    model = root_model(kernel, preset)
    ids, mask = padded_batch()
    valid = mask.bool()
    g = torch.Generator().manual_seed(2)
    w_words, w_root = torch.randn(3, 8, 8, dtype=torch.float64, generator=g), torch.randn(3, 8, dtype=torch.float64,
                                                                                         generator=g)
    params = [p for name, p in model.named_parameters() if not name.startswith("readout")]
    assert {"root.rho", "root.U", "root.V"} <= {name for name, _ in model.named_parameters()}

    def objective(words: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        return (words * w_words)[valid].sum() + (root * w_root).sum()

    inference = model.mfvi(ids, mask)
    fast = torch.autograd.grad(objective(inference.labels, inference.root_labels), params)
    words, root, _, _ = naive_root_inference(model, ids, mask)
    ref = torch.autograd.grad(objective(words, root), params)
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_root_at_short_lengths_equals_naive_loops(kernel, n):
    # n < max_distance leaves near buckets empty; n = 1 leaves ROOT as the only candidate head.
    model = root_model(kernel)
    ids, mask = padded_batch(n=n)
    inference = model.mfvi(ids, mask)
    words, root, _, _ = naive_root_inference(model, ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(inference.labels[valid], words[valid], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inference.root_labels, root, rtol=1e-10, atol=1e-10)


def test_root_attentions_complete_each_words_head_distribution():
    model = root_model("banded")
    ids, mask = padded_batch()
    out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(out.root_attentions) == len(out.attentions) == len(out.root_hidden_states) == 2
    a, root = out.attentions[-1], out.root_attentions[-1]  # (B, h, n, n) words, (B, h, n) ROOT
    assert a.shape == (3, 2, 8, 8) and root.shape == (3, 2, 8)
    valid = mask.bool()[:, None, :].expand_as(root)
    torch.testing.assert_close((a.sum(-1) + root)[valid], torch.ones_like(root[valid]))
    assert torch.all(root[~valid] == 0) and torch.all(a[1, :, 5:] == 0) and torch.all(a[1, :, :, 5:] == 0)
    assert torch.all(root[2, :, 0] == 1)  # the one-word sentence attaches to ROOT
    assert out.root_hidden_states[-1].shape == (3, 8)


def test_padding_and_other_rows_do_not_reach_root():
    """ROOT belongs to its row: what sits in padded slots or in other sequences leaves it unchanged."""
    model = root_model("fast").eval()
    ids, mask = padded_batch()
    inference = model.mfvi(ids, mask)
    other = ids.masked_fill(mask == 0, 17)
    other[0] = torch.randint(5, 30, (8,), generator=torch.Generator().manual_seed(7))
    changed = model.mfvi(other, mask)
    torch.testing.assert_close(changed.root_labels[1:], inference.root_labels[1:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.mfvi(ids[1:2], mask[1:2]).root_labels, inference.root_labels[1:2],
                               rtol=1e-12, atol=1e-12)


def test_mlm_with_root_trains_root_and_scores_words_only():
    model = root_model("banded")
    ids, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = 7, 9
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 8, 30)  # words only: ROOT has no row of logits
    expected = torch.nn.functional.cross_entropy(out.logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.root.parameters())


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_activation_checkpointing_with_root_keeps_values_and_gradients(kernel):
    ids, mask = padded_batch()
    results = []
    for enabled in (False, True):
        model = root_model(kernel, head_dropout=0.2, label_dropout=0.2).train()
        model.enable_activation_checkpointing(enabled)
        torch.manual_seed(5)
        inference = model.mfvi(ids, mask)
        value = inference.labels[mask.bool()].sum() + inference.root_labels.pow(2).sum()
        results.append((inference.root_labels, torch.autograd.grad(value, list(model.root.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for a, b in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bf16_autocast_with_root_is_finite():
    model = root_model("fast").float()
    ids, mask = padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inference = model.mfvi(ids, mask)
    assert torch.isfinite(inference.labels).all() and torch.isfinite(inference.root_labels).all()


@pytest.mark.slow
def test_compiled_iteration_with_root_equals_eager():
    ids, mask = padded_batch()
    eager, compiled = root_model("fast").float(), root_model("fast").float()
    compiled.compile_regions()
    torch.testing.assert_close(compiled.mfvi(ids, mask).root_labels, eager.mfvi(ids, mask).root_labels,
                               rtol=1e-5, atol=1e-5)


# -- use_root=False is PT as it was ------------------------------------------------------------------
# The snapshot was taken with the code before ROOT existed (torch 2.13 on CPU): tiny PTForMaskedLMs
# built at seed 0 (so the init order is covered), their eval outputs, then one train-mode forward and
# backward at seed 1 (so dropout's draws are covered). snapshot() below is the code that took it.
SNAPSHOT_FILE = Path(__file__).parent / "data" / "pt_mlm_without_root.safetensors"
SNAPSHOT_CONFIG = dict(vocab_size=30, hidden_size=8, num_channels=2, rank=4, latent_size=12, num_iterations=2,
                       max_distance=3, head_dropout=0.1, label_dropout=0.1, init_std_output=0.1,
                       base_hidden_size=4)
SNAPSHOT_CASES = {f"{preset}-{kernel}": dict(parametrization=preset, mfvi_kernel=kernel)
                  for preset in ("mup", "sp") for kernel in ("reference", "banded", "fast")}


def snapshot_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(5, 30, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 1::3] = ids[:, 1::3]
    return ids, mask, labels


def snapshot(case: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = PTForMaskedLM(PTConfig(**SNAPSHOT_CONFIG, **SNAPSHOT_CASES[case]))
    ids, mask, labels = snapshot_batch()
    out: dict[str, torch.Tensor] = {f"param.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        res = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    out["eval.logits"] = res.logits
    for t, (a, s) in enumerate(zip(res.attentions, res.hidden_states, strict=True)):
        out[f"eval.attentions.{t}"], out[f"eval.hidden_states.{t}"] = a, s
    model.train()
    torch.manual_seed(1)
    loss = model(ids, attention_mask=mask, labels=labels, scored_logits_only=True).loss
    loss.backward()
    out["train.loss"] = loss.detach()
    out.update({f"grad.{k}": p.grad.detach().clone() for k, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("case", list(SNAPSHOT_CASES))
def test_without_root_equals_the_snapshot_from_before_root(case):
    stored = load_file(SNAPSHOT_FILE)
    expected = {key.split("/", 1)[1]: value for key, value in stored.items() if key.startswith(f"{case}/")}
    now = snapshot(case)
    assert set(now) == set(expected)
    for key, value in now.items():
        assert torch.equal(value, expected[key]), f"{case}: {key} differs from the snapshot"


def test_config_saved_without_the_new_keys_loads_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = PTForMaskedLM(PTConfig(**SNAPSHOT_CONFIG)).eval()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    assert saved["use_root"] is False and saved["classifier_pooling"] == "root"
    config_file.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("use_root", "classifier_pooling")}))
    loaded = PTForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.config.use_root is False and loaded.root is None
    ids, mask, _ = snapshot_batch()
    assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


# -- muP = SP at the base width, roles ---------------------------------------------------------------
@pytest.mark.parametrize("cls", [PTForMaskedLM, PTForTokenClassification, PTForSequenceClassification])
def test_mup_equals_sp_at_base_width_with_root_and_heads(cls):
    fields = {**TINY, "base_hidden_size": None, "num_labels": 3}
    sp, mup = (cls(PTConfig(**fields, parametrization=preset)).double().eval() for preset in ("sp", "mup"))
    mup.load_state_dict(sp.state_dict())
    with torch.no_grad():  # the task read-outs start at zero: move them so the outputs are not trivially equal
        for model in (sp, mup):
            head = getattr(model, "classifier", None) or model.readout
            head.weight.copy_(torch.linspace(-1, 1, head.weight.numel()).view_as(head.weight))
    ids, mask = padded_batch()
    a, b = sp(ids, attention_mask=mask, output_hidden_states=True), mup(ids, attention_mask=mask,
                                                                         output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.root_hidden_states[-1], b.root_hidden_states[-1], rtol=1e-12, atol=1e-12)
    wide_sp, wide_mup = (cls(PTConfig(**{**fields, "base_hidden_size": 4}, parametrization=p)).double()
                         for p in ("sp", "mup"))
    wide_mup.load_state_dict(wide_sp.state_dict())
    assert not torch.allclose(wide_sp.mfvi(ids, mask).root_labels, wide_mup.mfvi(ids, mask).root_labels)


def test_root_parameters_have_their_roles_and_groups():
    model = root_model(cls=PTForSequenceClassification)
    roles = {name: role for name, _, role in named_roles(model)}
    assert roles == {"unary.weight": Role.INPUT, "ternary.U": Role.HIDDEN, "ternary.V": Role.HIDDEN,
                     "latent.B": Role.HIDDEN, "root.rho": Role.INPUT, "root.U": Role.HIDDEN,
                     "root.V": Role.HIDDEN, "classifier.weight": Role.OUTPUT, "classifier.bias": Role.VECTOR}
    groups = {g["role"]: set(g["param_names"])
              for g in param_groups(model, lr=1e-3, weight_decay=0.1, hidden_lr_mult=0.5)}
    assert {"root.U", "root.V"} <= groups["hidden"] and "root.rho" in groups["input"]
    assert groups["output"] == {"classifier.weight"} and "classifier.bias" in groups["vector"]


def test_root_factors_follow_u_v_role_under_head_paradigm_1():
    roles = {name: role for name, _, role in named_roles(root_model(head_paradigm=1))}
    assert {roles[k] for k in ("ternary.U", "ternary.V", "root.U", "root.V")} == {Role.LOWRANK}
    assert roles["latent.B"] == Role.HIDDEN and roles["root.rho"] == Role.INPUT


def test_root_init_follows_s_and_u_v():
    config = PTConfig(**{**TINY, "hidden_size": 256, "num_channels": 16, "rank": 16, "base_hidden_size": 64})
    torch.manual_seed(0)
    model = PTForTokenClassification(config)
    sc = config.scales()
    assert model.root.rho.std().item() == pytest.approx(sc.init_input, rel=0.2)
    for name in ("U", "V"):
        assert getattr(model.root, name).std().item() == pytest.approx(sc.init_ternary, rel=0.05)
    assert model.classifier.weight.abs().max() == 0 and model.classifier.bias.abs().max() == 0


def test_ternary_norm_includes_the_root_bucket():
    model = root_model()
    T = torch.einsum("khar,khbr->khab", model.ternary.U, model.ternary.V).flatten(2).norm(dim=-1).sum()
    TR = torch.einsum("har,hbr->hab", model.root.U, model.root.V).flatten(1).norm(dim=-1).sum()
    torch.testing.assert_close(model.ternary_norm(), T + TR)


def test_config_validation_of_the_new_fields():
    with pytest.raises(ValueError, match="classifier_pooling"):
        PTConfig(classifier_pooling="max")
    with pytest.raises(ValueError, match="use_root"):
        PTConfig(use_root="yes")


# -- accounting --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [{}, {"use_position_unary": True, "use_latent_factor": False}])
def test_count_parameters_with_root_matches_the_built_model(fields):
    entry = architecture("pt")
    config = PTConfig(**{**TINY, **fields})
    counts = entry.count_parameters(config)
    assert counts["total"] == sum(p.numel() for p in PTForMaskedLM(config).parameters())
    without = entry.count_parameters(PTConfig(**{**TINY, **fields, "use_root": False}))
    assert counts["embedding"] - without["embedding"] == 8  # rho
    assert counts["non_embedding"] - without["non_embedding"] == 2 * 2 * 8 * 4  # U^R, V^R


@pytest.mark.parametrize("kernel", ["banded", "fast"])
@pytest.mark.parametrize(("iterations", "n"), [(1, 16), (3, 12)])
def test_training_flops_with_root_match_the_flop_counter(kernel, iterations, n):
    """As the MLM test of tests/test_sizing_budget.py: torch's counter sees every matmul of forward and
    backward; the formula additionally counts the banded near-bucket products (elementwise ops)."""
    entry = architecture("pt")
    config = PTConfig(vocab_size=50, hidden_size=32, num_channels=2, rank=8, latent_size=64,
                      num_iterations=iterations, use_root=True, mfvi_kernel=kernel)
    model = PTForMaskedLM(config)
    ids = torch.randint(5, 50, (3, n), generator=torch.Generator().manual_seed(0))
    labels = torch.full((3, n), -100)
    labels[:, ::4] = ids[:, ::4]  # a masked fraction of exactly 1/4
    with FlopCounterMode(display=False) as counter:
        model(ids, labels=labels, scored_logits_only=True).loss.backward()
    counted = counter.get_total_flops() / ids.numel()
    expected = entry.flops_per_token(config, n, 0.25)
    expected -= 6 * iterations * 6 * config.num_channels * config.rank * (config.max_distance - 1)
    assert counted == pytest.approx(expected, rel=1e-12)
    assert expected > entry.flops_per_token(PTConfig(**{**config.to_dict(), "use_root": False}), n, 0.25)


def test_activation_estimate_refuses_root():
    with pytest.raises(ValueError, match="use_root"):
        architecture("pt").activation_terms(PTConfig(**TINY), 16, Precision("fp32", "cpu"), 0.15)


# -- the coordinate check with ROOT --------------------------------------------------------------------
# As tests/test_experiments_coord_check.py's reduced PT check (base N0 = 32, widths from 2 N0, the
# synthetic corpus, 3 seeds: with 2 the init head logits sit at the 0.1 edge, with or without ROOT),
# with model.use_root = true; every iteration's ROOT label logits are tapped.
REDUCED_WIDTHS = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def root_reports(prepared_synthetic):
    batch = corpus_batch(prepared_synthetic, seq_len=64, batch_size=4, seed=0)

    def check(param: str, widths: tuple[int, ...], seeds: int):
        return run_coord_check("pt", param, widths, steps=3, seeds=seeds, batch=batch, base_width=32,
                               model_overrides={"use_root": True}, progress=False, num_threads=1, log=None)

    return {"mup": check("mup", REDUCED_WIDTHS, 3), "sp": check("sp", (64, 128, 256), 1)}


def test_root_state_is_tapped():
    config = PTConfig(**{**TINY, "num_iterations": 3})
    taps = activation_taps(PTForMaskedLM(config))
    assert {f"it{t}.root_labels" for t in range(3)} <= set(taps)
    assert not any("root" in label for label in activation_taps(PTForMaskedLM(PTConfig(**{**TINY,
                                                                                          "use_root": False}))))


def test_coord_check_with_root_passes_for_mup(root_reports):
    report = root_reports["mup"]
    activations = {r.activation for r in report.records}
    assert {f"it{t}.root_labels" for t in range(3)} <= activations
    assert report.passed, [(r.activation, round(r.worst_slope, 3), r.worst_step) for r in report.failing]


def test_coord_check_with_root_fails_for_sp(root_reports):
    rows = {r.activation: r for r in root_reports["sp"].slopes}
    assert not root_reports["sp"].passed
    assert rows["logits"].worst_slope > 0.5  # SP's read-out blows up with width after a few steps
    assert rows["it2.messages"].worst_slope > 0.2
    # ROOT's own label logits stay flat under SP too in these 3 steps: the MLM loss reaches ROOT only
    # through the words' messages, and alpha_in rho (an input, width-independent) dominates s_0.
