"""probformer.experiments.coord_check, the coordinate check (design note 7): slopes, verdict, outputs, and PT
muP vs SP on a reduced check."""

from __future__ import annotations

import csv
import math

import pytest

from probformer.cli import main
from probformer.experiments.coord_check import (
    CoordCheckReport,
    CoordRecord,
    activation_taps,
    compute_slopes,
    coord_check,
    corpus_batch,
    loglog_slope,
    plot_steps,
    run_coord_check,
    width_configs,
    write_outputs,
)
from probformer.models import model_classes

WIDTHS = (32, 64, 128, 256)


# -- slopes of synthetic series -----------------------------------------------------------------
def test_loglog_slope_of_known_power_laws():
    widths = [32, 64, 128, 256, 512]
    assert loglog_slope(widths, [3.0 * w**0.5 for w in widths]) == pytest.approx(0.5)
    assert loglog_slope(widths, [7.0 / w for w in widths]) == pytest.approx(-1.0)
    assert loglog_slope(widths, [0.2] * 5) == pytest.approx(0.0, abs=1e-12)
    assert loglog_slope(widths, [0.0] * 5) == 0.0  # exactly zero everywhere (zero-init read-out): flat
    assert math.isinf(loglog_slope(widths, [0.0, 1.0, 1.0, 1.0, 1.0]))  # vanishing at some widths only


def _records(fn, seeds=(0, 1), steps=(0, 1, 2), widths=WIDTHS, name="x"):
    return [CoordRecord(s, w, t, name, fn(s, w, t)) for s in seeds for w in widths for t in steps]


def test_compute_slopes_averages_seeds_then_fits_and_reports_the_worst_step():
    # seed-dependent prefactor, slope 0 at t=0, 0.05 at t=1 and 0.3 at t=2
    exps = {0: 0.0, 1: 0.05, 2: 0.3}
    recs = _records(lambda s, w, t: (1 + s) * w ** exps[t], name="grows")
    recs += _records(lambda s, w, t: 0.0 if t == 0 else 2.0 + s, name="zero_then_flat")
    recs += _records(lambda s, w, t: (1 + s) * w ** (-0.04 * t), name="slightly_shrinks")
    rows = {r.activation: r for r in compute_slopes(recs, tol=0.1)}
    grows = rows["grows"]
    assert [grows.slopes[t] for t in (0, 1, 2)] == pytest.approx([0.0, 0.05, 0.3], abs=1e-9)
    assert grows.worst_step == 2 and grows.worst_slope == pytest.approx(0.3) and not grows.passed
    assert rows["zero_then_flat"].passed and rows["zero_then_flat"].slopes[0] == 0.0
    shrinks = rows["slightly_shrinks"]
    assert shrinks.passed and shrinks.worst_step == 2 and shrinks.worst_slope == pytest.approx(-0.08)
    assert not compute_slopes(recs, tol=0.15)[0].passed and compute_slopes(recs, tol=0.31)[0].passed


def test_plot_steps_include_first_and_last():
    assert plot_steps(4) == [0, 1, 2, 3, 4]
    picked = plot_steps(10)
    assert picked[0] == 0 and picked[-1] == 10 and 4 <= len(picked) <= 6


