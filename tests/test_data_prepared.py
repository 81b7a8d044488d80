"""probformer.data.prepared: the tokenised corpus cache -- its streams decode to the split documents,
blocks are views of them, and the cache is keyed by its inputs, reused, and rebuilt when damaged or
half-written. Runs on small synthetic corpora written to ``tmp_path`` (and the session's prepared one).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_documents, write_text_dir

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
    assert corpus.meta["words"] == sum(len(d.split()) for d in docs)
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

    monkeypatch.setattr(prepared_module, "train_wordpiece", forbidden)
    monkeypatch.setattr(prepared_module, "load_documents", forbidden)
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
        with open(root / "train.bin", "r+b") as handle:
            handle.truncate(10)
    elif damage == "delete_tokenizer":
        (root / "tokenizer.json").unlink()
    else:
        (root / "meta.json").write_text('{"spec": ')
    logs: list[str] = []
    rebuilt = prepare_corpus(spec, cache, log=logs.append)
    assert any("rebuilding" in line for line in logs)
    assert rebuilt.root == root
    for key in ("spec", "documents", "words"):
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
    (root / "train.bin").write_bytes(b"\x00\x01")  # a half-written entry has no meta.json
    corpus = prepare_corpus(spec, cache, log=quiet)
    assert corpus.root == root and len(corpus.streams["train"]) == corpus.meta["tokens"]["train"] > 100


def test_prepare_corpus_missing_source(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare_corpus(_spec(tmp_path / "missing"), tmp_path / "cache", log=quiet)
