"""Run by tests/test_training_distributed.py under torchrun: train a config, optionally stopping every process
at one evaluation step as an interruption would (the checkpoint before it is what a resume sees)."""

from __future__ import annotations

import argparse
import sys

from probformer.config import load_config
from probformer.training.trainer import train


class Interrupted(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    def stop(step: int, _metrics) -> None:
        if step == args.stop_at:
            raise Interrupted(f"stopped at step {step}")

    try:
        train(load_config(args.config), resume=args.resume, on_eval=stop if args.stop_at else None)
    except Interrupted:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
