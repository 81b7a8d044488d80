"""``probformer fill-mask | inspect | parse-eval``: thin wrappers over :mod:`probformer.inspection`
(kept outside it, so that the library imports only models and data)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from probformer.inspection.errors import InspectionError
from probformer.provenance import record_command


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "sentence"


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from probformer.inspection.fill_mask import fill_mask
    from probformer.inspection.loading import load_model

    loaded = load_model(args.run)
    predictions = fill_mask(loaded.model, loaded.tokenizer, args.text, args.top_k)
    if args.json:
        print(json.dumps([{"position": p.position, "candidates": [{"token": t, "probability": q} for t, q in
                                                                  p.candidates]} for p in predictions], indent=2))
        return 0
    for k, p in enumerate(predictions, start=1):
        print(f"[MASK] {k} (piece {p.position}):")
        for token, prob in p.candidates:
            print(f"  {prob:7.4f}  {token}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from probformer.inspection.loading import load_model
    from probformer.inspection.sentence import describe, inspect_words
    from probformer.inspection.words import split_words

    loaded = load_model(args.run, require_arch="pt")
    words = args.words.split() if args.words else split_words(loaded.tokenizer, args.sentence)
    inspection = inspect_words(loaded, words, args.labels, args.label_words)
    T, h = inspection.num_iterations, inspection.num_channels
    iteration = args.iteration or T
    if not 1 <= iteration <= T:
        raise InspectionError(f"--iteration must be between 1 and {T}, got {iteration}")
    channels = list(range(h)) if args.channel is None else [args.channel]
    if any(not 0 <= c < h for c in channels):
        raise InspectionError(f"--channel must be between 0 and {h - 1}, got {args.channel}")
    out_dir = Path(args.out_dir) if args.out_dir else loaded.directory.parent / "inspect" / _slug(args.sentence)
    paths = [] if args.no_plots else inspection.render(out_dir, iteration, args.tree)
    if args.conllu:
        Path(args.conllu).parent.mkdir(parents=True, exist_ok=True)
        Path(args.conllu).write_text(inspection.conllu(iteration, channels, args.tree), encoding="utf-8")
        paths.append(Path(args.conllu))
    if args.json:
        print(json.dumps({**inspection.to_dict(), "files": [str(p) for p in paths]}, indent=1))
    else:
        print(describe(inspection, iteration, args.tree))
        if paths:
            print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def _steps(text: str) -> list[int] | str:
    if text == "all":
        return text
    try:
        return sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or steps like 100,500,1000, got {text!r}") from None


def cmd_parse_eval(args: argparse.Namespace) -> int:
    if args.snapshots is not None:
        return _parse_eval_along_run(args)
    from probformer.inspection.loading import load_model
    from probformer.inspection.treebank import markdown, parse_eval, plot_uas

    loaded = load_model(args.run, require_arch="pt")
    result = parse_eval(loaded, args.file, args.select_on, args.select_first, args.batch_size,
                        progress=not args.no_progress)
    text = markdown(result)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "uas.md").write_text(text)
        (out / "uas.json").write_text(json.dumps(result.to_dict(), indent=1))
        plot_uas(result, out / "uas.png")
        record_command(out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(text)
    return 0


def _parse_eval_along_run(args: argparse.Namespace) -> int:
    from probformer.inspection.loading import load_model
    from probformer.inspection.treebank import (along_run_markdown, markdown, parse_eval, plot_along_run,
                                                report_from_dict, run_models)
    from probformer.training.metrics_log import read_metrics

    if args.select_on is None and args.select_first is None:
        raise InspectionError("--snapshots compares the chosen reading per model: give --select-on or --select-first")
    models = run_models(args.run, None if args.snapshots == "all" else args.snapshots)
    out = Path(args.out_dir) if args.out_dir else None
    results = []
    # What a result depends on; a saved step whose inputs match is reused, so an interrupted or
    # extended evaluation (more snapshots later) redoes nothing.
    inputs = {"file": str(Path(args.file).resolve()), "select_on": str(Path(args.select_on).resolve())
              if args.select_on else None, "select_first": args.select_first}
    for step, directory in models:
        key = {**inputs, "model": str(directory.resolve())}
        saved = out / f"step-{step:06d}" / "uas.json" if out is not None else None
        data = json.loads(saved.read_text()) if saved is not None and saved.is_file() else {}
        if data.get("inputs") == key:
            print(f"step {step}: reusing {saved}", file=sys.stderr)
            result = report_from_dict(data)
        else:
            print(f"step {step}: {directory}", file=sys.stderr)
            result = parse_eval(load_model(directory, require_arch="pt"), args.file, args.select_on,
                                args.select_first, args.batch_size, progress=not args.no_progress)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps({"inputs": key, **result.to_dict()}, indent=1))
        if saved is not None:
            (saved.parent / "uas.md").write_text(markdown(result))
        results.append((step, result))
    tokens_per_step = None
    config_file = Path(args.run) / "train_config.json"
    if config_file.is_file():
        c = json.loads(config_file.read_text())
        tokens_per_step = c["batch_size"] * c["grad_accum"] * c["data"]["seq_len"]
    metrics_file = Path(args.run) / "metrics.jsonl"
    valid_loss = {int(r["step"]): float(r["loss"]) for r in (read_metrics(metrics_file) if metrics_file.is_file() else [])
                  if r["kind"] == "valid"}
    text = along_run_markdown(results, tokens_per_step, valid_loss)
    if out is not None:
        (out / "uas_by_step.md").write_text(text)
        (out / "uas_by_step.json").write_text(json.dumps([{"step": s, **r.to_dict()} for s, r in results], indent=1))
        plot_along_run(results, out / "uas_by_step.png")
        record_command(out)
    print(text)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("fill-mask", help="top-k tokens with probabilities for every [MASK] in a text")
    p.add_argument("run", help="run directory (e.g. runs/pt-mlm) or its model/ directory")
    p.add_argument("text", help='text with [MASK], e.g. "the [MASK] of the union is strong"')
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("inspect", help="PT's head marginals on a sentence: trees per channel, pictures, labels")
    p.add_argument("run", help="run directory (e.g. runs/pt-mlm) or its model/ directory")
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
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("parse-eval", help="UAS of PT's trees against a CoNLL-U treebank, beside baselines")
    p.add_argument("run", help="run directory (e.g. runs/pt-mlm) or its model/ directory")
    p.add_argument("file", help="CoNLL-U file with gold heads (e.g. a UD treebank's dev or test split)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--select-on", metavar="DEV.conllu", help="choose the reading on this other file")
    group.add_argument("--select-first", type=int, metavar="K",
                       help="choose the reading on the first K sentences of FILE and report on the rest")
    p.add_argument("--snapshots", type=_steps, metavar="STEPS",
                   help="score the run's snapshots at these steps (e.g. 100,500,1000, or all) and its final model: "
                        "how the trees form with training (needs a run trained with snapshot_interval)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out-dir", help="write uas.md, uas.json, uas.png and command.txt here "
                                     "(with --snapshots: uas_by_step.md/.json/.png and step-N/uas.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_parse_eval)
