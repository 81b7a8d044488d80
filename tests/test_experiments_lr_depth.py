"""probformer.experiments.lr_depth (``probformer lr-depth``): the best lr across MFVI iterations T, from hand-made
per-T lr-curves results (spec.yaml + results.csv), with the seed-noise rule and the factor-2-step verdict."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from probformer.cli import main
from probformer.config import ConfigError
from probformer.experiments.lr_curves import COLUMNS
from probformer.experiments.lr_depth import depth_table, read_runs, steps, write_depth_report
from probformer.experiments.reports import write_csv

ROOT = Path(__file__).resolve().parents[1]
WIDE = [5e-3, 1e-2, 2e-2, 4e-2, 8e-2]
NARROW = [1e-2, 2e-2, 4e-2, 8e-2]  # T = 2: the grid of the committed study it reuses
BEST = {(2, 64): 2e-2, (3, 64): 2e-2, (5, 64): 1e-2, (8, 64): 1e-2,
        (2, 256): 2e-2, (3, 256): 1e-2, (5, 256): 1e-2, (8, 256): 5e-3}


def loss(t: int, width: int, lr: float, seed: int) -> float:
    value = 6.2 - 0.02 * math.log2(width / 64) - 0.01 * t + 0.1 * abs(math.log2(lr / BEST[(t, width)]))
    if (t, width, lr) == (3, 64, 4e-2):  # T = 3, N = 64: the runner-up only 0.001 worse (within seed noise)
        value = 6.2 - 0.03 + 0.001
    return value + (0.005 if seed else -0.005)


def make_run(root: Path, t: int, grid: list[float], *, train: dict | None = None, extra_rows=()) -> Path:
    template = yaml.safe_load((ROOT / "results/lr_curves/pt-cpu-n64/spec.yaml").read_text())
    values = {**template, "widths": [64, 256], "lrs": grid, "parametrizations": ["mup"],
              "out_dir": f"runs/lr-curves-depth-t{t}", "reference": None,
              "train": train or {**template["train"], "precision": "fp32",
                                 "model": {**template["train"]["model"], "num_iterations": t}}}
    out = root / f"t{t}"
    out.mkdir(parents=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    rows = [{"parametrization": "mup", "width": w, "lr": lr, "seed": s, "state": "COMPLETE",
             "valid_loss": loss(t, w, lr, s), "fail_reason": "", "run_dir": str(i)}
            for i, (w, lr, s) in enumerate((w, lr, s) for w in (64, 256) for lr in grid for s in (0, 1))]
    write_csv(out / "results.csv", [*rows, *extra_rows], COLUMNS)
    return out


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    sp_row = {"parametrization": "sp", "width": 64, "lr": 0.08, "seed": 0, "state": "COMPLETE", "valid_loss": 1.0,
              "fail_reason": "", "run_dir": "results/lr_curves/pt-cpu/sp-n64/trials/0"}  # a reference's SP row
    return [make_run(tmp_path, 2, NARROW, extra_rows=[sp_row]), *(make_run(tmp_path, t, WIDE) for t in (3, 5, 8))]


def test_best_lr_per_t_and_width_and_the_verdicts(runs, tmp_path):
    read = read_runs(list(reversed(runs)))
    assert [r.depth for r in read] == [2, 3, 5, 8] and read[0].grid == NARROW and read[1].grid == WIDE
    table = {(b["T"], b["width"]): b for b in depth_table(read)}
    assert {key: b["best_lr"] for key, b in table.items()} == BEST  # the SP row (loss 1.0) is not muP's
    assert table[(8, 256)]["at_grid_edge"] and not table[(2, 64)]["at_grid_edge"]
    assert table[(2, 64)]["resolved"] and not table[(3, 64)]["resolved"]
    assert table[(3, 64)]["runner_up_lr"] == 4e-2 and table[(3, 64)]["runner_up_delta"] == pytest.approx(0.001)
    assert table[(2, 64)]["std"] == pytest.approx(math.sqrt(2) * 0.005)
    assert steps([2e-2, 5e-3]) == 2

    text = write_depth_report(runs, tmp_path / "out")
    assert "| T | N = 64 best lr | N = 64 loss | N = 256 best lr | N = 256 loss |" in text
    assert "| 2 | 0.02 | 6.1800 ± 0.0071 | 0.02 | 6.1400 ± 0.0071 |" in text
    assert ("- **N = 64**: best lr 0.02 (T = 2), 0.02 (T = 3), 0.01 (T = 5), 0.01 (T = 8): spans 1 factor-2 step(s) "
            "across T = 2..8; stays within one step.") in text
    assert ("- **N = 256**: best lr 0.02 (T = 2), 0.01 (T = 3), 0.01 (T = 5), 0.005 (T = 8): spans 2 factor-2 "
            "step(s) across T = 2..8; moves more than one step. (T = 8: optimum at its grid edge, widen the grid.)"
            ) in text
    assert "more iterations better at the best lr: yes (T = 2: 6.1800, T = 3: 6.1700" in text
    assert "optimum not resolved from the runner-up lr (within seed noise, the rule's 2x) at T = 3 (runner-up 0.04: " \
           "+0.0010, 0.14x its noise 0.0071)" in text
    assert "every optimum is resolved" in text  # at N = 256
    assert f"T = 2 `{runs[0]}` (lr grid 0.01, 0.02, 0.04, 0.08)" in text and "98,304 training tokens" in text
    out = tmp_path / "out"
    assert (out / "depth.md").read_text() == text
    assert len((out / "depth.csv").read_text().splitlines()) == 1 + 8
    assert (out / "depth.png").stat().st_size > 10_000


def test_runs_must_differ_in_t_alone(runs, tmp_path):
    template = yaml.safe_load((runs[1] / "spec.yaml").read_text())["train"]
    longer = make_run(tmp_path / "b", 5, WIDE, train={**template, "token_budget": 2 * template["token_budget"],
                                                      "model": {**template["model"], "num_iterations": 5}})
    with pytest.raises(ConfigError, match=r"lr-depth: .*t5 differs from .*t2 in more than T: train.token_budget"):
        read_runs([runs[0], longer])
    narrower = make_run(tmp_path / "c", 5, WIDE, train={**template, "model": {**template["model"], "rank": 8,
                                                                              "num_iterations": 5}})
    with pytest.raises(ConfigError, match=r"more than T: train.model.rank \(16 there, 8 here\)"):
        read_runs([runs[0], narrower])
    with pytest.raises(ConfigError, match="both have T = 3"):
        read_runs([runs[0], runs[1], make_run(tmp_path / "d", 3, WIDE)])
    with pytest.raises(ConfigError, match="at least two"):
        read_runs([runs[0]])
    with pytest.raises(ConfigError, match="spec.yaml not found"):
        read_runs([runs[0], tmp_path / "nowhere"])


def test_cli_writes_the_report_and_records_the_command(runs, tmp_path, capsys):
    out = tmp_path / "depth"
    assert main(["lr-depth", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "# Best lr against MFVI iterations T: pt mup, N0 = 64, widths [64, 256], 2 seed(s)" in printed
    assert {p.name for p in out.iterdir()} == {"depth.md", "depth.csv", "depth.png", "command.txt"}
    assert main(["lr-depth", str(runs[0]), str(tmp_path / "nowhere")]) == 2  # a usage error, one line
