"""A :class:`Run`: everything the training loop reads, built once before its first step.

The model side (model, parallelized objective, optimizer groups, schedule) comes from build.py;
here it is joined with the data side (the training stream, the evaluation sets with their fixed
masks, unigram log-probabilities) and the exporter that writes checkpoints and the model. The
order of construction is the order of RNG use, so it must not change: the model's initial weights
are drawn first, from ``config.seed``, on every process alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probformer.config import ConfigError, TrainConfig
from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.errors import DataError
from probformer.data.prepared import PreparedCorpus
from probformer.data.tokenization import NUM_SPECIAL
from probformer.training import distributed
from probformer.training.build import TrainingSetup, build_training, corpus_for, reapply_group_hyperparameters
from probformer.training.checkpoint import CheckpointError
from probformer.training.device import autocast_for, resolve_device, uses_bf16
from probformer.training.export import RunExporter

# Evaluation masks are drawn from fixed seeds, independent of the training seed, so that every run
# of one tokenizer (any seed, width or architecture) is scored on the same masked targets and the
# losses compare directly. Changing one changes every recorded valid / eval / test number.
VALID_MASK_SEED = 1234
EVAL_TEXT_MASK_SEED = 2468  # every eval_texts entry: each is scored whole, so one seed serves them all
TEST_MASK_SEED = 4321

VALID = "valid"  # the metrics kind of the held-out split; eval_texts entries are "eval_<name>"


@dataclass
class Run:
    """What every step reads; built once by :func:`build_run`, then changed only by training."""

    config: TrainConfig
    context: distributed.ProcessContext
    device: torch.device
    bf16: bool
    autocast: Callable[[], AbstractContextManager]
    corpus: PreparedCorpus
    setup: TrainingSetup  # model, wrapped objective, optimizer with its groups, schedule
    stream: TrainStream
    evaluations: dict[str, list[Batch]]  # metrics kind -> fixed-mask batches, scored at every evaluation
    unigram_logp: np.ndarray
    train_unigram_loss: float  # the unigram loss per masked training token: the training loss's baseline
    exporter: RunExporter

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def total_steps(self) -> int:
        return self.config.total_steps

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.setup.model.parameters())  # FSDP2's DTensor shards report the full numel

    @property
    def tokens_per_step(self) -> int:
        return self.config.batch_size * self.config.grad_accum * self.config.data.seq_len

    def test_batches(self) -> list[Batch]:
        d = self.config.data
        return eval_batches(self.corpus.blocks("test", d.seq_len), self.config.batch_size, d.mask_style,
                            d.resolved_mask_prob, self.corpus.vocab_size, seed=TEST_MASK_SEED,
                            max_batches=self.config.eval_batches)

    def info(self) -> dict[str, Any]:
        """The first metrics record of a fresh run."""
        return {"parameters": self.parameters, "total_steps": self.total_steps, "device": str(self.device),
                "train_tokens": len(self.corpus.streams["train"]), "bf16": self.bf16,
                "processes": self.context.world_size, "distributed": self.context.mode}

    def describe(self) -> str:
        """One line: architecture, size, parametrization, steps and where they run."""
        c, context = self.config, self.context
        return (f"{c.model['arch']} model: {self.parameters:,} parameters, {c.model.get('parametrization', 'mup')}; "
                f"{self.total_steps} steps of {c.batch_size * c.grad_accum} x {c.data.seq_len} tokens on {self.device}"
                + (f" x {context.world_size} processes ({context.mode})" if context.distributed else ""))


@dataclass
class Progress:
    """Where the loop stands; a checkpoint saves it (with ``last_valid``) beside the modules' states."""

    step: int = 0
    tokens_seen: int = 0
    last: dict[str, dict[str, float]] = field(default_factory=dict)  # metrics kind -> its latest evaluation
    loss_window: dict[str, Any] | None = None  # the training-loss window a checkpoint saved (trainer.LossWindow)

    @property
    def last_valid(self) -> dict[str, float] | None:
        return self.last.get(VALID)


