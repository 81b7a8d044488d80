"""probformer.data.shard_loader: the stateless permutation, the block and unit indices, the per-rank
stream (K processes together = one process; resume = no interruption), the prefetcher, and the
loader's footprint at 10B tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.masking import IGNORE_INDEX
from probformer.data.shard_loader import (
    BlockIndex,
    FeistelPermutation,
    Prefetcher,
    ShardBlockStream,
    UnitIndex,
    eval_row_batches,
    loader_footprint,
    permuted_index,
    permuted_indices,
    sample_mask_seeds,
)
from probformer.data.tokenization import MASK_ID, NUM_SPECIAL, SEP_ID

SEQ = 16
BATCH = 8
VOCAB = 500


@dataclass
class _Shard:
    """A stand-in for the shard reader's objects: only the attributes the loader reads."""

    tokens: np.ndarray
    document_starts: np.ndarray
    sentence_starts: np.ndarray


def _corpus(seed: int = 0, shard_docs: tuple[int, ...] = (12, 1, 0, 20, 6)) -> list[_Shard]:
    """Shards of documents of 1-5 sentences, each document ending in [SEP]; most sentences are short,
    one in five longer than SEQ (so they are cut into pieces); one shard is empty."""
    rng = np.random.default_rng(seed)
    shards = []
    for docs in shard_docs:
        tokens: list[int] = []
        document_starts, sentence_starts = [], []
        for _ in range(docs):
            document_starts.append(len(tokens))
            for _ in range(rng.integers(1, 6)):
                sentence_starts.append(len(tokens))
                n = int(rng.integers(1, 12) if rng.random() < 0.8 else rng.integers(SEQ + 1, 3 * SEQ))
                tokens.extend(rng.integers(NUM_SPECIAL, VOCAB, n).tolist())
            tokens.append(SEP_ID)
        array = np.asarray(tokens, dtype=np.uint16)
        array.flags.writeable = False  # as the reader's memmaps
        shards.append(_Shard(array, np.asarray(document_starts, np.int64), np.asarray(sentence_starts, np.int64)))
    return shards


def _stream(rows: str = "blocks", rank: int = 0, world: int = 1, seed: int = 3, shards=None, **kw) -> ShardBlockStream:
    return ShardBlockStream(_corpus() if shards is None else shards, SEQ, BATCH, "bert", 0.15, VOCAB, seed, rank,
                            world, rows=rows, bucket_batches=kw.pop("bucket_batches", 3), **kw)


def _originals(batch: Batch) -> torch.Tensor:
    return torch.where(batch.labels != IGNORE_INDEX, batch.labels, batch.input_ids)


def _equal(a: Batch, b: Batch) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.input_ids, a.attention_mask, a.labels),
                                                 (b.input_ids, b.attention_mask, b.labels), strict=True))


def _cat(batches: list[Batch]) -> Batch:
    return Batch(*(torch.cat([getattr(b, f) for b in batches]) for f in ("input_ids", "attention_mask", "labels")))


# -- the permutation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 65537])
@pytest.mark.parametrize(("seed", "epoch"), [(0, 0), (5, 3)])
def test_the_permutation_is_a_bijection_for_every_n(n, seed, epoch):
    image = permuted_indices(0, n, n, seed, epoch)
    assert image.dtype == np.int64
    assert np.array_equal(np.sort(image), np.arange(n))


def test_the_permutation_is_deterministic_and_its_scalar_form_agrees():
    image = permuted_indices(0, 1000, 1000, 7, 2)
    assert np.array_equal(image, permuted_indices(0, 1000, 1000, 7, 2))
    assert [permuted_index(i, 1000, 7, 2) for i in (0, 1, 499, 999)] == image[[0, 1, 499, 999]].tolist()
    assert np.array_equal(permuted_indices(100, 200, 1000, 7, 2), image[100:200])  # a range is a slice of it
    with pytest.raises(IndexError):
        permuted_index(1000, 1000, 7, 2)


