"""``probformer predict``: a trained tagger's or text classifier's labels for texts, a thin wrapper
over :mod:`probformer.inspection.predict`.

    probformer predict runs/pos "The cat sat on the mat." "Dogs bark."
    The/DET cat/NOUN sat/VERB on/ADP the/DET mat/NOUN ./PUNCT
    Dogs/NOUN bark/VERB ./PUNCT

    probformer predict runs/sst2 --file reviews.txt        # one text per line
    1 (p=0.93)  a gripping, beautifully acted film

``--json`` prints a JSON list with one object per text (every word's offsets and probability, or
every label's probability), for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from probformer.cli.command import Command
from probformer.inspection.errors import InspectionError

RUN_HELP = "run directory of a trained token or text classifier (e.g. runs/pos) or its model/ directory"


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("texts", nargs="*", metavar="text",
                   help="texts to label (raw text, cut into words by the tokenizer's pre-tokenizer)")
    p.add_argument("--file", metavar="PATH", help="also read texts from PATH, one per line (blank lines skipped; "
                                                   "- reads standard input)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per text")


def read_texts(path: str) -> list[str]:
    """The non-blank lines of ``path`` (``-``: standard input), without their line ends."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        file = Path(path)
        if not file.is_file():
            raise InspectionError(f"--file {path!r} not found")
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise InspectionError(f"--file {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return [line for line in lines if line.strip()]


def predict(run: str, texts: list[str] | None = None, file: str | None = None, batch_size: int = 32,
            json: bool = False) -> int:
    from probformer.inspection.predict import TokenPrediction, load_task_model
    from probformer.inspection.predict import predict as label

    texts = list(texts or []) + (read_texts(file) if file else [])
    loaded = load_task_model(run)  # a bad directory is reported before a missing text
    if not texts:
        raise InspectionError("no text to label: give texts after RUN, or --file PATH")
    predictions = label(loaded, texts, batch_size)
    if json:
        print(_dumps([p.to_dict() for p in predictions], indent=1))
        return 0
    width = max(len(getattr(p, "label", "")) for p in predictions)  # text labels in one column
    for p in predictions:
        if isinstance(p, TokenPrediction):
            print(" ".join(f"{w.word}/{w.label}" for w in p.words))
        else:
            print(f"{p.label:<{width}} (p={p.probability:.2f})  {p.text}")
    return 0


_dumps = json.dumps  # the command's `json` flag shadows the module inside it

PREDICT = Command("predict", "a trained tagger's or text classifier's labels for texts (per word or per text)",
                  add_predict_arguments, predict, intermixed=True)