def build_run(config: TrainConfig, context: distributed.ProcessContext, log: Callable[[str], None],
              tokenizer_json: bytes | None = None) -> Run:
    """Device, corpus (rank 0 builds the cache first), model side, data side, exporter.

    ``tokenizer_json``: the tokenizer to train with (a resumed checkpoint's); default: the cache's."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, context.local_rank if context.distributed else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bf16 = uses_bf16(config.precision, device)
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} sequences do not split over {context.world_size} "
                          f"processes; make it a multiple of {context.world_size}")
    with distributed.main_process_first(context):
        corpus = corpus_for(config, log, tokenizer_json)
    blocks = training_blocks(config, corpus)
    setup = build_training(config, corpus, context, device)
    d = config.data
    stream = TrainStream(blocks, config.batch_size, d.mask_style, d.resolved_mask_prob, corpus.vocab_size, config.seed)
    return Run(config, context, device, bf16, autocast_for(device, bf16), corpus, setup, stream,
               evaluation_sets(config, corpus), corpus.unigram_log_probs(), train_unigram_loss(corpus),
               RunExporter(Path(config.out_dir), setup, context, config, corpus))


def training_blocks(config: TrainConfig, corpus: PreparedCorpus) -> np.ndarray:
    """The training split's blocks, if a batch can be drawn from them and they hold a token to predict."""
    counts = corpus.unigram_counts
    if not counts[NUM_SPECIAL:].any():
        raise DataError(f"the training split of {config.data.source!r} holds no token to predict: "
                        f"{corpus.unk_fraction:.1%} of its tokens are [UNK] (text without spaces between words? "
                        "segment it into words first)")
    blocks = corpus.blocks("train", config.data.seq_len)
    if len(blocks) < config.batch_size:
        raise ConfigError(f"batch_size: the training split has {len(blocks)} blocks of data.seq_len="
                          f"{config.data.seq_len} tokens ({len(corpus.streams['train']):,} tokens), fewer than "
                          f"batch_size={config.batch_size}; lower batch_size or data.seq_len, or train on more text")
    return blocks


def train_unigram_loss(corpus: PreparedCorpus) -> float:
    """The mean unigram loss of a masked training token (special tokens are never masked)."""
    counts = corpus.unigram_counts[NUM_SPECIAL:].astype(np.float64)
    return float(-(counts * corpus.unigram_log_probs()[NUM_SPECIAL:]).sum() / counts.sum())


def evaluation_sets(config: TrainConfig, corpus: PreparedCorpus) -> dict[str, list[Batch]]:
    """The validation split (its first ``eval_batches``), then every ``eval_texts`` entry whole
    (e.g. out-of-domain text), each under its metrics kind."""
    d = config.data

    def batches(blocks: np.ndarray, seed: int, max_batches: int | None) -> list[Batch]:
        return eval_batches(blocks, config.batch_size, d.mask_style, d.resolved_mask_prob, corpus.vocab_size,
                            seed=seed, max_batches=max_batches)

    sets = {VALID: batches(corpus.blocks("valid", d.seq_len), VALID_MASK_SEED, config.eval_batches)}
    for name, path in config.eval_texts.items():
        sets[f"eval_{name}"] = batches(corpus.text_blocks(path, d.seq_len, d.text_field), EVAL_TEXT_MASK_SEED, None)
    return sets


def resume_from(run: Run, checkpoint: Path, log: Callable[[str], None]) -> Progress:
    """Load ``checkpoint`` into the run (weights, optimizer, schedule, RNG, data position, loss window)."""
    state = run.exporter.restore(checkpoint)
    if state.get("tokenizer_sha256") != run.corpus.tokenizer_sha256:
        # Only a checkpoint of an older version, which holds no copy of its tokenizer, can get here (the
        # run is built on the checkpoint's own tokenizer otherwise): the model would read other ids.
        raise CheckpointError(f"checkpoint {checkpoint} was trained with a different tokenizer than the corpus cache "
                              f"{run.corpus.root} now holds, and holds no copy of it; point data.cache_dir at the "
                              "original cache")
    reapply_group_hyperparameters(run.setup)
    try:
        progress = Progress(int(state["step"]), int(state["tokens_seen"]), loss_window=state.get("loss_window"))
        if state.get("last_valid") is not None:
            progress.last[VALID] = state["last_valid"]
        run.stream.load_state_dict(state["data"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {checkpoint / 'trainer_state.json'} is corrupt "
                              f"({type(err).__name__}: {err})") from None
    log(f"resumed from {checkpoint} at step {progress.step}")
    return progress