def test_outputs_are_written(tmp_path):
    recs = _records(lambda s, w, t: 0.5 * w ** (0.2 * t), name="a") + _records(lambda s, w, t: 1.0, name="b")
    report = CoordCheckReport("pt", "mup", list(WIDTHS), 2, 2, 1e-2, 0.1, recs, compute_slopes(recs))
    files = write_outputs(report, tmp_path / "out")
    with files["records"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(recs) and set(rows[0]) == {"seed", "width", "step", "activation", "mean_abs"}
    with files["slopes"].open() as fh:
        slopes = {r["activation"]: r for r in csv.DictReader(fh)}
    assert slopes["a"]["passed"] == "False" and float(slopes["a"]["worst_slope"]) == pytest.approx(0.4, abs=1e-3)
    assert slopes["b"]["passed"] == "True"
    assert "**Overall: FAIL**" in files["table"].read_text()
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["plot"].stat().st_size > 10_000


# -- taps and configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["pt", "bert", "ut"])
def test_every_tap_is_named_distinctly(arch):
    cfg = width_configs(arch, "mup", [32, 64], None, 128, 16)[64]
    taps = activation_taps(model_classes(arch)[1](cfg))
    layers = cfg.num_iterations if arch == "pt" else cfg.num_layers
    per_layer = 5 if arch == "pt" else 4
    assert len(taps) == layers * per_layer + (1 if arch == "pt" else 2) and "logits" in taps
    assert len(set(map(id, taps.values()))) == len(taps)


def test_width_configs_scale_from_the_first_width():
    cfgs = width_configs("pt", "mup", [32, 128], {"hidden_exponent": 1.0}, 128, 16)
    assert cfgs[32].resolved_base == cfgs[128].resolved_base == (32, 16, 64)
    assert cfgs[128].num_channels == 8 and cfgs[128].latent_size == 256 and cfgs[128].hidden_exponent == 1.0
    assert cfgs[128].head_dropout == 0.0 and cfgs[128].label_dropout == 0.0
    # the base width can sit outside the measured widths (the default: N0 = 32, widths 64..1024)
    apart = width_configs("bert", "mup", [64, 256], None, 128, 16, base_width=32)
    assert set(apart) == {64, 256} and apart[256].resolved_base == (32, 16) and apart[256].num_heads == 16
    assert apart[64].init_std == pytest.approx(0.02 * math.sqrt(768 / 32))  # HF BERT-base's init at N = 768


def test_cli_parser_and_overrides(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(arch, param, widths, steps, seeds, lr, overrides, **kw):
        seen.update(arch=arch, param=param, widths=widths, steps=steps, lr=lr, overrides=overrides, out=kw["out_dir"],
                    base=kw["base_width"])

    monkeypatch.setattr("probformer.experiments.coord_check.run_coord_check", fake)
    assert main(["coord-check", "--arch", "bert", "--param", "sp", "--widths", "32,64", "--steps", "1", "--seeds", "1",
                 "--out", str(tmp_path), "--set", "model.num_layers=1", "--no-progress"]) == 0
    assert seen == dict(arch="bert", param="sp", widths=[32, 64], steps=1, lr=None, overrides={"num_layers": 1},
                        out=tmp_path / "bert-sp", base=32)  # lr None: the architecture's default
    assert main(["coord-check", "--set", "model.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err


# -- the measurement itself: muP passes and SP does not, on reduced checks ------------------------
# Reduced versions of the default check (base width N0 = 32, widths from 2 N0; experiments/coord_check.py's
# DEFAULT_* comment says why): fewer widths, steps and seeds, the synthetic corpus (seq 64). PT-muP's
# worst slope here is ~0.075 (iteration head logits at init, a finite-size effect that fades with N),
# BERT-muP's ~0.06-0.08; SP is off by +0.5..+1.9.
REDUCED_WIDTHS = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def text_batch(prepared_synthetic):
    return corpus_batch(prepared_synthetic, seq_len=64, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def small_text_batch(prepared_synthetic):
    return corpus_batch(prepared_synthetic, seq_len=64, batch_size=4, seed=0)


def _check(arch, param, batch, widths=REDUCED_WIDTHS, steps=3, seeds=3, lr=None):
    return run_coord_check(arch, param, widths, steps=steps, seeds=seeds, lr=lr, batch=batch, base_width=32,
                           progress=False, num_threads=1, log=None)


def _failing(report):
    return [(r.activation, round(r.worst_slope, 3), r.worst_step) for r in report.failing]


@pytest.fixture(scope="module")
def pt_reports(small_text_batch):
    return {"mup": _check("pt", "mup", small_text_batch),
            "sp": _check("pt", "sp", small_text_batch, widths=(64, 128, 256), seeds=1)}


def test_records_cover_every_seed_width_step_and_tap(pt_reports):
    report = pt_reports["mup"]
    keys = {(r.seed, r.width, r.step, r.activation) for r in report.records}
    assert len(keys) == len(report.records) == 3 * len(REDUCED_WIDTHS) * 4 * 16
    init_logits = [r.mean_abs for r in report.records if r.step == 0 and r.activation == "logits"]
    assert init_logits == [0.0] * len(init_logits)  # zero-initialised read-out (and bias)
    assert report.base_width == 32 and report.lr == 1e-2  # PT's default coord-check lr


def test_pt_mup_passes(pt_reports):
    report = pt_reports["mup"]
    assert report.passed, _failing(report)


def test_pt_sp_is_not_flat(pt_reports):
    rows = {r.activation: r for r in pt_reports["sp"].slopes}
    assert not pt_reports["sp"].passed
    assert rows["logits"].worst_slope > 0.5  # SP's read-out blows up with width after a few steps
    assert all(rows[f"it{t}.messages"].worst_slope > 0.2 for t in range(3))


@pytest.fixture(scope="module")
def bert_reports(text_batch):
    return {"mup": _check("bert", "mup", text_batch, steps=6, seeds=2),
            "sp": _check("bert", "sp", text_batch, widths=(64, 128, 256), steps=3, seeds=1)}


def test_bert_mup_passes(bert_reports):
    report = bert_reports["mup"]
    assert report.lr == 3e-3  # BERT's default coord-check lr (coord_check.DEFAULT_LRS)
    assert report.passed, _failing(report)
    zero_query = [r.mean_abs for r in report.records if r.step == 0 and r.activation.endswith("attention_logits")]
    assert zero_query == [0.0] * len(zero_query)  # muP zero-initialises the query projection


def test_bert_sp_is_not_flat(bert_reports):
    rows = {r.activation: r for r in bert_reports["sp"].slopes}
    assert not bert_reports["sp"].passed
    assert all(rows[f"layer{i}.attention_output"].worst_slope > 0.5 for i in range(2))
    assert rows["logits"].worst_slope > 0.3


def test_muP_eps_rule_in_the_optimizer():
    """The Adam eps of every group follows the gradient scale under muP (parametrization module doc):
    N0/N for BERT, (N0/N)^(1+beta) for PT's stored hidden weights; 1 under SP and at N0."""
    from probformer.parametrization import build_optimizer

    for arch, hidden_exp in (("bert", 1.0), ("pt", 1.5)):
        for param in ("sp", "mup"):
            cfgs = width_configs(arch, param, [32, 128], None, 128, 16)
            for width, cfg in cfgs.items():
                sc = cfg.scales()
                opt = build_optimizer(model_classes(arch)[1](cfg), lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98),
                                      eps=1e-8, hidden_lr_mult=sc.hidden_lr_mult, eps_mult=sc.eps_mult,
                                      hidden_eps_mult=sc.hidden_eps_mult)
                ratio = 32 / width if param == "mup" else 1.0
                for group in opt.param_groups:
                    exp = hidden_exp if group["role"] == "hidden" else 1.0
                    assert group["eps"] == pytest.approx(1e-8 * ratio**exp), (arch, param, width, group["role"])


def test_a_run_that_stopped_early_is_not_flat():
    recs = _records(lambda s, w, t: 1.0, name="a")
    recs = [r for r in recs if not (r.seed == 1 and r.width == 256 and r.step == 2)]  # diverged before t=2
    row = compute_slopes(recs)[0]
    assert row.slopes[0] == pytest.approx(0.0, abs=1e-12) and math.isinf(row.slopes[2]) and not row.passed


@pytest.mark.parametrize("arch", ["bert", "ut"])
def test_transformer_baselines_run(arch, small_text_batch):
    recs = coord_check(arch, "mup", [32, 64], steps=1, seeds=1, batch=small_text_batch, progress=False, num_threads=1)
    names = {r.activation for r in recs}
    prefix = "layer" if arch == "bert" else "step"
    assert {"embeddings", "logits", f"{prefix}0.attention_logits", f"{prefix}1.layer_output"} <= names
    zero_query = [r.mean_abs for r in recs if r.step == 0 and r.activation.endswith("attention_logits")]
    assert zero_query == [0.0] * len(zero_query)  # muP zero-initialises the query projection


def test_pt_paradigm1_check_runs_end_to_end(small_text_batch, tmp_path, monkeypatch):
    """Head paradigm 1 (design note 5) through `--set model.head_paradigm=1`: every width keeps the base's
    channels and rank, and the grown head temperature shows at init (e is Theta(1) at fixed r, divided
    by N/N0)."""
    seen = {}
    monkeypatch.setattr("probformer.experiments.coord_check.run_coord_check",
                        lambda *args, **kw: seen.update(overrides=args[6], out=kw["out_dir"]))
    assert main(["coord-check", "--set", "model.head_paradigm=1", "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen == dict(overrides={"head_paradigm": 1}, out=tmp_path / "pt-mup")
    monkeypatch.undo()
    cfgs = width_configs("pt", "mup", [64, 256], seen["overrides"], 128, 16, base_width=32)
    assert {(c.num_channels, c.rank, c.resolved_base) for c in cfgs.values()} == {(2, 16, (32, 16, 64))}
    report = run_coord_check("pt", "mup", (64, 128, 256), steps=2, seeds=1, model_overrides=seen["overrides"],
                             batch=small_text_batch, base_width=32, out_dir=tmp_path / "p1", progress=False,
                             num_threads=1, log=None)
    assert report.overrides == {"head_paradigm": 1}
    assert "Base-model overrides: head_paradigm=1." in (tmp_path / "p1" / "slopes.md").read_text()
    rows = {r.activation: r for r in report.slopes}
    assert all(rows[f"it{t}.head_logits"].slopes[0] < -0.7 for t in range(3)), rows["it0.head_logits"].slopes
    assert rows["it0.q"].passed and rows["it0.latent"].passed
