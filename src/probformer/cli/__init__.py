"""The ``probformer`` command line (:mod:`probformer.cli.main`): one table of commands over the library."""

from probformer.cli.command import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from probformer.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
