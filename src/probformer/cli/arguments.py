"""Argument types and argument groups that several commands share: one list parser, one count
parser, the config / spec flags. argparse calls the types; their errors become usage errors (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from probformer.config import preset_names
from probformer.experiments.spec import preset_names as spec_preset_names
from probformer.sizing import units

T = TypeVar("T")


def list_of(item: Callable[[str], T], example: str) -> Callable[[str], list[T]]:
    """An argparse type for comma-separated values of ``item`` (``0,1`` -> [0, 1]); empty items skipped."""

    def parse(text: str) -> list[T]:
        try:
            return [item(part.strip()) for part in text.split(",") if part.strip()]
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected comma-separated values like {example}, got {text!r}") from None

    parse.__name__ = f"list of {getattr(item, '__name__', 'values')}"
    return parse


def count(text: str) -> int:
    """An argparse type: '10M', '1.5m', '400k', '0.4B' or '123456' -> an integer."""
    try:
        return units.parse_count(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def memory(text: str) -> int:
    """An argparse type: '80GB', '24GiB' -> bytes."""
    try:
        return units.parse_memory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def steps_or_all(text: str) -> list[int] | str:
    """An argparse type: 'all' or training steps like 100,500,1000 (sorted, distinct)."""
    if text == "all":
        return text
    try:
        return sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or steps like 100,500,1000, got {text!r}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--preset`` and ``--set`` of a training config."""
    parser.add_argument("--config", help="YAML file with sections model / data / optim and run keys")
    parser.add_argument("--preset", help=f"named preset ({', '.join(preset_names())})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-3 --set model.hidden_size=64")


def add_spec_arguments(parser: argparse.ArgumentParser, command: str, keys: str, example: str) -> None:
    """``--config``, ``--preset`` and ``--set`` of an experiment spec, the same for every experiment command."""
    parser.add_argument("--config", help=f"{command} spec (YAML): {keys}")
    parser.add_argument("--preset", help=f"bundled spec ({', '.join(spec_preset_names(command))})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a spec value, e.g. {example}")


def add_rerender_argument(parser: argparse._ActionsContainer, report: str) -> None:
    """``--rerender`` on a parser or a mutually exclusive group: the report rewritten from ``results.csv``."""
    parser.add_argument("--rerender", action="store_true",
                        help=f"rewrite {report} from results.csv in the out dir (trains nothing, needs no run "
                             "directories: how a committed result follows a change to the verdict rule)")
