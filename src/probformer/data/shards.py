"""A prepared, sharded corpus on disk (written by ``probformer prepare-data``, data/prepare_stream.py)
and its reader, :class:`PreparedShards`.

A prepared directory holds::

    tokenizer.json                    the tokenizer every token id below is in
    index.json                        what is there (below); rewritten atomically after every commit
    unigram_counts.npy                int64 count of every id over the train split (once finished)
    <split>-<NNNNNN>.tokens           raw little-endian uint16 ids (vocabulary <= 65,536 ids) or uint32
    <split>-<NNNNNN>.documents.npy    int64 start offset, within the shard, of every document
    <split>-<NNNNNN>.sentences.npy    int64 start offset, within the shard, of every sentence

for the splits ``train``, ``valid`` and ``test`` (a split may have no shard). In a shard, documents
follow each other each followed by one ``[SEP]`` (as data/prepared.py's streams); a document never
straddles two shards; every document start is also a sentence start.

``index.json`` holds ``format`` / ``version``; ``dtype`` (``uint16`` or ``uint32``), ``vocab_size``,
``tokenizer_sha256`` and ``special_ids`` (``pad``, ``unk``, ``cls``, ``sep``, ``mask``: the ids of
``[PAD]`` ... ``[MASK]`` in the tokenizer, read from it, never assumed); ``settings`` (what
determines the result: source, text field, split seed and fractions, valid / test token caps, work
unit bytes, shard tokens, tokenizer origin, lowercase, vocabulary size, tokenizer sample bytes, split
rule) and ``source_fingerprint``; per split in ``splits`` its ``tokens``, ``documents``,
``sentences`` and its committed ``shards`` (each: ``name``, ``tokens``, ``documents``,
``sentences`` and ``files``: the size and sha256 of each of its three files); ``position`` (work
units fully written, documents read, text bytes read: where a resumed run goes on); ``files`` (size
and sha256 of ``tokenizer.json`` and, once finished, ``unigram_counts.npy``); and ``finished``.

Opening a directory (:meth:`PreparedShards.open`) reads the index and the tokenizer and compares
each file's size with the index, nothing more: token and offset files are memory-mapped when first
used, so an index of billions of tokens opens at once. :meth:`PreparedShards.verify` reads and
checks every file's sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from probformer.data.errors import DataError

FORMAT = "probformer-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
INDEX_FILE = "index.json"
TOKENIZER_FILE = "tokenizer.json"
COUNTS_FILE = "unigram_counts.npy"
SHARD_SUFFIXES = {"tokens": ".tokens", "documents": ".documents.npy", "sentences": ".sentences.npy"}
# The special tokens a masked LM needs, by the names BERT's tokenizers give them.
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
UINT16_VOCAB = 1 << 16  # ids 0..65535 fit uint16
TEMP_SUFFIX = ".tmp"  # ".<file>.tmp": a file being written (or left by a killed writer)
_OWN_FILE = re.compile(r"(?:(?:train|valid|test)-\d{6}(?:\.tokens|\.documents\.npy|\.sentences\.npy)"
                       r"|index\.json|tokenizer\.json|unigram_counts\.npy)")


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}"


def shard_files(name: str) -> dict[str, str]:
    """The file names of shard ``name`` by kind (``tokens``, ``documents``, ``sentences``)."""
    return {kind: name + suffix for kind, suffix in SHARD_SUFFIXES.items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 for a vocabulary of at most 65,536 ids, else uint32."""
    return np.dtype("<u2") if vocab_size <= UINT16_VOCAB else np.dtype("<u4")


def is_own_file(name: str) -> bool:
    """Whether a file name is one a preparation writes (or a temporary one of those)."""
    if name.startswith(".") and name.endswith(TEMP_SUFFIX):
        name = name[1 : -len(TEMP_SUFFIX)]
    return _OWN_FILE.fullmatch(name) is not None


def special_token_ids(tokenizer: Tokenizer, where: str, needed_by: str = "prepare-data") -> dict[str, int]:
    """The ids of ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]`` and ``[MASK]`` in ``tokenizer`` (role -> id);
    a one-line DataError naming the first one it lacks (``where`` names the tokenizer, ``needed_by``
    what needs them)."""
    ids = {}
    for role, token in SPECIAL_TOKENS.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise DataError(f"{where}: the tokenizer has no {token} token; {needed_by} needs "
                            f"{', '.join(SPECIAL_TOKENS.values())} (BERT's names)")
        ids[role] = token_id
    return ids


