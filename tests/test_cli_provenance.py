"""probformer.cli.provenance: command.txt records the command a user would type, once per invocation."""

from __future__ import annotations

import sys
from pathlib import Path

from probformer.cli.provenance import command_line, record_command


def test_command_line_is_what_a_user_types(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/probformer", "lr-curves", "--set", "lrs=[0.01, 0.02]"])
    assert command_line() == "probformer lr-curves --set 'lrs=[0.01, 0.02]'"


def test_record_command_appends_a_dated_line_per_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record_command(tmp_path / "out", "probformer sweep --preset a")
    path = record_command(tmp_path / "out", "probformer sweep --preset a --n-trials 3")
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("# 20") and str(Path.cwd()) not in path.read_text()
    assert lines[1::2] == ["probformer sweep --preset a", "probformer sweep --preset a --n-trials 3"]
