"""probformer.data.shards: the prepared directory's format (raw little-endian token files, int64 offset
arrays, an index with every file's size and sha256) and its reader, which opens without reading a token
file and says in one line what is wrong with a directory it cannot use."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_documents
from tokenizers import Tokenizer, models, pre_tokenizers

from probformer.data import shards as fmt
from probformer.data.errors import DataError
from probformer.data.prepare_stream import prepare_shards
from probformer.data.shards import PreparedShards

SETTINGS = {"vocab_size": 300, "work_unit_bytes": 2000, "shard_tokens": 2500, "valid_fraction": 0.1,
            "test_fraction": 0.1, "progress": False, "log": lambda *_: None}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A finished directory of 60 synthetic documents (read-only: copy it to damage it)."""
    root = tmp_path_factory.mktemp("shards")
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in synthetic_documents(60, 80)))
    prepare_shards(str(source), root / "out", **SETTINGS)
    return root / "out"


def copy_of(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def one_line_error(directory: Path, match: str) -> str:
    with pytest.raises(DataError, match=match) as err:
        PreparedShards.open(directory)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_files_are_what_the_index_says(prepared):
    index = json.loads((prepared / "index.json").read_text())
    assert {"format", "version", "finished", "dtype", "vocab_size", "tokenizer_sha256", "special_ids", "settings",
            "source_fingerprint", "position", "splits", "files"} <= set(index)
    assert index["finished"] is True and index["dtype"] == "uint16"
    assert index["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert {"source", "text_field", "split_seed", "valid_tokens", "test_tokens", "work_unit_bytes", "tokenizer",
            "lowercase", "vocab_size"} <= set(index["settings"])
    assert index["position"]["work_units"] > 1 and index["position"]["text_bytes"] > 0
    shards = PreparedShards.open(prepared)
    names = {"index.json", "tokenizer.json", "unigram_counts.npy"}
    for split in fmt.SPLITS:
        record = index["splits"][split]
        assert record["tokens"] == shards.num_tokens(split) == sum(s.num_tokens for s in shards.shards[split])
        for number, shard in enumerate(shards.shards[split]):
            assert shard.name == f"{split}-{number:06d}"
            raw = np.fromfile(prepared / f"{shard.name}.tokens", dtype="<u2")  # raw little-endian, no header
            assert np.array_equal(raw, shard.tokens) and len(raw) == shard.num_tokens
            documents = np.load(prepared / f"{shard.name}.documents.npy")
            assert documents.dtype == np.int64 and len(documents) == shard.num_documents and documents[0] == 0
            assert np.load(prepared / f"{shard.name}.sentences.npy").dtype == np.int64
            for name, file in shard.files.items():
                assert hashlib.sha256((prepared / name).read_bytes()).hexdigest() == file["sha256"]
                names.add(name)
    assert {p.name for p in prepared.iterdir()} == names  # nothing else, no temporary file
    assert shards.tokenizer_sha256 == hashlib.sha256((prepared / "tokenizer.json").read_bytes()).hexdigest()
    assert shards.tokenizer().get_vocab_size() == shards.vocab_size == len(shards.unigram_counts)
    assert shards.disk_bytes() == sum(p.stat().st_size for p in prepared.iterdir())
    shards.verify()


def test_opening_reads_no_token_file_and_maps_it_read_only(prepared, tmp_path):
    directory = copy_of(prepared, tmp_path)
    shard = PreparedShards.open(directory).shards["train"][0]
    path = directory / f"{shard.name}.tokens"
    path.write_bytes(b"\xff" * path.stat().st_size)  # same size, other bytes: only verify() reads them
    shards = PreparedShards.open(directory)
    shard = shards.shards["train"][0]
    assert "tokens" not in vars(shard) and "document_starts" not in vars(shard)  # nothing mapped yet
    assert isinstance(shard.tokens, np.memmap) and (np.asarray(shard.tokens) == 0xFFFF).all()
    with pytest.raises(ValueError, match="read-only"):
        shard.tokens[0] = 1
    with pytest.raises(DataError, match=rf"{shard.name}.tokens does not match the sha256"):
        shards.verify()


def test_directories_it_cannot_use_are_one_line_errors(prepared, tmp_path):
    one_line_error(tmp_path / "nowhere", "prepared data directory .*nowhere not found")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "holds no index.json")
    directory = copy_of(prepared, tmp_path)
    index_text = (directory / "index.json").read_text()
    (directory / "index.json").write_text(index_text[: len(index_text) // 2])
    one_line_error(directory, r"index.json is not readable \(JSONDecodeError")
    index = json.loads(index_text)
    (directory / "index.json").write_text(json.dumps({**index, "version": 99}))
    one_line_error(directory, "is format version 99")
    (directory / "index.json").write_text(json.dumps({**index, "finished": False}))
    message = one_line_error(directory, "was not finished; run `probformer prepare-data")
    assert message.endswith(f"{directory}` again to resume it")
    (directory / "index.json").write_text(index_text)
    valid = directory / "valid-000000.tokens"
    valid.write_bytes(valid.read_bytes()[:-2])
    one_line_error(directory, r"valid-000000.tokens has \d+ bytes, not the \d+ index.json records")
    valid.unlink()
    one_line_error(directory, "valid-000000.tokens is missing")
    directory = Path(shutil.copytree(prepared, tmp_path / "other"))
    tokenizer_file = directory / "tokenizer.json"
    tokenizer_file.write_bytes(tokenizer_file.read_bytes().replace(b"[MASK]", b"[MAZK]"))
    one_line_error(directory, "tokenizer.json does not match the sha256")


def test_a_vocabulary_over_65536_ids_is_stored_as_uint32(tmp_path):
    assert fmt.token_dtype(65_536) == np.dtype("<u2") and fmt.token_dtype(65_537) == np.dtype("<u4")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    vocab |= {f"w{i}": i for i in range(5, 70_000)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    docs = [" ".join(f"w{(i * 7919 + j * 104_729) % 69_995 + 5}" for j in range(50)) for i in range(30)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    all_train = {**SETTINGS, "valid_fraction": 0.0, "test_fraction": 0.0}
    shards = prepare_shards(str(tmp_path / "docs.jsonl"), tmp_path / "out", **all_train,
                            tokenizer=tmp_path / "tokenizer.json")
    assert shards.index["dtype"] == "uint32" and shards.vocab_size == 70_000
    got = [shard.document(i).tolist() for shard in shards.shards["train"] for i in range(shard.num_documents)]
    assert got == [tokenizer.encode(d, add_special_tokens=False).ids for d in docs]
    assert max(max(ids) for ids in got) > 65_535


def test_special_ids_are_looked_up_by_their_bert_names():
    tokenizer = Tokenizer(models.WordLevel({"[PAD]": 3, "[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "x": 4}, unk_token="[UNK]"))
    with pytest.raises(DataError, match=r"mine: the tokenizer has no \[MASK\] token; prepare-data needs"):
        fmt.special_token_ids(tokenizer, "mine")
    tokenizer.add_special_tokens(["[MASK]"])
    assert fmt.special_token_ids(tokenizer, "mine") == {"pad": 3, "unk": 0, "cls": 1, "sep": 2, "mask": 5}


def test_own_file_names():
    for name in ("index.json", "tokenizer.json", "unigram_counts.npy", "train-000000.tokens",
                 "valid-000012.documents.npy", "test-000003.sentences.npy", ".train-000001.tokens.tmp",
                 ".index.json.tmp"):
        assert fmt.is_own_file(name), name
    for name in ("notes.txt", "train-1.tokens", "dev-000000.tokens", ".train-000001.tokens", "sub"):
        assert not fmt.is_own_file(name), name


def test_a_prepared_directory_is_told_from_a_text_directory(tmp_path):
    from probformer.data.shards import is_prepared_directory

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("some text")
    (texts / "index.json").write_text('{"pages": 3}')  # someone else's index: still a text directory
    assert not is_prepared_directory(texts) and not is_prepared_directory(texts / "a.txt")
    assert not is_prepared_directory(tmp_path / "missing")
    begun = tmp_path / "begun"  # killed before its first commit: shard files, no index
    begun.mkdir()
    (begun / "train-000000.tokens").write_bytes(b"\x05\x00")
    assert is_prepared_directory(begun)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "index.json").write_text('{"format": "probformer-shards", "version": 1}')
    assert is_prepared_directory(ours)
