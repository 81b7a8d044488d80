"""``probformer size`` (probformer.cli.size): out-of-range flags and bad input are usage errors (exit code 2),
not silently replaced."""

from __future__ import annotations

import json

import pytest

from probformer.cli import main


@pytest.mark.parametrize(("args", "message"), [
    (["--seq-len", "0"], "--seq-len must be >= 1, got 0"),  # 0 used to become the default 128
    (["--vocab-size", "0"], "--vocab-size must be >= 1, got 0"),
    (["--mask-prob", "1.5"], "--mask-prob must be in (0, 1]"),
    (["--mask-prob", "0"], "--mask-prob must be in (0, 1]"),
    (["--memory-margin", "1"], "--memory-margin must be in [0, 1)"),
    (["--memory-margin", "-0.1"], "--memory-margin must be in [0, 1)"),
    (["--width-multiple", "0"], "--width-multiple must be >= 1"),
])
def test_out_of_range_flags_are_usage_errors(args, message, capsys):
    assert main(["size", "--params", "1M", *args]) == 2
    assert message in capsys.readouterr().err


def test_given_sizes_are_used(capsys):
    assert main(["size", "--params", "1M", "--seq-len", "64", "--vocab-size", "1000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    N = report["model"]["hidden_size"]
    assert report["seq_len"] == 64 and report["parameters"]["embedding"] == 2 * N * 1000 + 1000  # S, W, b at V = 1000


@pytest.mark.parametrize(("args", "message"), [
    (["size", "--arch", "gpt", "--params", "10M"], "invalid choice: 'gpt'"),
    (["size", "--params", "10M", "--device-memory", "lots"], "expected a memory size like 80GB"),
    (["size", "--params", "10M", "--device-memory", "0GB"], "expected a memory size like 80GB"),
    (["size"], "give --params"),
    (["size", "--preset", "ladder-pt-10m", "--arch", "bert"], "preset ladder-pt-10m is arch 'pt'"),
    (["size", "--preset", "no-such-preset"], "preset 'no-such-preset' not found"),
])
def test_size_rejects_bad_input(args: list[str], message: str, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_budget_too_large_to_search_says_how_to_search_it(capsys):
    """100B parameters would try ~10^5 PT widths (minutes): refused in one line naming the flag that
    coarsens the grid; with it the search returns."""
    assert main(["size", "--params", "100B"]) == 2
    assert "search a coarser grid with width_multiple=4 (--width-multiple 4)" in capsys.readouterr().err
    assert main(["size", "--params", "100B", "--width-multiple", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["relative_error"]) <= 0.02 and report["model"]["hidden_size"] % 4 == 0
