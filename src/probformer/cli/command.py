"""What one ``probformer`` subcommand is: its name, its one-line help, its arguments and the plain
typed function that runs it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

# What `probformer` returns: 0 done; 2 the input was wrong (one line on stderr says what); 3 a training run
# diverged (recorded in its run directory, not a crash); 130 interrupted (Ctrl-C), as shells expect.
EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130


@dataclass(frozen=True)
class Command:
    name: str
    help: str  # the one line `probformer --help` shows
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Called with the parsed arguments as keywords (argparse's dests are its parameter names), so it is
    # also a plain Python function: ``run(run="runs/pt-mlm", text="the [MASK] of the union")``.
    run: Callable[..., int]
    # What Ctrl-C leaves behind and how to go on, said once by the handler in main.
    on_interrupt: str = ""
    description: str | None = None
    # Options may sit between positionals of a variable count (``predict RUN --json "a text"``):
    # parsed as argparse's intermixed arguments (CommandParser).
    intermixed: bool = False


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser; with ``intermixed`` set, positionals and options may interleave, which
    plain argparse refuses once a ``nargs="*"`` positional has matched (zero items) before an option."""

    intermixed = False
    _inside = False  # parse_known_intermixed_args calls parse_known_args itself (Python 3.11, 3.12)

    def parse_known_args(self, args=None, namespace=None):
        if not self.intermixed or self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False
