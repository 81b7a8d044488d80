"""probformer.data.batches: the training stream (seeded, epoch by epoch, resumable from its state) and
the fixed evaluation batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.masking import IGNORE_INDEX
from probformer.data.tokenization import NUM_SPECIAL


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


def test_rank_shards_give_each_process_its_rows_and_the_global_token_count():
    from probformer.data.batches import RankShards

    blocks = np.arange(5, 5 + 40 * 6).reshape(40, 6) % 50 + 5
    single = TrainStream(blocks, 8, "bert", 0.15, 60, seed=2)
    ranks = [RankShards(TrainStream(blocks, 8, "bert", 0.15, 60, seed=2), r, 4) for r in range(4)]
    for _ in range(7):  # past the epoch of 5 batches
        whole = single.next()
        parts = [r.next() for r in ranks]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
        assert torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
        assert all(p.global_num_tokens == whole.num_tokens == 48 for p in parts)
    assert all(r.state_dict() == single.state_dict() for r in ranks) and ranks[0].batches_per_epoch == 5
    with pytest.raises(ValueError, match="rank 4 is not one of world_size=4"):
        RankShards(single, 4, 4)
