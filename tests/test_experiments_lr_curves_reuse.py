"""probformer.experiments.lr_curves: whole studies of the parametrizations a spec runs, read from one or more
``reference`` runs instead of trained (the identical run, every lr x seed of the grid finished there), and the
per-parametrization lr grids. Training is a stand-in (``fake_train``), as in test_experiments_lr_curves."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from probformer.cli import main
from probformer.config import ConfigError
from probformer.experiments import spec as specs
from probformer.experiments.lr_curves import (
    LrCurvesSpec,
    best_lrs,
    collect,
    load_lr_curves_spec,
    plan,
    plan_lines,
    reference_rows,
    rerender,
    run_lr_curves,
    trained_studies,
)

ROOT = Path(__file__).resolve().parents[1]
PT_BASE = {"arch": "pt", "hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2,
           "max_distance": 2}


def synthetic_loss(config) -> float:
    m = config.model
    width, lr = m["hidden_size"], config.optim.lr
    best = 2e-3 if m["parametrization"] == "mup" else 2e-3 * 16 / width
    return 3.0 - 0.1 * math.log2(width) + 0.2 * abs(math.log2(lr / best)) + 0.01 * config.seed


@pytest.fixture
def seen() -> list[tuple]:
    return []


@pytest.fixture
def fake_train(seen):
    def train(config, *, resume=False, on_eval=None, log=print):
        seen.append((config.model["parametrization"], config.model["hidden_size"], config.optim.lr, config.seed))
        return {"status": "completed", "valid_loss": synthetic_loss(config)}

    return train


@pytest.fixture
def make(tiny_data_section, tmp_path):
    train = {"model": dict(PT_BASE), "data": tiny_data_section, "steps": 4, "batch_size": 8, "eval_interval": 4,
             "eval_batches": 1, "tensorboard": False, "progress": False, "test_eval": False, "device": "cpu",
             "threads": 1}

    def spec(name: str, **values) -> LrCurvesSpec:
        values = {"widths": [16, 32], "lrs": [1e-3, 2e-3, 4e-3], "seeds": [0, 1], "train": train, **values}
        return LrCurvesSpec(out_dir=str(tmp_path / name), **values)

    return spec


def quiet(*_):
    pass


def sources(spec: LrCurvesSpec) -> dict[str, str | None]:
    return {s.name: s.source for s in plan(spec)}


def test_identical_complete_studies_are_read_from_the_reference(make, fake_train, seen):
    """A study whose identical run the reference finished at every lr x seed of this grid is read, not trained;
    only this grid's rows (lrs and seeds) enter; the rest trains; resumable, --report-only and --rerender."""
    base = make("base")
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    seen.clear()
    wider = make("wider", widths=[16, 32, 64], lrs=[1e-3, 2e-3], seeds=[0], reference=base.out_dir)
    assert sources(wider) == {"sp-n16": base.out_dir, "mup-n16": base.out_dir, "sp-n32": base.out_dir,
                              "mup-n32": base.out_dir, "sp-n64": None, "mup-n64": None}
    rows = run_lr_curves(wider, train_fn=fake_train, log=quiet)
    assert sorted(seen) == sorted((p, 64, lr, 0) for p in ("sp", "mup") for lr in (1e-3, 2e-3))  # only N = 64
    reused = [r for r in rows if r["width"] < 64]
    assert len(reused) == 2 * 2 * 2 * 1  # params x widths x this grid's lrs x this spec's seed
    assert {r["lr"] for r in reused} == {1e-3, 2e-3} and {r["seed"] for r in reused} == {0}
    assert all(r["run_dir"].startswith(f"{base.out_dir}/{r['parametrization']}-n{r['width']}/trials/")
               for r in reused)
    assert reference_rows(wider) == []  # no parametrization comes only from the reference
    best = {(b["parametrization"], b["width"]): b["best_lr"] for b in best_lrs(rows, wider)}
    assert best == {("sp", 16): 2e-3, ("sp", 32): 1e-3, ("sp", 64): 1e-3,
                    ("mup", 16): 2e-3, ("mup", 32): 2e-3, ("mup", 64): 2e-3}
    md = (Path(wider.out_dir) / "best_lr.md").read_text()
    assert (f"only this grid's runs enter): sp at N = 16, 32 from `{base.out_dir}`; mup at N = 16, 32 from "
            f"`{base.out_dir}`. Trained here: sp at N = 64; mup at N = 64.") in md
    assert "rows from the reference run" not in md  # that line is for parametrizations not run here
    # Resumable: nothing trains again; the table from what has finished and from results.csv is the same.
    seen.clear()
    assert run_lr_curves(wider, train_fn=fake_train, log=quiet) == rows and not seen
    assert collect(wider) == rows
    (Path(wider.out_dir) / "best_lr.md").unlink()
    rerender(wider)
    assert (Path(wider.out_dir) / "best_lr.md").read_text() == md
    # A second worker loads the spec itself: the same plan.
    assert sources(load_lr_curves_spec(Path(wider.out_dir) / "spec.yaml")) == sources(wider)


