"""probformer.experiments.lr_curves (``probformer lr-curves``): the studies it plans, what it collects, the
verdicts and outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

from probformer.config import ConfigError
from probformer.experiments.lr_curves import (
    LrCurvesSpec,
    best_lrs,
    load_lr_curves_spec,
    lr_curves_preset_names,
    optimum,
    reference_rows,
    resolution_line,
    run_lr_curves,
)

PT_BASE = {"arch": "pt", "hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2,
           "max_distance": 2}


@pytest.fixture
def spec(tiny_data_section, tmp_path) -> LrCurvesSpec:
    train = {"model": dict(PT_BASE), "data": tiny_data_section, "steps": 4, "batch_size": 8, "eval_interval": 4,
             "eval_batches": 1, "tensorboard": False, "progress": False, "test_eval": False, "device": "cpu",
             "threads": 1}
    return LrCurvesSpec(widths=[16, 32], lrs=[1e-3, 2e-3, 4e-3], seeds=[0, 1], train=train,
                        out_dir=str(tmp_path / "lrc"))


def synthetic_loss(config) -> float:
    """A stand-in loss surface: muP's optimum at lr 2e-3 at every width, SP's moving with width, wider better."""
    m = config.model
    width, lr = m["hidden_size"], config.optim.lr
    best = 2e-3 if m["parametrization"] == "mup" else 2e-3 * 16 / width
    return 3.0 - 0.1 * math.log2(width) + 0.2 * abs(math.log2(lr / best)) + 0.01 * config.seed


def test_runs_every_width_param_lr_seed_and_finds_the_optima(spec):
    seen = []

    def fake_train(config, *, resume=False, on_eval=None, log=print):
        seen.append((config.model["parametrization"], config.model["hidden_size"], config.optim.lr, config.seed))
        if config.model["parametrization"] == "sp" and config.optim.lr == 4e-3 and config.model["hidden_size"] == 32:
            return {"status": "diverged", "reason": "non-finite training loss (inf) at step 2"}
        return {"status": "completed", "valid_loss": synthetic_loss(config)}

    rows = run_lr_curves(spec, train_fn=fake_train, log=lambda *_: None)
    assert len(seen) == len(set(seen)) == 2 * 2 * 3 * 2
    # Each width is built with with_width from the base: muP multipliers relative to N0 = 16.
    assert {w for _, w, _, _ in seen} == {16, 32}
    best = {(b["parametrization"], b["width"]): b["best_lr"] for b in best_lrs(rows, spec)}
    assert best == {("mup", 16): 2e-3, ("mup", 32): 2e-3, ("sp", 16): 2e-3, ("sp", 32): 1e-3}
    md = (Path(spec.out_dir) / "best_lr.md").read_text()
    assert "**mup**: best lr moves over 0 grid step(s)" in md and "wider is better at the best lr: yes" in md
    # neighbours 0.2 above, seeds 0.01 apart: every optimum stands out of the seed noise
    assert md.count("every optimum is resolved: the runner-up lr is worse beyond seed noise at each width.") == 2
    assert any(r["state"] == "FAIL" and "diverged" in r["fail_reason"] for r in rows)
    assert (Path(spec.out_dir) / "lr_curves.png").stat().st_size > 10_000
    # Resumable: a second call trains nothing.
    before = len(seen)
    run_lr_curves(spec, train_fn=fake_train, log=lambda *_: None)
    assert len(seen) == before


def point(lr: float, mean: float, std: float = 0.01, seeds: int = 2) -> dict:
    return {"lr": lr, "mean": mean, "std": std, "seeds": seeds, "diverged": not math.isfinite(mean)}


def test_an_optimum_within_seed_noise_of_its_runner_up_is_not_resolved():
    # 0.02 beats 0.04 by 0.005 with seed std 0.01 (noise of the difference 0.01): not resolved
    grid = [0.01, 0.02, 0.04, 0.08]
    loose = optimum([point(0.01, 5.8), point(0.02, 5.700), point(0.04, 5.705), point(0.08, math.inf)], grid)
    assert loose["best_lr"] == 0.02 and loose["runner_up_lr"] == 0.04 and not loose["resolved"]
    assert loose["runner_up_delta"] == pytest.approx(0.005) and loose["noise"] == pytest.approx(0.01)
    assert not loose["at_grid_edge"]
    sharp = optimum([point(0.01, 5.8), point(0.02, 5.7)], grid)
    assert sharp["resolved"] and sharp["runner_up_delta"] == pytest.approx(0.1)
    assert optimum([point(0.02, math.inf)], grid) is None  # every lr diverged
    line = resolution_line([("N = 64", sharp), ("N = 128", loose)], "width")
    assert line == ("  - optimum not resolved from the runner-up lr (within seed noise, the rule's 2x) at N = 128 "
                    "(runner-up 0.04: +0.0050, 0.50x its noise 0.0100): known to about one step there.")
    assert "N = 64" not in line
    one = optimum([point(0.01, 5.7)], grid)
    assert one["at_grid_edge"]
    assert "N = 64 (one lr only)" in resolution_line([("N = 64", one)], "width")


def test_spec_errors(spec, tmp_path):
    with pytest.raises(ConfigError, match="parametrizations"):
        LrCurvesSpec(widths=[16], lrs=[1e-3], train=spec.train, parametrizations=["ntk"])
    with pytest.raises(ConfigError, match="lrs"):
        LrCurvesSpec(widths=[16], lrs=[0.0], train=spec.train)
    with pytest.raises(ConfigError, match="train.seed"):
        LrCurvesSpec(widths=[16], lrs=[1e-3], train={**spec.train, "seed": 3})
    path = tmp_path / "bad.yaml"
    path.write_text("widths: [16]\nlrs: [1.0e-3]\ntrain: {model: {arch: pt}}\nwidthz: [32]\n")
    with pytest.raises(ConfigError, match="widthz: unknown lr-curves key"):
        load_lr_curves_spec(path)


def test_bundled_preset_loads():
    assert "lr-curves-pt-cpu" in lr_curves_preset_names()
    spec = load_lr_curves_spec(preset="lr-curves-pt-cpu")
    assert spec.widths[0] == spec.base_width and spec.widths[-1] >= 8 * spec.widths[0]
    assert len(spec.seeds) >= 2 and spec.parametrizations == ["sp", "mup"]


def test_n64_preset_reuses_the_committed_sp_curves(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # its reference is the committed results/lr_curves/pt-cpu
    spec = load_lr_curves_spec(preset="lr-curves-pt-n64-cpu")
    assert spec.base_width == spec.widths[0] == 64 and spec.parametrizations == ["mup"]
    sp = reference_rows(spec)
    assert {r["parametrization"] for r in sp} == {"sp"} and {64, 128, 256} <= {r["width"] for r in sp}


def test_a_mup_variant_is_judged_against_the_reference_sp_curves(spec, tmp_path):
    """``reference``: a muP variant reuses a finished run's SP curves (no SP run is repeated); an incomparable
    or missing reference is a ConfigError before anything trains."""
    def fake_train(config, *, resume=False, on_eval=None, log=print):
        seen.append((config.model["parametrization"], config.model["hidden_exponent"], config.model["hidden_size"]))
        penalty = 0.5 if config.model["hidden_exponent"] == 1.0 else 0.0  # the variant is worse by 0.5
        return {"status": "completed", "valid_loss": synthetic_loss(config) + penalty}

    seen: list[tuple] = []
    run_lr_curves(spec, train_fn=fake_train, log=lambda *_: None)
    model = {**spec.train["model"], "hidden_exponent": 1.0}
    variant = LrCurvesSpec(widths=spec.widths, lrs=spec.lrs, seeds=spec.seeds, parametrizations=["mup"],
                           train={**spec.train, "model": model, "threads": 2}, out_dir=str(tmp_path / "beta1"),
                           reference=spec.out_dir)
    seen.clear()
    rows = run_lr_curves(variant, train_fn=fake_train, log=lambda *_: None)
    assert {s[:2] for s in seen} == {("mup", 1.0)} and len(seen) == 2 * 3 * 2  # only the variant trained
    sp_rows = [r for r in rows if r["parametrization"] == "sp"]
    assert len(sp_rows) == 2 * 3 * 2 and all(r["run_dir"].startswith(spec.out_dir) for r in sp_rows)
    best = {(b["parametrization"], b["width"]): b["loss"] for b in best_lrs(rows, variant)}
    assert best[("mup", 32)] == pytest.approx(best[("sp", 32)] + 0.5)  # both at their optimum; variant +0.5
    md = (Path(variant.out_dir) / "best_lr.md").read_text()
    assert f"sp rows from the reference run `{spec.out_dir}`" in md and "hidden_exponent = 1.0 (reference 0.5)" in md
    assert "muP at the lr tuned at N0 = 16" in md and "| sp best lr | sp loss | mup best lr |" in md
    assert "(lr grid" not in md  # the reused SP rows ran this spec's grid

    # A narrower grid for the variant: the reused SP curves keep their own grid (SP's best at N = 32, 1e-3,
    # is not on the variant's grid).
    narrow = LrCurvesSpec(widths=spec.widths, lrs=[2e-3, 4e-3], seeds=spec.seeds, parametrizations=["mup"],
                          train=variant.train, out_dir=str(tmp_path / "narrow"), reference=spec.out_dir)
    table = {(b["parametrization"], b["width"]): b
             for b in best_lrs(run_lr_curves(narrow, train_fn=fake_train, log=lambda *_: None), narrow)}
    assert table[("sp", 32)]["best_lr"] == 1e-3 and table[("sp", 32)]["at_grid_edge"]
    assert table[("mup", 32)]["best_lr"] == 2e-3 and table[("mup", 32)]["at_grid_edge"]
    assert "(lr grid 0.001, 0.002, 0.004)" in (Path(narrow.out_dir) / "best_lr.md").read_text()
    # The same with a per-parametrization grid, which names only what runs here: SP's reused grid is named.
    narrow_dict = LrCurvesSpec(widths=spec.widths, lrs={"mup": [2e-3, 4e-3]}, seeds=spec.seeds,
                               parametrizations=["mup"], train=variant.train, out_dir=str(tmp_path / "narrow-dict"),
                               reference=spec.out_dir)
    run_lr_curves(narrow_dict, train_fn=fake_train, log=lambda *_: None)
    md = (Path(narrow_dict.out_dir) / "best_lr.md").read_text()
    assert "lr grid mup 0.002, 0.004; loss" in md
    assert "sp (lr grid 0.001, 0.002, 0.004) rows from the reference run" in md
    with pytest.raises(ConfigError, match="lrs: a grid per parametrization"):  # SP is the reference's here
        LrCurvesSpec(widths=spec.widths, lrs={"sp": [1e-3], "mup": [2e-3, 4e-3]}, parametrizations=["mup"],
                     train=variant.train, out_dir=str(tmp_path / "extra"), reference=spec.out_dir)
    # Another base width: SP at a shared width is the same model whatever N0 is, so the SP curves are reused.
    rebased = LrCurvesSpec(widths=[32], lrs=spec.lrs, parametrizations=["mup"], out_dir=str(tmp_path / "n0"),
                           train={**spec.train, "model": {**spec.train["model"], "hidden_size": 32, "num_channels": 4,
                                                          "latent_size": 64}}, reference=spec.out_dir)
    assert {r["width"] for r in reference_rows(rebased)} == {16, 32}
    with pytest.raises(ConfigError, match="reference: its sp model at width 32 differs .* rank"):
        LrCurvesSpec(widths=[32], lrs=spec.lrs, parametrizations=["mup"], reference=spec.out_dir,
                     train={**spec.train, "model": {**spec.train["model"], "rank": 4}})
    ref_yaml = Path(spec.out_dir) / "spec.yaml"  # the widths checked are the reused rows' own
    without_widths = {k: v for k, v in yaml.safe_load(ref_yaml.read_text()).items() if k != "widths"}
    ref_yaml.write_text(yaml.safe_dump(without_widths))
    with pytest.raises(ConfigError, match="reference: its sp model at width 32 differs .* rank"):
        LrCurvesSpec(widths=[32], lrs=spec.lrs, parametrizations=["mup"], reference=spec.out_dir,
                     train={**spec.train, "model": {**spec.train["model"], "rank": 4}})
    with pytest.raises(ConfigError, match="reference: .* different train.steps"):
        LrCurvesSpec(widths=spec.widths, lrs=spec.lrs, parametrizations=["mup"], train={**spec.train, "steps": 8},
                     reference=spec.out_dir)
    with pytest.raises(ConfigError, match="reference: .*results.csv not found"):
        LrCurvesSpec(widths=spec.widths, lrs=spec.lrs, parametrizations=["mup"], train=spec.train,
                     reference=str(tmp_path / "nowhere"))
