"""Batches of masked blocks: a resumable training stream and fixed-mask evaluation batches; and
:class:`RankShards`, which gives a stream that draws whole global batches the per-process interface
of the shard loader (this process's rows plus the global batch's real-token count)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from probformer.data.masking import DEFAULT_SPECIAL_IDS, MaskStyle, SpecialIds, mask_tokens


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, n)
    attention_mask: torch.Tensor  # (B, n)
    labels: torch.Tensor  # (B, n), -100 where not scored

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.labels)))

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def num_scored(self) -> int:
        return int((self.labels != -100).sum())

    def shard(self, rank: int, world_size: int) -> Batch:
        """Process ``rank``'s rows of a global micro-batch, by global sample index: rows
        [rank * b, (rank + 1) * b) with b = B / world_size. The masks were drawn for the whole global
        batch, so K processes see exactly the samples and masks one process would."""
        rows = self.input_ids.shape[0]
        if rows % world_size:
            raise ValueError(f"a micro-batch of {rows} sequences does not split over {world_size} processes; "
                             f"make batch_size a multiple of {world_size}")
        b = rows // world_size
        part = slice(rank * b, (rank + 1) * b)
        return Batch(self.input_ids[part], self.attention_mask[part], self.labels[part])


# Seed mixers: each batch's masks (and each epoch's order) come from its own seed, derived from the run
# seed and the batch's position alone, so that a resumed run, or a run on another number of processes,
# draws exactly the same masks for the same batch. Changing any of them changes every number reported.
def epoch_order_seed(seed: int, epoch: int) -> list[int]:
    """The seed of an epoch's block permutation (numpy's SeedSequence mixes the pair)."""
    return [seed, epoch]


def train_mask_seed(seed: int, epoch: int, index: int) -> int:
    """The mask seed of training batch ``index`` of ``epoch``: a SeedSequence hash of the three."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


EVAL_SEED_STRIDE = 100_003  # a prime larger than any evaluation's batch count: batch seeds of two eval seeds never meet


def eval_mask_seed(seed: int, batch: int) -> int:
    """The mask seed of evaluation batch ``batch`` under the evaluation set's ``seed``."""
    return seed * EVAL_SEED_STRIDE + batch


def _masked_batch(rows: np.ndarray, style: MaskStyle, mask_prob: float, vocab_size: int, seed: int,
                  special: SpecialIds = DEFAULT_SPECIAL_IDS) -> Batch:
    ids = torch.from_numpy(rows.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = mask_tokens(ids, style, mask_prob, vocab_size, generator, special)
    return Batch(inputs, torch.ones_like(inputs), labels)


class EpochPosition:
    """The whole state of a seeded epoch-by-epoch stream: (epoch, index within it), saved with the seed.

    A stream draws each epoch's order from (seed, epoch) alone, so these two integers put a resumed
    stream exactly where the interrupted one was; the seed is saved to refuse a state of another
    stream. A stream keeps an epoch's order (if it holds one) up to date in :meth:`_enter_epoch`."""

    seed: int
    epoch: int = 0
    index: int = 0

    def _enter_epoch(self, epoch: int) -> None:
        self.epoch, self.index = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"the saved stream has seed {state['seed']}, this one {self.seed}")
        self._enter_epoch(int(state["epoch"]))
        self.index = int(state["index"])


class TrainStream(EpochPosition):
    """Epochs of seeded block permutations; masks drawn from a per-batch seed.

    The whole state is two integers (epoch, index within it), so a resumed run sees exactly the
    batches the interrupted one would have seen.
    """

    def __init__(self, blocks: np.ndarray, batch_size: int, style: MaskStyle, mask_prob: float, vocab_size: int,
                 seed: int, special: SpecialIds = DEFAULT_SPECIAL_IDS):
        if len(blocks) < batch_size:
            raise ValueError(f"only {len(blocks)} training blocks, fewer than batch_size={batch_size}")
        self.blocks, self.batch_size = blocks, batch_size
        self.style, self.mask_prob, self.vocab_size, self.seed = style, mask_prob, vocab_size, seed
        self.special = special
        self._enter_epoch(0)

    def _enter_epoch(self, epoch: int) -> None:
        super()._enter_epoch(epoch)
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(epoch_order_seed(self.seed, epoch)).permutation(len(self.blocks))

    @property
    def batches_per_epoch(self) -> int:
        return len(self.blocks) // self.batch_size

    def next(self) -> Batch:
        if self.index >= self.batches_per_epoch:
            self._enter_epoch(self.epoch + 1)
        rows = self.blocks[np.sort(self._order[self.index * self.batch_size : (self.index + 1) * self.batch_size])]
        mask_seed = train_mask_seed(self.seed, self.epoch, self.index)
        self.index += 1
        return _masked_batch(rows, self.style, self.mask_prob, self.vocab_size, mask_seed, self.special)


def eval_batches(
    blocks: np.ndarray, batch_size: int, style: MaskStyle, mask_prob: float, vocab_size: int, seed: int,
    max_batches: int | None = None, special: SpecialIds = DEFAULT_SPECIAL_IDS,
) -> list[Batch]:
    """Every block in order, masked once with masks fixed by ``seed`` (same masks in every evaluation)."""
    out = []
    for b, start in enumerate(range(0, len(blocks), batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        out.append(_masked_batch(blocks[start : start + batch_size], style, mask_prob, vocab_size,
                                 eval_mask_seed(seed, b), special))
    return out


# -- per-process batches ------------------------------------------------------------------------------
@dataclass
class RankBatch(Batch):
    """This process's rows of a global batch; ``global_num_tokens`` counts the real (unpadded) tokens
    of the whole global batch, every process's rows. What the trainer draws from every stream: it adds
    up tokens seen and tokens/s from it, and trains on the rows."""

    global_num_tokens: int = 0


class GlobalStream(Protocol):
    def next(self) -> Batch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class RankShards:
    """A stream of whole global batches (:class:`TrainStream`, the task rows' ``BucketedStream``) seen
    by one process: ``next()`` draws the global batch, counts its real tokens and returns rows
    [rank * b, (rank + 1) * b) of it (:meth:`Batch.shard`), so K processes see exactly the samples and
    masks one process would. The state is the wrapped stream's."""

    def __init__(self, stream: GlobalStream, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of world_size={world_size} processes")
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def next(self) -> RankBatch:
        batch = self.stream.next()
        mine = batch.shard(self.rank, self.world_size) if self.world_size > 1 else batch
        return RankBatch(mine.input_ids, mine.attention_mask, mine.labels, global_num_tokens=batch.num_tokens)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def close(self) -> None:
        """Nothing to stop (the interface of :class:`~probformer.data.shard_loader.Prefetcher`)."""

    def __getattr__(self, name: str) -> Any:  # batches_per_epoch, epoch, index, ... of the wrapped stream
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)
