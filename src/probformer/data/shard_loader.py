"""Masked-LM training batches read straight from token shards, in a stateless order, per process.

Why this exists, next to :class:`~probformer.data.batches.TrainStream`:

* **Memory.** TrainStream holds each epoch's order as an int64 array of every block (596 MB per
  process at 10B tokens and seq_len 128), and its blocks as one array. Here the epoch order is a
  keyed Feistel permutation (:class:`FeistelPermutation`) evaluated on demand: batch ``k`` of an epoch
  is the permuted rows ``[k * B, (k + 1) * B)``, computed from (seed, epoch, k) alone, and no array
  of O(rows) is ever built. The block index (:class:`BlockIndex`) is the cumulative block count per
  shard, O(shards), and can be built from token counts alone. Tokens stay in the shards' memmaps
  (shared between the processes of a machine through the page cache); a batch reads only its rows.
  Sentence and document rows (:class:`UnitIndex`) keep references to the shards' start arrays (not
  copies) plus three int64 per unit longer than seq_len: O(shards + long units), not O(units).
* **Exactness across process counts.** Each process reads only its rows of the global batch (rows
  ``[rank * b, (rank + 1) * b)``, b = B / world_size), and every row's masks come from its own seed,
  a hash of (seed, epoch, the row's sample index within the epoch). Which process draws a row, and
  with how many others, changes nothing: the K processes' batches, concatenated, are exactly the
  batch one process draws (and sentence rows are padded to the global batch's longest row, which
  the index knows without reading, so even the shapes agree).
* **Resume.** The whole state is (epoch, index within it), as for TrainStream, with the same
  ``state_dict`` keys; a stream loaded from a state continues exactly as the interrupted one would
  have. :class:`Prefetcher` draws the next batch on a background thread while the current one
  trains, and its ``state_dict`` counts the batches handed out, not those prepared ahead.

Masking goes through :func:`~probformer.data.masking.mask_tokens`, one call per row, with the
tokenizer's special ids (``mask_id``, ``special_ids``; probformer's own layout by default) and without
its at-least-one rule: a short sentence row is masked at ``mask_prob`` like any other (forcing a token
into each would mask a 5-token row at ~24%), and a row, or a process's share of a batch, that draws no
token is simply not scored (training/step.py leaves a micro-batch without targets out). Padding is
never passed to it, so padding is never masked nor scored, whatever ``pad_id`` is.

:func:`eval_row_batches` gives the fixed-mask evaluation batches of a split in the same row modes.
"""

from __future__ import annotations

import queue
import threading
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from probformer.data.batches import Batch, EpochPosition, RankBatch, epoch_order_seed, eval_mask_seed
from probformer.data.masking import IGNORE_INDEX, MASK_STYLES, MaskStyle, SpecialIds, mask_tokens
from probformer.data.tokenization import MASK_ID, NUM_SPECIAL, PAD_ID

__all__ = [
    "FEISTEL_ROUNDS",
    "ROW_MODES",
    "BlockIndex",
    "FeistelPermutation",
    "Prefetcher",
    "RankBatch",
    "RowMode",
    "ShardBlockStream",
    "TokenShard",
    "UnitIndex",
    "eval_row_batches",
    "loader_footprint",
    "permuted_index",
    "permuted_indices",
    "sample_mask_seeds",
]

RowMode = Literal["blocks", "sentences", "documents"]
ROW_MODES = ("blocks", "sentences", "documents")

# Each use of the run seed gets its own SeedSequence spawn key, so the epoch order, the per-sample
# mask seeds and the bucket order are independent. Changing any of these changes every batch drawn.
FEISTEL_ROUNDS = 8
_ORDER_KEY, _MASK_KEY, _BUCKET_KEY = 0, 1, 2
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (a bijection of 64-bit words that mixes every
    input bit into every output bit; array arithmetic wraps modulo 2**64 without warnings)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _seed_words(seed: int, epoch: int, key: tuple[int, ...], count: int) -> np.ndarray:
    return np.random.SeedSequence(epoch_order_seed(seed, epoch), spawn_key=key).generate_state(count, np.uint64)


