"""``probformer fill-mask | inspect | parse-eval``: thin wrappers over :mod:`probformer.inspection`."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from probformer.cli.arguments import steps_or_all
from probformer.cli.command import Command
from probformer.cli.provenance import record_command
from probformer.inspection.errors import InspectionError

RUN_HELP = "run directory (e.g. runs/pt-mlm) or its model/ directory"


def _slug(text: str, limit: int = 48) -> str:
    """A folder name for a sentence: its Latin letters and digits; a sentence with none (Thai, Chinese,
    ...) gets a short hash of its text, so two of them never share a folder."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")
    return slug or "sentence-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


# -- fill-mask -----------------------------------------------------------------------------------------
def add_fill_mask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("text", help='text with [MASK], e.g. "the [MASK] of the union is strong"')
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")


def fill_mask(run: str, text: str, top_k: int = 5, json: bool = False) -> int:
    from probformer.inspection.fill_mask import fill_mask as predict
    from probformer.inspection.loading import load_model

    loaded = load_model(run, tasks=("fill-mask",))
    predictions = predict(loaded.model, loaded.tokenizer, text, top_k)
    if json:
        print(_dumps([{"position": p.position, "candidates": [{"token": t, "probability": q} for t, q in p.candidates]}
                      for p in predictions], indent=2))
        return 0
    for k, p in enumerate(predictions, start=1):
        print(f"[MASK] {k} (piece {p.position}):")
        for token, prob in p.candidates:
            print(f"  {prob:7.4f}  {token}")
    return 0


# -- inspect -------------------------------------------------------------------------------------------
def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("sentence", help="the sentence (split into words like the tokenizer's pre-tokenizer)")
    p.add_argument("--words", help="the words, space-separated, instead of splitting the sentence")
    p.add_argument("--iteration", type=int, help="MFVI iteration drawn as trees (default: the last)")
    p.add_argument("--channel", type=int, help="only this channel in --conllu (default: every channel)")
    p.add_argument("--tree", choices=("mst", "argmax"), default="mst",
                   help="mst: single-root maximum spanning tree (default); argmax: each word's best head")
    p.add_argument("--out-dir", help="where arcs.svg/png and heatmap.png/svg go (default: RUN/inspect/<sentence>)")
    p.add_argument("--no-plots", action="store_true", help="skip the pictures")
    p.add_argument("--conllu", metavar="PATH", help="write the predicted tree(s) with HeadProb per word")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--labels", type=int, default=3, help="top label values shown per word")
    p.add_argument("--label-words", type=int, default=5, help="vocabulary words shown per label value")


def inspect(run: str, sentence: str, words: str | None = None, iteration: int | None = None,
            channel: int | None = None, tree: str = "mst", out_dir: str | None = None, no_plots: bool = False,
            conllu: str | None = None, json: bool = False, labels: int = 3, label_words: int = 5) -> int:
    from probformer.inspection.loading import load_model
    from probformer.inspection.sentence import describe, inspect_words
    from probformer.inspection.words import split_words

    if labels < 0 or label_words < 0:
        raise InspectionError(f"--labels and --label-words must be >= 0, got {labels} and {label_words}")
    loaded = load_model(run, require_arch="pt")
    word_list = words.split() if words else split_words(loaded.tokenizer, sentence)
    inspection = inspect_words(loaded, word_list, labels, label_words)
    T, h = inspection.num_iterations, inspection.num_channels
    iteration = T if iteration is None else iteration
    if not 1 <= iteration <= T:
        raise InspectionError(f"--iteration must be between 1 and {T}, got {iteration}")
    channels = list(range(h)) if channel is None else [channel]
    if any(not 0 <= c < h for c in channels):
        raise InspectionError(f"--channel must be between 0 and {h - 1}, got {channel}")
    out = Path(out_dir) if out_dir else loaded.directory.parent / "inspect" / _slug(sentence)
    paths = [] if no_plots else inspection.render(out, iteration, tree)
    if conllu:
        Path(conllu).parent.mkdir(parents=True, exist_ok=True)
        Path(conllu).write_text(inspection.conllu(iteration, channels, tree), encoding="utf-8")
        paths.append(Path(conllu))
    if json:
        print(_dumps({**inspection.to_dict(), "files": [str(p) for p in paths]}, indent=1))
    else:
        print(describe(inspection, iteration, tree))
        if paths:
            print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


# -- parse-eval ----------------------------------------------------------------------------------------
def add_parse_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("file", help="CoNLL-U file with gold heads (e.g. a UD treebank's dev or test split)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--select-on", metavar="DEV.conllu", help="choose the reading on this other file")
    group.add_argument("--select-first", type=int, metavar="K",
                       help="choose the reading on the first K sentences of FILE and report on the rest")
    p.add_argument("--snapshots", type=steps_or_all, metavar="STEPS",
                   help="score the run's snapshots at these steps (e.g. 100,500,1000, or all) and its final model: "
                        "how the trees form with training (needs a run trained with snapshot_interval)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out-dir", help="write uas.md, uas.json, uas.png and command.txt here "
                                     "(with --snapshots: uas_by_step.md/.json/.png and step-N/uas.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--no-progress", action="store_true")


def parse_eval(run: str, file: str, select_on: str | None = None, select_first: int | None = None,
               snapshots: list[int] | str | None = None, batch_size: int = 32, out_dir: str | None = None,
               json: bool = False, no_progress: bool = False) -> int:
    if snapshots is not None:
        from probformer.experiments.trees_along_training import parse_eval_along_run

        text, _ = parse_eval_along_run(run, file, select_on, select_first, None if snapshots == "all" else snapshots,
                                       out_dir, batch_size, progress=not no_progress)
        if out_dir:
            record_command(out_dir)
        print(text)
        return 0
    from probformer.inspection.loading import load_model
    from probformer.inspection.treebank import markdown, plot_uas
    from probformer.inspection.treebank import parse_eval as evaluate

    result = evaluate(load_model(run, require_arch="pt"), file, select_on, select_first, batch_size,
                      progress=not no_progress)
    text = markdown(result)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "uas.md").write_text(text)
        (out / "uas.json").write_text(_dumps(result.to_dict(), indent=1))
        plot_uas(result, out / "uas.png")
        record_command(out)
    print(_dumps(result.to_dict(), indent=1) if json else text)
    return 0


_dumps = json.dumps  # the commands' `json` flag shadows the module inside them

FILL_MASK = Command("fill-mask", "top-k tokens with probabilities for every [MASK] in a text",
                    add_fill_mask_arguments, fill_mask)
INSPECT = Command("inspect", "PT's head marginals on a sentence: trees, pictures, labels",
                  add_inspect_arguments, inspect)
PARSE_EVAL = Command("parse-eval", "UAS of PT's trees against a CoNLL-U treebank, beside baselines",
                     add_parse_eval_arguments, parse_eval)