def vocabulary_size(tokenizer: Tokenizer) -> int:
    """One more than the largest id ``tokenizer`` can produce (added tokens included)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max(tokenizer.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)


# -- writing -------------------------------------------------------------------------------------------
def write_file_atomic(path: Path, data: bytes | memoryview) -> dict[str, int | str]:
    """Write ``data`` to ``.<name>.tmp`` next to ``path``, flush it to disk and rename it to ``path``;
    returns its size and sha256 (computed from ``data``, nothing is read back)."""
    tmp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return {"size": memoryview(data).nbytes, "sha256": hashlib.sha256(data).hexdigest()}


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (what :func:`numpy.save` writes)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_shard(directory: Path, split: str, number: int, tokens: np.ndarray, document_starts: np.ndarray,
                sentence_starts: np.ndarray) -> dict:
    """Write shard ``number`` of ``split`` (its three files, each to a temporary name and renamed) and
    return its index record. ``tokens`` must already have the shard dtype."""
    name = shard_name(split, number)
    files = shard_files(name)
    tokens = np.ascontiguousarray(tokens)
    records = {
        files["tokens"]: write_file_atomic(directory / files["tokens"], memoryview(tokens).cast("B")),
        files["documents"]: write_file_atomic(directory / files["documents"],
                                              npy_bytes(np.asarray(document_starts, dtype="<i8"))),
        files["sentences"]: write_file_atomic(directory / files["sentences"],
                                              npy_bytes(np.asarray(sentence_starts, dtype="<i8"))),
    }
    return {"name": name, "tokens": len(tokens), "documents": len(document_starts),
            "sentences": len(sentence_starts), "files": records}


def commit_index(directory: Path, index: Mapping) -> None:
    """Replace ``index.json`` atomically (written to a temporary file, flushed, renamed): a reader, or a
    resumed run, sees the previous commit or this one, never a mixture."""
    write_file_atomic(directory / INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode("utf-8"))
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(directory: Path) -> dict:
    """The index of ``directory``, checked to be one of this format; one-line DataErrors otherwise."""
    if not directory.exists():
        raise DataError(f"prepared data directory {directory} not found; make it with `probformer prepare-data`")
    if not directory.is_dir():
        raise DataError(f"prepared data directory {directory} is a file, not a directory")
    path = directory / INDEX_FILE
    if not path.is_file():
        raise DataError(f"{directory} holds no {INDEX_FILE}: not a directory `probformer prepare-data` finished "
                        f"(killed before its first commit?); make it with `probformer prepare-data SOURCE {directory}`")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not readable ({type(err).__name__}: {err}); prepare the directory again") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path} is not the index of a `probformer prepare-data` directory")
    if index.get("version") != FORMAT_VERSION:
        raise DataError(f"{path} is format version {index.get('version')!r}; this probformer reads version "
                        f"{FORMAT_VERSION} (prepare the directory again)")
    return index


def is_prepared_directory(source: str | Path) -> bool:
    """Whether ``source`` names a directory ``probformer prepare-data`` wrote or began (an index.json of
    this format, or shard files without one), rather than text: what ``data.source`` then means."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return False
    index = path / INDEX_FILE
    if index.is_file():
        try:
            return json.loads(index.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return False
    return any(p.name.endswith(SHARD_SUFFIXES["tokens"]) and is_own_file(p.name) for p in path.iterdir())


def resume_hint(directory: Path, index: Mapping) -> str:
    """The command that resumes the preparation recorded in ``index``."""
    source = index.get("settings", {}).get("source", "SOURCE")
    return f"probformer prepare-data {shlex.quote(str(source))} {shlex.quote(str(directory))}"


# -- reading -------------------------------------------------------------------------------------------
def unigram_log_probs(counts: np.ndarray, special_ids: Iterable[int]) -> np.ndarray:
    """Add-one smoothed log unigram probabilities of the ids that are not special (those: -inf), from
    train-split ``counts``: the context-free baseline a masked token is scored against."""
    smoothed = np.asarray(counts, dtype=np.float64) + 1.0
    smoothed[[i for i in special_ids if i < len(smoothed)]] = 0.0
    with np.errstate(divide="ignore"):
        return np.log(smoothed / smoothed.sum())


def unk_share(counts: np.ndarray, unk_id: int, sep_id: int) -> float:
    """The share of [UNK] among the tokens of the training split's text (the [SEP]s between its
    documents aside), from its unigram ``counts``."""
    text = int(counts.sum()) - int(counts[sep_id])
    return float(counts[unk_id]) / text if text else 0.0


class Shard:
    """One shard of a split: ``tokens`` (a read-only memmap), ``document_starts`` and
    ``sentence_starts`` (int64 offsets into ``tokens``, memory-mapped), each opened when first used."""

    def __init__(self, root: Path, split: str, record: Mapping, dtype: np.dtype):
        self.root, self.split, self.dtype = root, split, dtype
        self.name: str = record["name"]
        self.num_tokens: int = int(record["tokens"])
        self.num_documents: int = int(record["documents"])
        self.num_sentences: int = int(record["sentences"])
        self.files: dict[str, dict] = dict(record["files"])
        self.paths = {kind: root / file for kind, file in shard_files(self.name).items()}

    def __repr__(self) -> str:
        return f"Shard({self.name!r}, tokens={self.num_tokens}, documents={self.num_documents})"

    @cached_property
    def tokens(self) -> np.memmap:
        return np.memmap(self.paths["tokens"], dtype=self.dtype, mode="r", shape=(self.num_tokens,))

    @cached_property
    def document_starts(self) -> np.ndarray:
        return np.load(self.paths["documents"], mmap_mode="r")

    @cached_property
    def sentence_starts(self) -> np.ndarray:
        return np.load(self.paths["sentences"], mmap_mode="r")

    def document(self, i: int) -> np.ndarray:
        """The tokens of document ``i`` of the shard, without the ``[SEP]`` that follows it."""
        starts = self.document_starts
        end = int(starts[i + 1]) if i + 1 < len(starts) else self.num_tokens
        return self.tokens[int(starts[i]) : end - 1]


class PreparedShards:
    """A finished prepared directory: ``shards[split]`` (a tuple of :class:`Shard`), the tokenizer
    (``tokenizer_json`` as read, ``tokenizer_sha256``), ``special_ids``, ``unigram_counts``."""

    def __init__(self, root: Path, index: dict, tokenizer_json: bytes):
        self.root, self.index, self.tokenizer_json = root, index, tokenizer_json
        self.tokenizer_sha256: str = index["tokenizer_sha256"]
        self.dtype = np.dtype("<" + np.dtype(index["dtype"]).str[1:])
        self.vocab_size = int(index["vocab_size"])
        self.special_ids: dict[str, int] = {role: int(index["special_ids"][role]) for role in SPECIAL_TOKENS}
        self.settings: dict = index["settings"]
        self.shards: dict[str, tuple[Shard, ...]] = {
            split: tuple(Shard(root, split, record, self.dtype) for record in index["splits"][split]["shards"])
            for split in SPLITS}

    @classmethod
    def open(cls, directory: str | Path) -> PreparedShards:
        """Open a finished directory; one-line DataErrors for a missing directory or index, an unfinished
        preparation, or a file whose size is not the index's (no token file is read)."""
        root = Path(directory).expanduser()
        index = read_index(root)
        if index.get("finished") is not True:
            raise DataError(f"{root} was not finished; run `{resume_hint(root, index)}` again to resume it")
        try:
            shards = cls(root, index, b"")
            expected = [(root / name, record["size"]) for name, record in index["files"].items()]
            expected += [(root / name, record["size"]) for split in SPLITS for shard in shards.shards[split]
                         for name, record in shard.files.items()]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{root / INDEX_FILE} is incomplete ({type(err).__name__}: {err}); "
                            "prepare the directory again") from None
        for path, size in expected:
            if not path.is_file():
                raise DataError(f"{path} is missing; prepare the directory again")
            if path.stat().st_size != size:
                raise DataError(f"{path} has {path.stat().st_size} bytes, not the {size} {INDEX_FILE} records "
                                "(truncated or replaced?); prepare the directory again")
        tokenizer_json = (root / TOKENIZER_FILE).read_bytes()
        if hashlib.sha256(tokenizer_json).hexdigest() != shards.tokenizer_sha256:
            raise DataError(f"{root / TOKENIZER_FILE} does not match the sha256 {INDEX_FILE} records; "
                            "prepare the directory again")
        shards.tokenizer_json = tokenizer_json
        return shards

    def __repr__(self) -> str:
        counts = ", ".join(f"{split}={self.num_tokens(split)}" for split in SPLITS)
        return f"PreparedShards({str(self.root)!r}, {counts})"

    def num_tokens(self, split: str) -> int:
        return int(self.index["splits"][split]["tokens"])

    def num_documents(self, split: str) -> int:
        return int(self.index["splits"][split]["documents"])

    def num_sentences(self, split: str) -> int:
        return int(self.index["splits"][split]["sentences"])

    @cached_property
    def unigram_counts(self) -> np.ndarray:
        """int64 count of every id over the train split ([SEP]s between documents included)."""
        return np.load(self.root / COUNTS_FILE)

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(self.tokenizer_json.decode("utf-8"))

    def unigram_log_probs(self) -> np.ndarray:
        """:func:`unigram_log_probs` of the train split, the special ids excluded."""
        return unigram_log_probs(self.unigram_counts, self.special_ids.values())

    @property
    def unk_fraction(self) -> float:
        return unk_share(self.unigram_counts, self.special_ids["unk"], self.special_ids["sep"])

    def disk_bytes(self) -> int:
        """Bytes of every file of the preparation (index.json included)."""
        names = [INDEX_FILE, *self.index["files"]]
        names += [name for split in SPLITS for shard in self.shards[split] for name in shard.files]
        return sum((self.root / name).stat().st_size for name in names)

    def verify(self) -> None:
        """Read every file and compare its sha256 with the index's (a DataError naming the first that
        differs): about a second per GB."""
        recorded = dict(self.index["files"])
        for split in SPLITS:
            for shard in self.shards[split]:
                recorded.update(shard.files)
        for name, record in recorded.items():
            with open(self.root / name, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if digest != record["sha256"]:
                raise DataError(f"{self.root / name} does not match the sha256 {INDEX_FILE} records; "
                                "prepare the directory again")