# -- the stateless permutation ------------------------------------------------------------------------------
class FeistelPermutation:
    """A seeded bijection of [0, n), evaluated per index in O(1) memory.

    A balanced Feistel network on 2h-bit words, 4**h the smallest power of four >= n, with
    :data:`FEISTEL_ROUNDS` rounds whose keys come from ``SeedSequence([seed, epoch])``; round i maps
    (L, R) to (R, L xor F(k_i, R)), F the top h bits of splitmix64(R xor k_i). Every round is a
    bijection of the words whatever F is, so the network is one; an index whose image falls in
    [n, 4**h) is mapped again until it lands in [0, n) (cycle walking: it follows its own cycle of
    the word permutation, which returns to [0, n), so this ends, in fewer than 4 steps on average as
    4**h < 4n), and cycle walking keeps the result a bijection of [0, n).
    """

    def __init__(self, n: int, seed: int, epoch: int):
        if n < 0:
            raise ValueError(f"a permutation of [0, n) needs n >= 0, got {n}")
        self.n, self.seed, self.epoch = int(n), int(seed), int(epoch)
        self.half_bits = ((self.n - 1).bit_length() + 1) // 2 if self.n > 1 else 0
        self._keys = _seed_words(self.seed, self.epoch, (_ORDER_KEY,), FEISTEL_ROUNDS)

    def _words(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half_bits)
        drop = np.uint64(64 - self.half_bits)
        mask = np.uint64((1 << self.half_bits) - 1)
        left, right = x >> h, x & mask
        for key in self._keys:
            left, right = right, left ^ (_mix64(right ^ key) >> drop)
        return (left << h) | right

    def __call__(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The images of ``indices`` (any shape), as int64."""
        i = np.asarray(indices, dtype=np.int64)
        if i.size and (i.min() < 0 or i.max() >= self.n):
            raise IndexError(f"indices outside [0, {self.n})")
        if self.n <= 1:
            return i.copy()
        x = self._words(i.astype(np.uint64).ravel())
        walking = np.flatnonzero(x >= self.n)
        while walking.size:
            x[walking] = self._words(x[walking])
            walking = walking[x[walking] >= self.n]
        return x.astype(np.int64).reshape(i.shape)


def permuted_index(i: int, n: int, seed: int, epoch: int) -> int:
    """Position ``i``'s element in epoch ``epoch``'s permutation of [0, n) (see :class:`FeistelPermutation`)."""
    return int(FeistelPermutation(n, seed, epoch)(np.asarray([i]))[0])


def permuted_indices(start: int, stop: int, n: int, seed: int, epoch: int) -> np.ndarray:
    """Positions [start, stop) of the permutation, vectorised: ``permuted_index`` of each, as int64."""
    return FeistelPermutation(n, seed, epoch)(np.arange(start, stop, dtype=np.int64))


def sample_mask_seeds(seed: int, epoch: int, samples: np.ndarray) -> np.ndarray:
    """The mask seed (63 bits, as uint64) of each sample index of ``epoch``: a keyed splitmix64 hash
    of the index, keys from ``SeedSequence([seed, epoch])``. It depends on nothing else: not on the
    process that draws the sample, nor on how many there are, nor on what was drawn before."""
    k0, k1 = _seed_words(seed, epoch, (_MASK_KEY,), 2)
    return _mix64(_mix64(np.asarray(samples, dtype=np.int64).astype(np.uint64) ^ k0) + k1) >> np.uint64(1)


# -- shards and row indices -----------------------------------------------------------------------------------
class ShardLike(Protocol):
    """What a shard reader provides: the shard's token ids (a 1-D array, typically a read-only memmap
    of uint16 / uint32), and, for sentence or document rows, start offsets within the shard."""

    @property
    def tokens(self) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays
class TokenShard:
    """One shard as this module reads it: ``tokens``, and optionally the int64 offsets (sorted, within
    the shard) at which its documents and its sentences start. Documents never straddle shards."""

    tokens: np.ndarray
    document_starts: np.ndarray | None = None
    sentence_starts: np.ndarray | None = None

    @classmethod
    def of(cls, shard: ShardLike | np.ndarray) -> TokenShard:
        """A shard from a token array, or from any object with ``.tokens`` (and, if it has them,
        ``.document_starts`` / ``.sentence_starts``); the arrays are referenced, never copied."""
        if isinstance(shard, TokenShard):
            return shard
        if isinstance(shard, np.ndarray):
            return cls(shard)
        return cls(shard.tokens, getattr(shard, "document_starts", None), getattr(shard, "sentence_starts", None))


def _cumulative(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _as_rows(rows: np.ndarray | Sequence[int] | int, total: int) -> np.ndarray:
    r = np.asarray(rows, dtype=np.int64)
    if r.size and (r.min() < 0 or r.max() >= total):
        raise IndexError(f"row indices outside [0, {total})")
    return r


class BlockIndex:
    """Rows of ``seq_len`` consecutive tokens inside each shard; a shard's last ``count % seq_len``
    tokens are dropped (rows never straddle shards). Built from the shards' token counts alone:
    its memory is ``cumulative``, one int64 per shard plus one."""

    def __init__(self, token_counts: Sequence[int] | np.ndarray, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        counts = np.asarray(token_counts, dtype=np.int64).reshape(-1)
        if (counts < 0).any():
            raise ValueError("token counts must be >= 0")
        self.seq_len = int(seq_len)
        self.token_counts = counts
        self.cumulative = _cumulative(counts // seq_len)  # blocks before each shard; [-1]: all of them

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    @property
    def nbytes(self) -> int:
        return int(self.cumulative.nbytes + self.token_counts.nbytes)

    def locate(self, blocks: np.ndarray | Sequence[int] | int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, token offset within it) of each block, shaped like ``blocks``."""
        b = _as_rows(blocks, len(self))
        shard = np.searchsorted(self.cumulative, b, side="right") - 1  # skips shards with no block
        return shard, (b - self.cumulative[shard]) * self.seq_len

    def spans(self, rows: np.ndarray | Sequence[int] | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, token offset, length) of each row: the interface the stream reads both indices by."""
        shard, offset = self.locate(rows)
        return shard, offset, np.full(np.shape(offset), self.seq_len, dtype=np.int64)


class UnitIndex:
    """Rows of one unit each (a sentence or a document); a unit longer than ``seq_len`` tokens is cut
    into consecutive pieces of ``seq_len`` (the last one shorter), each a row of its own.

    Unit u of a shard spans [starts[u], starts[u + 1]) (the last one, to the shard's end): exactly
    the tokens the shard holds there, so a document's row ends with its [SEP] as blocks see it, and
    the last sentence of each document too (``sentence_starts`` must hold every document's start,
    which is checked when ``boundaries`` are given). Tokens before a shard's first start belong to no row.

    Memory: the start arrays are referenced, not copied (memmaps stay on disk, read G * B entries at a
    time), plus ``unit_cumulative`` (O(shards)) and three int64 per unit longer than seq_len, so
    that row -> unit is a binary search; a corpus whose units all fit in seq_len costs O(shards).
    Building it reads every start array once (O(units) time, O(units of one shard) scratch).
    """

    def __init__(self, token_counts: Sequence[int] | np.ndarray, unit_starts: Sequence[np.ndarray], seq_len: int,
                 boundaries: Sequence[np.ndarray | None] | None = None):
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        counts = np.asarray(token_counts, dtype=np.int64).reshape(-1)
        if len(counts) != len(unit_starts):
            raise ValueError(f"{len(counts)} token counts for {len(unit_starts)} start arrays")
        self.seq_len = int(seq_len)
        self.token_counts = counts
        self.starts = [np.asarray(s) for s in unit_starts]  # views: no copy
        self.unit_cumulative = _cumulative(np.asarray([len(s) for s in self.starts], dtype=np.int64))
        long_units, extra = [], []
        for shard, starts in enumerate(self.starts):
            if not len(starts):
                continue
            st = np.asarray(starts, dtype=np.int64)
            lengths = np.diff(st, append=counts[shard])
            if st[0] < 0 or (lengths <= 0).any():
                raise ValueError(f"shard {shard}: unit starts must increase strictly within [0, "
                                 f"{counts[shard]}), the shard's token count")
            if boundaries is not None and boundaries[shard] is not None and len(boundaries[shard]):
                must = np.asarray(boundaries[shard], dtype=np.int64)
                at = np.minimum(np.searchsorted(st, must), len(st) - 1)
                if (st[at] != must).any():
                    raise ValueError(f"shard {shard}: a document starts where no sentence does; sentence "
                                     "starts must include every document start")
            long = np.flatnonzero(lengths > seq_len)
            long_units.append(long + self.unit_cumulative[shard])
            extra.append((lengths[long] - 1) // seq_len)
        long_unit = np.concatenate(long_units) if long_units else np.zeros(0, np.int64)
        extra_pieces = np.concatenate(extra) if extra else np.zeros(0, np.int64)
        extra_before = _cumulative(extra_pieces)
        self._long_unit = long_unit  # global unit index of each long unit, increasing
        self._long_first = long_unit + extra_before[:-1]  # its first row
        self._long_after = extra_before[1:]  # extra rows of long units up to and including it
        self.num_units = int(self.unit_cumulative[-1])
        self._rows = self.num_units + int(extra_before[-1])

    def __len__(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        """Bytes this index holds itself (the referenced start arrays not counted)."""
        own = (self.token_counts, self.unit_cumulative, self._long_unit, self._long_first, self._long_after)
        return int(sum(a.nbytes for a in own))

    def units(self, rows: np.ndarray | Sequence[int] | int) -> tuple[np.ndarray, np.ndarray]:
        """(global unit index, piece number within the unit) of each row."""
        p = _as_rows(rows, len(self))
        unit, piece = p.copy(), np.zeros_like(p)
        j = np.searchsorted(self._long_first, p, side="right") - 1  # the last long unit starting at or before
        after = j >= 0
        if after.any():
            jj, pa = j[after], p[after]
            first = self._long_first[jj]
            pieces = self._long_after[jj] - (first - self._long_unit[jj]) + 1
            inside = pa < first + pieces
            unit[after] = np.where(inside, self._long_unit[jj], pa - self._long_after[jj])
            piece[after] = np.where(inside, pa - first, 0)
        return unit, piece

    def spans(self, rows: np.ndarray | Sequence[int] | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, token offset, length) of each row (length <= seq_len)."""
        unit, piece = self.units(rows)
        shard = np.searchsorted(self.unit_cumulative, unit, side="right") - 1
        local = unit - self.unit_cumulative[shard]
        start, end = np.empty_like(unit), np.empty_like(unit)
        flat_shard, flat_local = shard.reshape(-1), local.reshape(-1)
        order = np.argsort(flat_shard, kind="stable")
        groups, first = np.unique(flat_shard[order], return_index=True)
        for s, a, b in zip(groups, first, [*first[1:], len(order)], strict=True):
            where = order[a:b]
            loc = flat_local[where]
            starts = self.starts[s]
            start.reshape(-1)[where] = starts[loc]
            following = np.minimum(loc + 1, len(starts) - 1)
            end.reshape(-1)[where] = np.where(loc + 1 < len(starts), starts[following], self.token_counts[s])
        offset = start + piece * self.seq_len
        return shard, offset, np.minimum(end - offset, self.seq_len)


# -- the stream --------------------------------------------------------------------------------------------------
def row_index(shards: Sequence[TokenShard], seq_len: int, rows: RowMode) -> BlockIndex | UnitIndex:
    """The index of ``rows`` over ``shards`` (ValueError if a unit mode lacks the shards' offsets)."""
    if rows not in ROW_MODES:
        raise ValueError(f"rows must be one of {ROW_MODES}, got {rows!r}")
    counts = [len(s.tokens) for s in shards]
    if rows == "blocks":
        return BlockIndex(counts, seq_len)
    field = "sentence_starts" if rows == "sentences" else "document_starts"
    starts = [getattr(s, field) for s in shards]
    missing = [i for i, s in enumerate(starts) if s is None]
    if missing:
        raise ValueError(f"rows={rows!r} needs every shard's {field}; shard {missing[0]} has none")
    bounds = [s.document_starts for s in shards] if rows == "sentences" else None
    return UnitIndex(counts, starts, seq_len, bounds)  # type: ignore[arg-type]


def _special(mask_id: int, pad_id: int, special_ids: Sequence[int] | None) -> SpecialIds:
    ids = tuple(range(NUM_SPECIAL)) if special_ids is None else tuple(special_ids)
    if pad_id not in ids:
        raise ValueError(f"the padding id {pad_id} must be one of the special ids {sorted(ids)} (never masked)")
    return SpecialIds(mask_id, ids)


class ShardBlockStream(EpochPosition):
    """Epochs of masked-LM batches over token shards; ``next()`` returns this process's rows only.

    Rows (``rows``): ``"blocks"`` of seq_len tokens (:class:`BlockIndex`), or one ``"sentences"`` /
    ``"documents"`` unit per row (:class:`UnitIndex`; needs every shard's ``sentence_starts`` /
    ``document_starts``), padded with ``pad_id`` (attention 0, labels IGNORE_INDEX).

    Epoch e visits rows in the order of ``FeistelPermutation(len(index), seed, e)``; its
    ``len(index) % batch_size`` last positions sit it out. Blocks: global batch k is positions
    [k * B, (k + 1) * B). Units: positions are cut into buckets of ``bucket_batches`` batches, rows
    sorted by length inside a bucket (stable) and cut into batches, which are taken in a seeded order
    within the bucket; as :class:`~probformer.data.sentence_rows.BucketedStream`, but with batches
    shuffled within a bucket rather than over the epoch, so that each bucket is sorted once. A
    batch's rows are padded to its longest row over all processes (rounded up to a multiple of
    ``pad_to_multiple_of``, never beyond seq_len).

    Row r of global batch k is sample k * B + r of its epoch; its masks come from
    :func:`sample_mask_seeds`. The state is (epoch, index), as TrainStream's.

    ``mask_id`` replaces chosen tokens; ``special_ids`` (default: probformer's 0..4) are never chosen
    nor drawn as random replacements, and must include ``pad_id`` and ``mask_id``.
    """

    def __init__(self, shards: Sequence[ShardLike | np.ndarray], seq_len: int, batch_size: int,
                 mask_style: MaskStyle, mask_prob: float, vocab_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, *, rows: RowMode = "blocks", bucket_batches: int = 50,
                 pad_to_multiple_of: int = 1, pad_id: int = PAD_ID, mask_id: int = MASK_ID,
                 special_ids: Sequence[int] | None = None):
        if rows not in ROW_MODES:
            raise ValueError(f"rows must be one of {ROW_MODES}, got {rows!r}")
        if mask_style not in MASK_STYLES:
            raise ValueError(f"mask style must be one of {MASK_STYLES}, got {mask_style!r}")
        self.special = _special(mask_id, pad_id, special_ids)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of world_size={world_size} processes")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} does not split over {world_size} processes; make it a "
                             f"positive multiple of {world_size}")
        if bucket_batches < 1 or pad_to_multiple_of < 1:
            raise ValueError(f"bucket_batches and pad_to_multiple_of must be positive, got {bucket_batches}, "
                             f"{pad_to_multiple_of}")
        self.shards = [TokenShard.of(s) for s in shards]
        self.seq_len, self.batch_size, self.rows = int(seq_len), int(batch_size), rows
        self.mask_style, self.mask_prob, self.vocab_size, self.seed = mask_style, mask_prob, vocab_size, int(seed)
        self.rank, self.world_size, self.local_batch_size = rank, world_size, batch_size // world_size
        self.bucket_batches, self.pad_to_multiple_of, self.pad_id = bucket_batches, pad_to_multiple_of, pad_id
        self.row_index: BlockIndex | UnitIndex = row_index(self.shards, seq_len, rows)
        if len(self.row_index) < batch_size:
            raise ValueError(f"only {len(self.row_index)} training rows ({rows}, seq_len={seq_len}), fewer than "
                             f"batch_size={batch_size}")
        self._enter_epoch(0)
        self._order = FeistelPermutation(len(self.row_index), self.seed, 0)
        self._bucket: tuple[int, int, np.ndarray, np.ndarray] | None = None  # (epoch, bucket, rows by length, slots)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.row_index) // self.batch_size

    def _permutation(self, epoch: int) -> FeistelPermutation:
        if self._order.epoch != epoch:
            self._order = FeistelPermutation(len(self.row_index), self.seed, epoch)
        return self._order

    def plan(self, epoch: int, k: int) -> np.ndarray:
        """The row indices of global batch ``k`` of ``epoch``, in row order: a function of
        (seed, epoch, k) and the index alone."""
        if not 0 <= k < self.batches_per_epoch:
            raise IndexError(f"batch {k} of an epoch of {self.batches_per_epoch}")
        B, order = self.batch_size, self._permutation(epoch)
        if self.rows == "blocks":
            return order(np.arange(k * B, (k + 1) * B, dtype=np.int64))
        G = self.bucket_batches
        bucket, slot = divmod(k, G)
        if self._bucket is None or self._bucket[:2] != (epoch, bucket):
            batches = min(G, self.batches_per_epoch - bucket * G)
            members = order(np.arange(bucket * G * B, (bucket * G + batches) * B, dtype=np.int64))
            lengths = self.row_index.spans(members)[2]
            by_length = members[np.argsort(lengths, kind="stable")]
            bucket_seed = np.random.SeedSequence(epoch_order_seed(self.seed, epoch), spawn_key=(_BUCKET_KEY, bucket))
            slots = np.random.default_rng(bucket_seed).permutation(batches)
            self._bucket = (epoch, bucket, by_length, slots)
        start = int(self._bucket[3][slot]) * B
        return self._bucket[2][start : start + B]

    def next(self) -> RankBatch:
        if self.index >= self.batches_per_epoch:
            self._enter_epoch(self.epoch + 1)
        shard, offset, length = self.row_index.spans(self.plan(self.epoch, self.index))
        b = self.local_batch_size
        mine = slice(self.rank * b, (self.rank + 1) * b)
        samples = self.index * self.batch_size + np.arange(self.batch_size)[mine]
        seeds = sample_mask_seeds(self.seed, self.epoch, samples)
        batch = self._read(shard[mine], offset[mine], length[mine], self._width(int(length.max())), seeds)
        batch.global_num_tokens = int(length.sum())
        self.index += 1
        return batch

    def _width(self, longest: int) -> int:
        m = self.pad_to_multiple_of
        return max(longest, min(-(-longest // m) * m, self.seq_len))

    def _read(self, shard: np.ndarray, offset: np.ndarray, length: np.ndarray, width: int,
              seeds: np.ndarray) -> RankBatch:
        rows = len(shard)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
        for r in range(rows):
            start, n = int(offset[r]), int(length[r])
            ids = torch.from_numpy(np.asarray(self.shards[int(shard[r])].tokens[start : start + n], dtype=np.int64))
            generator = torch.Generator().manual_seed(int(seeds[r]))
            inputs, targets = mask_tokens(ids, self.mask_style, self.mask_prob, self.vocab_size, generator,
                                          self.special, at_least_one=False)
            input_ids[r, :n], attention_mask[r, :n], labels[r, :n] = inputs, 1, targets
        return RankBatch(input_ids, attention_mask, labels)


# -- evaluation --------------------------------------------------------------------------------------------------
def eval_row_batches(shards: Sequence[ShardLike | np.ndarray], seq_len: int, batch_size: int, mask_style: MaskStyle,
                     mask_prob: float, vocab_size: int, seed: int, max_batches: int | None = None, *,
                     rows: RowMode = "blocks", pad_id: int = PAD_ID, mask_id: int = MASK_ID,
                     special_ids: Sequence[int] | None = None) -> list[Batch]:
    """A split's fixed-mask evaluation batches in row mode ``rows``: its rows in index order (shard by
    shard; no shuffling), ``batch_size`` per batch (the last one may be smaller), the first
    ``max_batches`` of them (None: all). Batch b is padded to its longest row with ``pad_id``
    (attention 0) and masked once, whole, with the generator seeded :func:`eval_mask_seed` (seed, b),
    as :func:`probformer.data.batches.eval_batches` masks blocks; special ids, padding included, are
    never chosen, so padding is never scored. For blocks of a single shard the batches are exactly
    ``eval_batches`` of that shard's blocks. Reads only the rows it returns."""
    special = _special(mask_id, pad_id, special_ids)
    index = row_index([TokenShard.of(s) for s in shards], seq_len, rows)
    token_arrays = [TokenShard.of(s).tokens for s in shards]
    total = len(index) if max_batches is None else min(len(index), max_batches * batch_size)
    out = []
    for b, start in enumerate(range(0, total, batch_size)):
        shard, offset, length = index.spans(np.arange(start, min(start + batch_size, total), dtype=np.int64))
        width = int(length.max())
        ids = np.full((len(shard), width), pad_id, dtype=np.int64)
        attention = torch.zeros((len(shard), width), dtype=torch.long)
        for r in range(len(shard)):
            o, n = int(offset[r]), int(length[r])
            ids[r, :n] = token_arrays[int(shard[r])][o : o + n]
            attention[r, :n] = 1
        generator = torch.Generator().manual_seed(eval_mask_seed(seed, b))
        inputs, labels = mask_tokens(torch.from_numpy(ids), mask_style, mask_prob, vocab_size, generator, special)
        out.append(Batch(inputs, attention, labels))
    return out


# -- prefetching ----------------------------------------------------------------------------------------------
class _Stream(Protocol):
    def next(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Prefetcher:
    """``stream.next()`` on a background thread, up to ``depth`` batches ahead (plus the one being
    prepared), handed out in order.

    ``state_dict()`` is the stream's state after the last batch handed out, so a checkpoint taken
    while batches wait in the queue resumes with the first of them. ``load_state_dict`` stops the
    thread, rewinds the stream and starts again; ``close()`` stops the thread and leaves the stream
    at the handed-out state. An exception raised by the stream is raised again by the ``next()``
    that would have returned that batch. Only this object may touch the stream while it runs.
    """

    _POLL_S = 0.05

    def __init__(self, stream: _Stream, depth: int = 1):
        if depth < 1:
            raise ValueError(f"depth must be positive, got {depth}")
        self.stream, self.depth = stream, depth
        self._state = stream.state_dict()
        self._closed = False
        self._start()

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(self._queue, self._stop), name="batch-prefetch",
                                        daemon=True)
        self._thread.start()

    def _work(self, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item: tuple[Any, dict | None, BaseException | None] = (self.stream.next(), self.stream.state_dict(),
                                                                       None)
            except BaseException as err:  # handed to next(), which raises it in the training thread
                item = (None, None, err)
            while not stop.is_set():
                try:
                    out.put(item, timeout=self._POLL_S)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join()
        self.stream.load_state_dict(self._state)  # drop what was prepared ahead

    def next(self) -> Any:
        if self._closed:
            raise RuntimeError("the prefetcher is closed")
        while True:
            try:
                batch, state, err = self._queue.get(timeout=self._POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread stopped without a batch") from None
        if err is not None:
            self._closed = True
            self._thread.join()
            raise err
        self._state = state
        return batch

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        if self._closed:
            raise RuntimeError("the prefetcher is closed")
        self._halt()
        self.stream.load_state_dict(state)
        self._state = self.stream.state_dict()
        self._start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._halt()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- measurement ------------------------------------------------------------------------------------------------
def loader_footprint(num_tokens: int, seq_len: int, shards: int, batch_size: int = 8) -> dict[str, float]:
    """What a block stream over ``num_tokens`` tokens in ``shards`` equal shards costs to build, and
    to draw one batch from: seconds and the peak of memory allocated through Python (tracemalloc, which
    sees numpy's buffers). The shards are fakes given by their counts alone: one repeated token each
    (``np.broadcast_to``, no memory), so the figures are the loader's own. ``order_array_bytes``
    is what TrainStream's per-epoch order would hold for the same blocks."""
    per, extra = divmod(int(num_tokens), int(shards))
    counts = [per + (i < extra) for i in range(shards)]
    fakes = [np.broadcast_to(np.uint16(NUM_SPECIAL), (c,)) for c in counts]
    tracemalloc.start()
    try:
        began = time.perf_counter()
        stream = ShardBlockStream(fakes, seq_len, batch_size, "bert", 0.15, NUM_SPECIAL + 1, seed=0)
        built = time.perf_counter()
        _, construct_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        stream.next()
        drawn = time.perf_counter()
        _, batch_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    blocks = len(stream.row_index)
    return {"tokens": float(num_tokens), "blocks": float(blocks), "shards": float(shards),
            "construct_seconds": built - began, "construct_peak_bytes": float(construct_peak),
            "first_batch_seconds": drawn - built, "first_batch_peak_bytes": float(batch_peak),
            "index_bytes": float(stream.row_index.nbytes), "order_array_bytes": float(8 * blocks)}