def test_the_permutation_changes_with_the_epoch_and_the_seed():
    base = permuted_indices(0, 1000, 1000, 0, 0)
    for other in (permuted_indices(0, 1000, 1000, 0, 1), permuted_indices(0, 1000, 1000, 1, 0)):
        assert (other != base).mean() > 0.95


def test_the_permutation_is_roughly_uniform():
    # Where position 0 lands, over 400 seeds: mean (n-1)/2, sd about n/sqrt(12)/sqrt(400) = 14.4.
    firsts = np.asarray([permuted_index(0, 1000, seed, 0) for seed in range(400)])
    assert abs(firsts.mean() - 499.5) < 4 * 14.5
    assert len(np.unique(firsts // 100)) == 10  # every tenth of the range is hit
    # Over seven values, each is position 0's image about 1/7 of the time (700 draws: sd ~ 9.3 per value).
    counts = np.bincount([permuted_index(0, 7, seed, epoch) for seed in range(100) for epoch in range(7)], minlength=7)
    assert (np.abs(counts - 100) < 4 * 9.3).all()
    # Within one permutation: no trace of the identity, the first positions spread over the range.
    n = 65537
    image = permuted_indices(0, n, n, 11, 0)
    assert abs(np.corrcoef(np.arange(n), image)[0, 1]) < 0.02
    assert abs(image[:2000].mean() - (n - 1) / 2) < 4 * n / np.sqrt(12 * 2000)


def test_the_permutation_of_a_huge_range_builds_no_array():
    n = 10**10
    perm = FeistelPermutation(n, 0, 0)
    image = perm(np.arange(5000))
    assert ((image >= 0) & (image < n)).all() and len(np.unique(image)) == 5000
    assert perm.half_bits == 17 and perm._keys.nbytes == 64


# -- the indices -----------------------------------------------------------------------------------------------
def test_the_block_index_drops_each_shards_remainder():
    index = BlockIndex([10, 3, 25, 0, 7], 4)  # 2, 0, 6, 0, 1 blocks
    assert len(index) == 9 and index.cumulative.tolist() == [0, 2, 2, 8, 8, 9]
    expected = [(0, 0), (0, 4), *[(2, 4 * i) for i in range(6)], (4, 0)]
    shard, offset = index.locate(np.arange(9))
    assert list(zip(shard.tolist(), offset.tolist(), strict=True)) == expected
    assert index.locate(3)[0] == 2
    with pytest.raises(IndexError):
        index.locate([9])


def _pieces_by_hand(shards: list[_Shard], field: str) -> list[tuple[int, int, int]]:
    out = []
    for s, shard in enumerate(shards):
        starts = getattr(shard, field).tolist()
        ends = [*starts[1:], len(shard.tokens)] if starts else []
        for a, b in zip(starts, ends, strict=True):
            out.extend((s, o, min(SEQ, b - o)) for o in range(a, b, SEQ))
    return out


@pytest.mark.parametrize("field", ["sentence_starts", "document_starts"])
def test_the_unit_index_finds_every_unit_and_cuts_the_long_ones(field):
    shards = _corpus()
    index = UnitIndex([len(s.tokens) for s in shards], [getattr(s, field) for s in shards], SEQ)
    expected = _pieces_by_hand(shards, field)
    assert len(index) == len(expected) > index.num_units
    shard, offset, length = index.spans(np.arange(len(index)))
    assert list(zip(shard.tolist(), offset.tolist(), length.tolist(), strict=True)) == expected
    some = np.asarray([5, 0, len(index) - 1, 17])  # any order, one at a time or together
    assert np.array_equal(index.spans(some)[1], offset[some])
    # Its own memory: O(shards) plus three int64 per long unit, whatever the number of units.
    long_units = sum(1 for _, _, n in expected if n == SEQ)  # at least one per long unit
    assert index.nbytes <= 8 * (3 * long_units + 3 * len(shards) + 2)


def test_sentence_starts_must_hold_every_document_start():
    shards = _corpus()
    shards[0].sentence_starts = shards[0].sentence_starts[1:]  # the first document has no first sentence
    with pytest.raises(ValueError, match="document starts where no sentence does"):
        _stream("sentences", shards=shards)
    shards = _corpus()
    shards[3].sentence_starts = shards[3].sentence_starts[::-1].copy()
    with pytest.raises(ValueError, match="increase strictly"):
        _stream("sentences", shards=shards)


# -- the stream ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows", ["blocks", "sentences", "documents"])
def test_an_epoch_visits_every_row_once_and_the_next_epoch_reorders(rows):
    stream = _stream(rows)
    epoch0 = np.concatenate([stream.plan(0, k) for k in range(stream.batches_per_epoch)])
    epoch1 = np.concatenate([stream.plan(1, k) for k in range(stream.batches_per_epoch)])
    for order in (epoch0, epoch1):
        assert len(np.unique(order)) == len(order) == stream.batches_per_epoch * BATCH
        assert len(stream.row_index) - len(order) < BATCH  # the leftover sits the epoch out
    assert not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize("rows", ["blocks", "sentences", "documents"])
def test_batches_hold_the_rows_the_plan_names(rows):
    shards, pad = _corpus(), 3
    stream = _stream(rows, shards=shards, pad_id=pad)
    for k in range(stream.batches_per_epoch + 2):  # into the second epoch
        epoch, index = divmod(k, stream.batches_per_epoch)
        shard, offset, length = stream.row_index.spans(stream.plan(epoch, index))
        batch = stream.next()
        width = int(length.max())
        assert batch.input_ids.shape == (BATCH, width if rows != "blocks" else SEQ)
        assert batch.global_num_tokens == batch.num_tokens == int(length.sum())
        original = _originals(batch)
        for r in range(BATCH):
            n = int(length[r])
            source = shards[shard[r]].tokens[offset[r] : offset[r] + n].astype(np.int64)
            assert np.array_equal(original[r, :n].numpy(), source)
            assert batch.attention_mask[r].tolist() == [1] * n + [0] * (width - n)
            assert (batch.input_ids[r, n:] == pad).all() and (batch.labels[r, n:] == IGNORE_INDEX).all()
            scored = batch.labels[r, :n] != IGNORE_INDEX
            assert (torch.from_numpy(source)[scored] >= NUM_SPECIAL).all()  # never a special token


def test_the_masks_follow_masking_dot_py():
    stream = ShardBlockStream(_corpus(), SEQ, BATCH, "pt2023", 0.3, VOCAB, 0)
    batches = [stream.next() for _ in range(stream.batches_per_epoch)]
    labels = torch.cat([b.labels for b in batches])
    inputs = torch.cat([b.input_ids for b in batches])
    maskable = _originals(Batch(inputs, inputs, labels)) >= NUM_SPECIAL
    rate = float((labels != IGNORE_INDEX).sum() / maskable.sum())
    assert 0.27 < rate < 0.33  # 2000 maskable tokens: sd ~ 0.01
    assert (inputs[labels != IGNORE_INDEX] == MASK_ID).all()  # pt2023: every chosen token is [MASK]


@pytest.mark.parametrize("rows", ["blocks", "sentences", "documents"])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_k_processes_together_see_exactly_what_one_process_sees(rows, world):
    single = _stream(rows)
    ranks = [_stream(rows, rank, world) for rank in range(world)]
    for _ in range(single.batches_per_epoch + 3):  # across an epoch boundary
        parts = [r.next() for r in ranks]
        assert all(p.input_ids.shape[0] == BATCH // world for p in parts)
        assert sum(p.num_tokens for p in parts) == parts[0].global_num_tokens
        assert _equal(_cat(parts), single.next())
    assert all(r.state_dict() == single.state_dict() for r in ranks)


def test_a_rank_reads_only_its_rows():
    reads: list[tuple[int, int]] = []

    class Spy(np.ndarray):
        def __getitem__(self, item):
            if isinstance(item, slice):
                reads.append((item.start, item.stop))
            return super().__getitem__(item)

    shards = _corpus()
    for shard in shards:
        shard.tokens = shard.tokens.view(Spy)
    stream = _stream("sentences", rank=1, world=4, shards=shards)
    shard, offset, length = stream.row_index.spans(stream.plan(0, 0))
    stream.next()
    assert sorted(reads) == sorted((int(offset[r]), int(offset[r] + length[r])) for r in (2, 3))


@pytest.mark.parametrize("rows", ["blocks", "sentences"])
def test_a_resumed_stream_continues_exactly(rows):
    stream = _stream(rows)
    for _ in range(stream.batches_per_epoch - 2):
        stream.next()
    state = stream.state_dict()
    assert set(state) == set(TrainStream(np.zeros((8, 2), np.uint16), 8, "bert", 0.15, 10, 0).state_dict())
    resumed = _stream(rows)
    resumed.load_state_dict(state)
    for _ in range(6):  # across the epoch boundary
        assert _equal(resumed.next(), stream.next())
    with pytest.raises(ValueError, match="seed"):
        _stream(rows, seed=4).load_state_dict(state)


def test_each_sample_has_its_own_mask_seed():
    seeds = sample_mask_seeds(3, 0, np.arange(1000))
    assert len(np.unique(seeds)) == 1000 and (seeds < 2**63).all()
    assert np.array_equal(seeds[10:20], sample_mask_seeds(3, 0, np.arange(10, 20)))
    assert not np.array_equal(seeds, sample_mask_seeds(3, 1, np.arange(1000)))
    assert not np.array_equal(seeds, sample_mask_seeds(4, 0, np.arange(1000)))


def test_length_buckets_cut_padding():
    def padding(bucket_batches: int) -> float:
        stream = _stream("sentences", bucket_batches=bucket_batches)
        lengths = [stream.row_index.spans(stream.plan(0, k))[2] for k in range(stream.batches_per_epoch)]
        return sum(float(n.max() * len(n) - n.sum()) for n in lengths) / sum(float(n.sum()) for n in lengths)

    assert padding(100) < 0.5 * padding(1)


def test_memmapped_shards_are_read_in_place(tmp_path):
    shards = _corpus()
    for i, shard in enumerate(shards):
        path = tmp_path / f"shard{i}.bin"
        shard.tokens.tofile(path)
        if len(shard.tokens):
            shard.tokens = np.memmap(path, dtype=np.uint16, mode="r")
    assert _equal(_stream("documents", shards=shards).next(), _stream("documents").next())
    plain = [s.tokens for s in shards]  # bare token arrays are shards too (blocks need nothing else)
    assert _equal(ShardBlockStream(plain, SEQ, BATCH, "bert", 0.15, VOCAB, 3).next(), _stream().next())


def test_the_stream_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="does not split"):
        _stream(world=3)
    with pytest.raises(ValueError, match="rank"):
        _stream(rank=2, world=2)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        _stream(shards=_corpus(shard_docs=(0,)))
    with pytest.raises(ValueError, match=r"the mask id 7 must be one of the special ids \(0, 1, 2, 3, 4\)"):
        _stream(mask_id=7)
    with pytest.raises(ValueError, match="the padding id 9 must be one of the special ids"):
        _stream(pad_id=9)
    with pytest.raises(ValueError, match="sentence_starts"):
        ShardBlockStream([s.tokens for s in _corpus()], SEQ, BATCH, "bert", 0.15, VOCAB, 0, rows="sentences")


@pytest.mark.parametrize("rows", ["blocks", "sentences"])
def test_a_tokenizer_with_other_special_ids_is_masked_with_them(rows):
    # A pretrained tokenizer's layout: [PAD] [UNK] [CLS] [SEP] [MASK] at 7..11 (probformer's 0..4 are words).
    special, pad, mask = (7, 8, 9, 10, 11), 7, 11
    shards = _corpus()
    for shard in shards:  # move the special tokens: 3 ([SEP]) -> 10, and some words onto 0..4
        tokens = shard.tokens.astype(np.int64)
        tokens = np.where(tokens == SEP_ID, 10, np.where(tokens < 60, tokens % 5, tokens))
        shard.tokens = tokens.astype(np.uint16)
    stream = _stream(rows, shards=shards, pad_id=pad, mask_id=mask, special_ids=special)
    batches = [stream.next() for _ in range(stream.batches_per_epoch)]
    for batch in batches:
        original, scored = _originals(batch), batch.labels != IGNORE_INDEX
        assert not torch.isin(original[scored], torch.tensor(special)).any()  # never a special token
        assert (batch.input_ids[batch.attention_mask == 0] == pad).all()
        assert not scored[batch.attention_mask == 0].any()
        changed = scored & (batch.input_ids != original)
        assert (batch.input_ids[changed & (batch.input_ids != mask)] < VOCAB).all()
        assert not torch.isin(batch.input_ids[changed & (batch.input_ids != mask)], torch.tensor(special)).any()
    inputs = torch.cat([b.input_ids.flatten() for b in batches])
    labels = torch.cat([b.labels.flatten() for b in batches])
    assert (inputs[labels != IGNORE_INDEX] == mask).float().mean() > 0.7  # 80% of the chosen become [MASK] = 11
    assert ((labels >= 0) & (labels < NUM_SPECIAL)).any()  # ids 0..4 are ordinary words here, and are scored


# -- evaluation batches ----------------------------------------------------------------------------------------
def test_evaluation_blocks_of_one_shard_are_eval_batches_of_its_blocks():
    # What the classic path scores (eval_batches over a cache split's blocks), through the shard index.
    shard = _corpus(shard_docs=(40,))[0]
    blocks = shard.tokens[: len(shard.tokens) // SEQ * SEQ].reshape(-1, SEQ)
    ours = eval_row_batches([shard], SEQ, BATCH, "bert", 0.15, VOCAB, 1234, max_batches=5)
    theirs = eval_batches(blocks, BATCH, "bert", 0.15, VOCAB, 1234, max_batches=5)
    assert len(ours) == len(theirs) == 5 and all(_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    whole = eval_row_batches([shard], SEQ, BATCH, "bert", 0.15, VOCAB, 1234)
    assert sum(len(b.input_ids) for b in whole) == len(blocks)
    assert len(whole[-1].input_ids) == (len(blocks) % BATCH or BATCH)


@pytest.mark.parametrize("rows", ["sentences", "documents"])
def test_evaluation_rows_are_every_row_in_order_padded_and_never_scored_there(rows):
    shards, pad = _corpus(), 3
    batches = eval_row_batches(shards, SEQ, BATCH, "pt2023", 0.3, VOCAB, 7, rows=rows, pad_id=pad)
    index = _stream(rows).row_index
    assert sum(len(b.input_ids) for b in batches) == len(index)
    shard, offset, length = index.spans(np.arange(len(index)))
    r = 0
    for batch in batches:
        assert batch.input_ids.shape[1] == int(length[r : r + len(batch.input_ids)].max())
        original = _originals(batch)
        for row in range(len(batch.input_ids)):
            n = int(length[r])
            source = shards[shard[r]].tokens[offset[r] : offset[r] + n].astype(np.int64)
            assert np.array_equal(original[row, :n].numpy(), source)
            assert batch.attention_mask[row].sum() == n and (batch.labels[row, n:] == IGNORE_INDEX).all()
            assert (batch.input_ids[row, n:] == pad).all()
            r += 1
    again = eval_row_batches(shards, SEQ, BATCH, "pt2023", 0.3, VOCAB, 7, max_batches=2, rows=rows, pad_id=pad)
    assert len(again) == 2 and all(_equal(a, b) for a, b in zip(again, batches, strict=False))  # fixed masks


# -- the prefetcher --------------------------------------------------------------------------------------------
def _wait_full(prefetcher: Prefetcher) -> None:
    deadline = time.monotonic() + 10
    while not prefetcher._queue.full() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert prefetcher._queue.full()


def test_the_prefetcher_hands_out_the_streams_batches_and_checkpoints_what_it_handed_out():
    plain = _stream("sentences")
    with Prefetcher(_stream("sentences"), depth=2) as prefetcher:
        for _ in range(plain.batches_per_epoch + 2):
            assert _equal(prefetcher.next(), plain.next())
            _wait_full(prefetcher)  # the stream itself is ahead now
            assert prefetcher.state_dict() == plain.state_dict()
        state = prefetcher.state_dict()
        following = [prefetcher.next() for _ in range(3)]
    resumed = _stream("sentences")
    resumed.load_state_dict(state)
    assert all(_equal(b, resumed.next()) for b in following)


def test_the_prefetcher_rewinds_on_load_and_on_close():
    stream = _stream()
    prefetcher = Prefetcher(stream)
    first = [prefetcher.next() for _ in range(3)]
    prefetcher.load_state_dict({"epoch": 0, "index": 1, "seed": 3})
    assert _equal(prefetcher.next(), first[1]) and prefetcher.state_dict()["index"] == 2
    _wait_full(prefetcher)
    thread = prefetcher._thread
    prefetcher.close()
    assert not thread.is_alive()
    assert stream.state_dict() == {"epoch": 0, "index": 2, "seed": 3}  # what was handed out, not prepared
    with pytest.raises(RuntimeError, match="closed"):
        prefetcher.next()


def test_the_prefetcher_raises_the_streams_errors_in_next():
    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def next(self) -> int:
            self.calls += 1
            if self.calls == 3:
                raise OSError("shard 7 unreadable")
            return self.calls

        def state_dict(self) -> dict:
            return {"calls": self.calls}

        def load_state_dict(self, state: dict) -> None:
            self.calls = state["calls"]

    prefetcher = Prefetcher(Failing())
    assert [prefetcher.next(), prefetcher.next()] == [1, 2]
    with pytest.raises(OSError, match="shard 7 unreadable"):
        prefetcher.next()
    assert prefetcher.state_dict() == {"calls": 2}
    assert not prefetcher._thread.is_alive()


# -- footprint -------------------------------------------------------------------------------------------------
def test_a_stream_over_ten_billion_tokens_costs_no_memory_per_block():
    f = loader_footprint(10_000_000_000, 128, 1000)
    assert f["blocks"] == 78_125_000
    assert f["construct_seconds"] < 1.0
    assert f["construct_peak_bytes"] < 2_000_000 and f["first_batch_peak_bytes"] < 2_000_000
    assert f["index_bytes"] < 20_000 and f["order_array_bytes"] == 625_000_000  # TrainStream's order, per epoch



def test_short_sentence_rows_are_masked_at_the_mask_rate():
    # One mask_tokens call per row, without its at-least-one rule: 4-token sentences (+ one [SEP] per
    # document) are masked at 15%, not the ~24% that forcing a token into every row drawing none gives.
    from probformer.data.masking import mask_tokens

    rng = np.random.default_rng(0)
    tokens = rng.integers(NUM_SPECIAL, VOCAB, 5 * 4000).astype(np.uint16)
    tokens[4::5] = SEP_ID  # documents of one 4-token sentence and its [SEP]
    starts = np.arange(0, len(tokens), 5, dtype=np.int64)
    stream = ShardBlockStream([_Shard(tokens, starts, starts)], SEQ, 100, "bert", 0.15, VOCAB, 0, rows="sentences")
    batches = [stream.next() for _ in range(stream.batches_per_epoch)]
    labels = torch.cat([b.labels for b in batches])
    maskable = _originals(Batch(torch.cat([b.input_ids for b in batches]), labels, labels)) >= NUM_SPECIAL
    rate = float((labels != IGNORE_INDEX).sum() / maskable.sum())
    assert abs(rate - 0.15) < 0.01, rate  # 16,000 maskable tokens: sd ~ 0.003
    forced = sum(int((mask_tokens(torch.arange(10, 14), "bert", 0.15, VOCAB, torch.Generator().manual_seed(s))[1]
                      != IGNORE_INDEX).sum()) for s in range(2000)) / (2000 * 4)
    assert forced > 0.22  # the at-least-one rule applied to each such row, what the loader no longer does
