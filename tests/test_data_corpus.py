"""Reading text sources (probformer.data.corpus, data.conllu): bad bytes and bad rows end in one
DataError naming the file, never a traceback or a silently wrong document."""

from __future__ import annotations

import json

import pytest

from probformer.data.conllu import ConlluError, read_conllu
from probformer.data.corpus import load_documents
from probformer.data.errors import DataError, DataWarning


def test_null_text_rows_are_skipped_and_counted_not_read_as_none(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "first document"}, {"text": None}, {"text": "second document"}, {"text": None}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.warns(DataWarning, match=r"skipped 2 row\(s\) whose 'text' is null"):
        docs = load_documents(str(path))
    assert docs == ["first document", "second document"]


def test_invalid_utf8_is_a_data_error_naming_the_file(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: not UTF-8 text"):
        load_documents(str(jsonl))
    conllu = tmp_path / "bad.conllu"
    conllu.write_bytes(b"1\tcaf\xe9\t_\tNOUN\t_\t_\t0\troot\t_\t_\n\n")
    with pytest.raises(ConlluError, match=r"bad.conllu: not UTF-8 text"):
        read_conllu(conllu)
    with pytest.raises(DataError, match=r"bad.conllu: not UTF-8 text"):  # as a training source too
        load_documents(str(conllu))


def test_a_text_file_named_parquet_is_a_data_error(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "fake.parquet"
    path.write_text("this is not parquet\n")
    with pytest.raises(DataError, match=r"fake.parquet: not a readable Parquet file"):
        load_documents(str(path))


def test_a_truncated_saved_dataset_is_a_data_error(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["one doc", "two doc", "three doc"]}).save_to_disk(str(saved))
    for arrow in saved.glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:40])  # cut the data file short
    with pytest.raises(DataError, match=r"saved: not a readable saved dataset"):
        load_documents(str(saved))
