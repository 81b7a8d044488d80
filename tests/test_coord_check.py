"""Coordinate check (design note 7): slopes, verdict, outputs, and PT muP vs SP on a reduced check."""

from __future__ import annotations

import argparse
import csv
import math

import pytest

from probformer.coord_check import (
    CoordCheckReport,
    CoordRecord,
    activation_taps,
    add_parser,
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


def test_cli_parser_and_overrides(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["coord-check", "--arch", "bert", "--param", "sp", "--widths", "32,64", "--steps", "1",
                              "--seeds", "1", "--out", str(tmp_path), "--set", "model.num_layers=1", "--no-progress"])
    seen = {}

    def fake(arch, param, widths, steps, seeds, lr, overrides, **kw):
        seen.update(arch=arch, param=param, widths=widths, steps=steps, overrides=overrides, out=kw["out_dir"])

    monkeypatch.setattr("probformer.coord_check.run_coord_check", fake)
    assert args.func(args) == 0
    assert seen == dict(arch="bert", param="sp", widths=[32, 64], steps=1, overrides={"num_layers": 1},
                        out=tmp_path / "bert-sp")
    from probformer.config import ConfigError

    bad = parser.parse_args(["coord-check", "--set", "model.no_such_field=1"])
    with pytest.raises(ConfigError, match="no_such_field"):
        bad.func(bad)


# -- the measurement itself: PT muP vs SP on a reduced check --------------------------------------
@pytest.fixture(scope="module")
def text_batch(prepared_synthetic):
    return corpus_batch(prepared_synthetic, seq_len=32, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def pt_reports(text_batch):
    return {param: run_coord_check("pt", param, WIDTHS, steps=4, seeds=2, lr=1e-2, batch=text_batch,
                                   progress=False, num_threads=1, log=None)
            for param in ("mup", "sp")}


def test_records_cover_every_seed_width_step_and_tap(pt_reports, text_batch):
    report = pt_reports["mup"]
    keys = {(r.seed, r.width, r.step, r.activation) for r in report.records}
    assert len(keys) == len(report.records) == 2 * len(WIDTHS) * 5 * 16
    init_logits = [r.mean_abs for r in report.records if r.step == 0 and r.activation == "logits"]
    assert init_logits == [0.0] * len(init_logits)  # zero-initialised read-out (and bias)


def test_pt_sp_is_not_flat(pt_reports):
    rows = {r.activation: r for r in pt_reports["sp"].slopes}
    assert not pt_reports["sp"].passed
    assert rows["logits"].worst_slope > 0.5  # SP's read-out blows up with width after a few steps
    assert all(rows[f"it{t}.messages"].worst_slope > 0.2 for t in range(3))


def test_pt_mup_is_flat_except_head_logits(pt_reports):
    rows = {r.activation: r for r in pt_reports["mup"].slopes}
    others = [r for name, r in rows.items() if not name.endswith("head_logits")]
    assert all(r.passed for r in others), [(r.activation, r.worst_slope, r.worst_step) for r in others if not r.passed]


@pytest.mark.xfail(strict=True, reason="PT muP head logits shrink with width over the first steps "
                                       "(it1/it2 slope -0.16 at t=4 on this batch, widths 32-256), driven by the 2-channel N0=32 "
                                       "model; see results/coord_check/pt-mup")
def test_pt_mup_passes(pt_reports):
    report = pt_reports["mup"]
    assert report.passed, [(r.activation, round(r.worst_slope, 3), r.worst_step) for r in report.failing]


def test_a_run_that_stopped_early_is_not_flat():
    recs = _records(lambda s, w, t: 1.0, name="a")
    recs = [r for r in recs if not (r.seed == 1 and r.width == 256 and r.step == 2)]  # diverged before t=2
    row = compute_slopes(recs)[0]
    assert row.slopes[0] == pytest.approx(0.0, abs=1e-12) and math.isinf(row.slopes[2]) and not row.passed


@pytest.mark.parametrize("arch", ["bert", "ut"])
def test_transformer_baselines_run(arch, text_batch):
    recs = coord_check(arch, "mup", [32, 64], steps=1, seeds=1, batch=text_batch, progress=False, num_threads=1)
    names = {r.activation for r in recs}
    prefix = "layer" if arch == "bert" else "step"
    assert {"embeddings", "logits", f"{prefix}0.attention_logits", f"{prefix}1.layer_output"} <= names
    zero_query = [r.mean_abs for r in recs if r.step == 0 and r.activation.endswith("attention_logits")]
    assert zero_query == [0.0] * len(zero_query)  # muP zero-initialises the query projection