def test_a_study_the_reference_lacks_or_trained_differently_is_trained(make, fake_train, seen, tmp_path):
    base = make("base")
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    # One (lr, seed) missing from the reference's mup N = 32 study: that study trains, whole; a run that
    # diverged there is finished (sp N = 16 keeps being read).
    partial = tmp_path / "partial"
    shutil.copytree(base.out_dir, partial)
    with (partial / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    def key(r):
        return r["parametrization"], r["width"], float(r["lr"]), r["seed"]

    rows = [r for r in rows if key(r) != ("mup", "32", 2e-3, "1")]
    for r in rows:
        if key(r) == ("sp", "16", 4e-3, "0"):
            r.update(state="FAIL", valid_loss="", fail_reason="diverged: non-finite training loss (inf) at step 2")
    with (partial / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    again = make("again", reference=str(partial))
    assert sources(again) == {"sp-n16": str(partial), "mup-n16": str(partial), "sp-n32": str(partial),
                              "mup-n32": None}
    (study,) = trained_studies(again)
    assert study.why == f"{partial}: mup at N = 32 lacks lr 0.002 seed 1"
    seen.clear()
    rows = run_lr_curves(again, train_fn=fake_train, log=quiet)
    assert sorted(seen) == sorted(("mup", 32, lr, s) for lr in again.lrs for s in again.seeds)
    assert any(r["state"] == "FAIL" and r["width"] == 16 for r in rows)
    # Another model (muP with beta = 1): its muP studies train; its SP ones are the same runs (SP does not
    # read beta), so they are read. No error: the reference simply does not hold these muP runs.
    beta1 = make("beta1", train={**base.train, "model": {**PT_BASE, "hidden_exponent": 1.0}}, reference=base.out_dir)
    assert sources(beta1) == {"sp-n16": base.out_dir, "mup-n16": None, "sp-n32": base.out_dir, "mup-n32": None}
    assert "its mup model at N = 16 differs in hidden_exponent" in trained_studies(beta1)[0].why
    seen.clear()
    run_lr_curves(beta1, train_fn=fake_train, log=quiet)
    assert {(p, w) for p, w, _, _ in seen} == {("mup", 16), ("mup", 32)}
    # A grid point the reference never ran: trained.
    finer = make("finer", lrs=[1e-3, 2e-3, 4e-3, 8e-3], widths=[16], reference=base.out_dir)
    assert [s.name for s in trained_studies(finer)] == ["sp-n16", "mup-n16"]
    assert "lacks lr 0.008 seed 0, lr 0.008 seed 1" in trained_studies(finer)[0].why


def test_a_list_of_references_first_holder_wins(make, fake_train, seen):
    base = make("base")  # N = 16, 32
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    wide = make("wide", widths=[32, 64])
    run_lr_curves(wide, train_fn=fake_train, log=quiet)
    seen.clear()
    both = make("both", widths=[16, 32, 64, 128], reference=[base.out_dir, wide.out_dir])
    assert sources(both) == {"sp-n16": base.out_dir, "mup-n16": base.out_dir, "sp-n32": base.out_dir,
                             "mup-n32": base.out_dir, "sp-n64": wide.out_dir, "mup-n64": wide.out_dir,
                             "sp-n128": None, "mup-n128": None}
    rows = run_lr_curves(both, train_fn=fake_train, log=quiet)
    assert {(p, w) for p, w, _, _ in seen} == {("sp", 128), ("mup", 128)}
    assert len(rows) == 2 * 4 * 3 * 2
    assert {r["run_dir"].split("/trials/")[0] for r in rows if r["width"] == 64} == {
        f"{wide.out_dir}/sp-n64", f"{wide.out_dir}/mup-n64"}
    md = (Path(both.out_dir) / "best_lr.md").read_text()
    assert (f"sp at N = 16, 32 from `{base.out_dir}`; mup at N = 16, 32 from `{base.out_dir}`; sp at N = 64 from "
            f"`{wide.out_dir}`; mup at N = 64 from `{wide.out_dir}`. Trained here: sp at N = 128; mup at N = 128."
            ) in md
    swapped = make("swapped", widths=[16, 32, 64], reference=[wide.out_dir, base.out_dir])
    assert sources(swapped)["sp-n32"] == wide.out_dir and sources(swapped)["sp-n16"] == base.out_dir
    lines = plan_lines(swapped)
    assert lines[-1] == "to train: 0 runs in 0 studies; read from references: 36 runs in 6 studies"
    # Every reference is checked: one with other settings is an error, wherever it is in the list.
    with pytest.raises(ConfigError, match="reference: .* different train.steps"):
        make("bad", train={**base.train, "steps": 8}, reference=[base.out_dir, wide.out_dir])
    with pytest.raises(ConfigError, match="reference: expected .* distinct"):
        make("dup", reference=[base.out_dir, base.out_dir])


def test_parametrizations_not_run_come_from_the_first_reference_holding_them(make, fake_train, seen):
    """The old single-reference role, from a list: a muP variant judged against SP curves spread over two runs."""
    base = make("base")
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    wide = make("wide", widths=[64], parametrizations=["sp"])
    run_lr_curves(wide, train_fn=fake_train, log=quiet)
    variant_train = {**base.train, "model": {**PT_BASE, "hidden_exponent": 1.0}}
    variant = make("variant", widths=[16, 32, 64], parametrizations=["mup"], train=variant_train,
                   reference=[base.out_dir, wide.out_dir])
    assert {(r["width"], r["run_dir"].split("/sp-n")[0]) for r in reference_rows(variant)} == {
        (16, base.out_dir), (32, base.out_dir), (64, wide.out_dir)}
    seen.clear()
    run_lr_curves(variant, train_fn=fake_train, log=quiet)
    assert {p for p, *_ in seen} == {"mup"} and len(seen) == 3 * 3 * 2
    md = (Path(variant.out_dir) / "best_lr.md").read_text()
    assert f"sp rows from the reference run `{base.out_dir}` (same data" in md
    assert f"sp rows from the reference run `{wide.out_dir}` (same data" in md
    assert "Studies read from a reference" not in md


def test_per_parametrization_grids(make, fake_train, seen):
    base = make("base")
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    seen.clear()
    grids = make("grids", widths=[16, 32, 64], lrs={"sp": [5e-4, 1e-3, 2e-3, 4e-3], "mup": [1e-3, 2e-3, 4e-3]},
                 reference=base.out_dir)
    # SP's grid has a point the reference lacks: its studies train; muP's grid is the reference's: read.
    assert sources(grids) == {"sp-n16": None, "mup-n16": base.out_dir, "sp-n32": None, "mup-n32": base.out_dir,
                              "sp-n64": None, "mup-n64": None}
    rows = run_lr_curves(grids, train_fn=fake_train, log=quiet)
    assert {lr for p, _, lr, _ in seen if p == "sp"} == {5e-4, 1e-3, 2e-3, 4e-3}
    assert {lr for p, _, lr, _ in seen if p == "mup"} == {1e-3, 2e-3, 4e-3}
    table = {(b["parametrization"], b["width"]): b for b in best_lrs(rows, grids)}
    assert table[("sp", 64)]["best_lr"] == 5e-4 and table[("sp", 64)]["at_grid_edge"]
    assert table[("sp", 32)]["grid_index"] == 1 and not table[("sp", 32)]["at_grid_edge"]
    md = (Path(grids.out_dir) / "best_lr.md").read_text()
    assert "lr grid sp 0.0005, 0.001, 0.002, 0.004; mup 0.001, 0.002, 0.004; loss" in md
    with pytest.raises(ConfigError, match="lrs: a grid per parametrization"):
        make("missing", lrs={"sp": [1e-3]})
    with pytest.raises(ConfigError, match="lrs.mup: learning rates must be > 0"):
        make("zero", lrs={"sp": [1e-3], "mup": [0.0]})


def test_dry_run_prints_the_plan_and_trains_nothing(make, fake_train, tmp_path, capsys):
    base = make("base")
    run_lr_curves(base, train_fn=fake_train, log=quiet)
    wider = make("wider", widths=[16, 32, 64], reference=[base.out_dir])
    path = specs.write_spec(wider, tmp_path / "wider.yaml")
    assert main(["lr-curves", "--config", str(path), "--dry-run"]) == 0
    out = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert f"sp-n16 6 reused from {base.out_dir}" in out
    assert f"mup-n64 6 train ({base.out_dir}: no mup rows at N = 64)" in out
    assert "to train: 12 runs in 2 studies; read from references: 24 runs in 4 studies" in out
    assert not Path(wider.out_dir).exists()



def test_issue25_presets_train_only_what_the_committed_results_lack(monkeypatch):
    """The 8x-width preset reads every N <= 256 study from the committed pt-cpu (SP) and pt-cpu-n64 (muP) and
    trains N = 512 only; the T = 2 depth preset trains nothing."""
    monkeypatch.chdir(ROOT)
    wide = load_lr_curves_spec(preset="lr-curves-pt-n64-8x-cpu")
    assert wide.train["precision"] == "fp32" and wide.base_width == 64
    assert sources(wide) == {"sp-n64": "results/lr_curves/pt-cpu", "mup-n64": "results/lr_curves/pt-cpu-n64",
                             "sp-n128": "results/lr_curves/pt-cpu", "mup-n128": "results/lr_curves/pt-cpu-n64",
                             "sp-n256": "results/lr_curves/pt-cpu", "mup-n256": "results/lr_curves/pt-cpu-n64",
                             "sp-n512": None, "mup-n512": None}
    assert sum(s.runs for s in trained_studies(wide)) == 20
    tokens = load_lr_curves_spec(preset="lr-curves-pt-n64-4x-tokens-cpu")
    assert tokens.train["token_budget"] == 4 * wide.train["token_budget"] and tokens.lrs == wide.lrs
    assert sum(s.runs for s in trained_studies(tokens)) == 60
    t2 = load_lr_curves_spec(preset="lr-curves-pt-n64-depth-t2-cpu")
    assert not trained_studies(t2) and t2.widths == [64, 256]
    for t in (3, 5, 8):
        deeper = load_lr_curves_spec(preset=f"lr-curves-pt-n64-depth-t{t}-cpu")
        assert deeper.train["model"]["num_iterations"] == t and deeper.parametrizations == ["mup"]
        assert {**deeper.train, "model": {**deeper.train["model"], "num_iterations": 2}} == t2.train
        assert sum(s.runs for s in trained_studies(deeper)) == 20
