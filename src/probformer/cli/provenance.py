"""How a result was made: the command line, appended to ``command.txt`` next to the outputs.

Every committed figure must come from a command anyone can re-run, so each experiment command
(sweep, lr-curves, transfer, compare) appends the line that invoked it, as a user would type it
(``probformer <subcommand> ...``, not the interpreter path), with the time. Paths in it are as the user
typed them, relative to where the command ran (the repository root for the committed results); the
working directory itself is not recorded, since it names one machine's file system.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path


def command_line(argv: list[str] | None = None) -> str:
    """``probformer`` plus the arguments this process was given, shell-quoted."""
    args = sys.argv[1:] if argv is None else argv
    return "probformer " + shlex.join(args)


def record_command(out_dir: str | Path, command: str | None = None) -> Path:
    """Append ``# <time>`` and the command (default: this process's) to ``out_dir/command.txt``."""
    path = Path(out_dir) / "command.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(f"# {datetime.now().isoformat(timespec='seconds')}\n{command or command_line()}\n")
    return path
