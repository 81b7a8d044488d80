"""The committed reports under results/ (lr curves, transfer, compare) must be exactly what their drivers make
of the committed results.csv and spec.yaml (``--rerender``), byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = [
    ("lr_curves/pt-cpu", "best_lr.md", []), ("lr_curves/pt-cpu-2x", "best_lr.md", []),
    ("lr_curves/pt-cpu-beta1", "best_lr.md", []), ("lr_curves/pt-cpu-n64", "best_lr.md", []),
    ("lr_curves/pt-n64-depth-t2-cpu", "best_lr.md", []), ("lr_curves/pt-n64-8x-cpu", "best_lr.md", []),
    ("lr_curves/pt-n64-depth-t3-cpu", "best_lr.md", []), ("lr_curves/pt-n64-depth-t5-cpu", "best_lr.md", []),
    ("lr_curves/pt-n64-depth-t8-cpu", "best_lr.md", []), ("lr_curves/pt-n64-4x-tokens-cpu", "best_lr.md", []),
    ("transfer/pt-cpu", "report.md", ["--sweep-dir", "results/sweeps/pt-n32-cpu"]),
    ("transfer/pt-n64-cpu", "report.md", ["--sweep-dir", "results/sweeps/pt-n64-cpu"]),
    ("transfer/pt-n64-8x-cpu", "report.md", []),
    ("compare/cpu", "results.md", []), ("compare/cpu-2m", "results.md", []), ("compare/cpu-20m", "results.md", []),
]


@pytest.mark.parametrize("where, report, extra", COMMITTED, ids=[c[0] for c in COMMITTED])
def test_committed_reports_are_their_results_rerendered(where, report, extra, tmp_path, monkeypatch, capsys):
    """``--rerender`` of every committed result directory gives its committed report byte for byte, so the
    verdicts there are the current rule's (lr-curves references resolve from the repository root)."""
    from probformer.cli import main

    monkeypatch.chdir(ROOT)
    committed = ROOT / "results" / where
    out = tmp_path / "out"
    shutil.copytree(committed, out)
    (out / report).unlink()
    command = where.split("/")[0].replace("_", "-")
    assert main([command, "--config", str(committed / "spec.yaml"), "--out-dir", str(out), "--rerender", *extra]) == 0
    assert (out / report).read_text() == (committed / report).read_text()
    assert capsys.readouterr().out


def test_committed_depth_report_is_its_command_rerun(tmp_path, monkeypatch, capsys):
    """`probformer lr-depth` reads only the committed per-T lr-curves results: run again, it writes the
    committed depth.md byte for byte."""
    from probformer.cli import main

    monkeypatch.chdir(ROOT)
    committed = ROOT / "results" / "lr_curves" / "pt-n64-depth-cpu"
    runs = [f"results/lr_curves/pt-n64-depth-t{t}-cpu" for t in (2, 3, 5, 8)]
    assert main(["lr-depth", *runs, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "depth.md").read_text() == (committed / "depth.md").read_text()
    assert (tmp_path / "depth.csv").read_text() == (committed / "depth.csv").read_text()
    assert capsys.readouterr().out
