"""The masked LM's side of a run: its corpus, model, training stream and fixed-mask evaluations.

One of the two kinds of run data (the other is training/task_data.py); the trainer reads either
through the same methods (:class:`~probformer.training.run.RunData`), so checkpoints, resume,
muP groups, torchrun, metrics and the progress bar are one code path for both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from probformer.config import ConfigError, TrainConfig
from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.errors import DataError
from probformer.data.prepared import PreparedCorpus
from probformer.data.tokenization import NUM_SPECIAL
from probformer.training.build import init_bias_from_unigram, model_from_config
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


class MaskedLMData:
    """A prepared corpus read as masked blocks of ``data.seq_len`` tokens."""

    task = "fill-mask"
    select_by: str | None = None  # the final model is exported, not a best-on-valid one

    def __init__(self, config: TrainConfig, corpus: PreparedCorpus):
        self.config, self.corpus = config, corpus
        self.blocks = training_blocks(config, corpus)
        self.unigram_logp = corpus.unigram_log_probs()
        self.train_unigram_loss = train_unigram_loss(corpus)

    @property
    def tokenizer_json(self) -> bytes:
        return self.corpus.tokenizer_json

    @property
    def tokenizer_sha256(self) -> str:
        return self.corpus.tokenizer_sha256

    @property
    def train_tokens(self) -> int:
        return len(self.corpus.streams["train"])

    def total_steps(self) -> int:
        steps = self.config.total_steps
        assert steps is not None  # an MLM config always counts its steps
        return steps

    def batch_shape(self) -> str:
        c = self.config
        return f"{c.batch_size * c.grad_accum} x {c.data.seq_len} tokens"

    def make_model(self, log: Callable[[str], None]) -> PreTrainedModel:
        model = model_from_config(self.config, self.corpus.vocab_size)
        if self.config.unigram_bias_init:
            init_bias_from_unigram(model, self.corpus)
        return model

    def objective(self, model: nn.Module) -> TrainingObjective:
        return TrainingObjective(model, self.config.optim.ternary_norm_penalty, scored_logits_only=True)

    def stream(self) -> TrainStream:
        c, d = self.config, self.config.data
        return TrainStream(self.blocks, c.batch_size, d.mask_style, d.resolved_mask_prob, self.corpus.vocab_size,
                           c.seed)

    def _batches(self, blocks: np.ndarray, seed: int, max_batches: int | None) -> list[Batch]:
        d = self.config.data
        return eval_batches(blocks, self.config.batch_size, d.mask_style, d.resolved_mask_prob,
                            self.corpus.vocab_size, seed=seed, max_batches=max_batches)

    def evaluation_sets(self) -> dict[str, list[Batch]]:
        """The validation split (its first ``eval_batches``), then every ``eval_texts`` entry whole
        (e.g. out-of-domain text), each under its metrics kind."""
        c, d = self.config, self.config.data
        sets = {VALID: self._batches(self.corpus.blocks("valid", d.seq_len), VALID_MASK_SEED, c.eval_batches)}
        for name, path in c.eval_texts.items():
            sets[f"eval_{name}"] = self._batches(self.corpus.text_blocks(path, d.seq_len, d.text_field),
                                                 EVAL_TEXT_MASK_SEED, None)
        return sets

    def test_set(self) -> list[Batch] | None:
        if not self.config.test_eval:
            return None
        return self._batches(self.corpus.blocks("test", self.config.data.seq_len), TEST_MASK_SEED,
                             self.config.eval_batches)

    def evaluate(self, wrapped: nn.Module, batches: list[Batch], device: torch.device,
                 autocast: Callable[[], AbstractContextManager], context: ProcessContext) -> dict[str, float]:
        return evaluate(wrapped, batches, device, autocast, self.unigram_logp, context)

    def evaluation_line(self, step: int, kind: str, m: dict[str, float]) -> str:
        if kind == VALID:
            return (f"step {step}: valid loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f}), "
                    f"accuracy {m['accuracy']:.3f}, perplexity {m['perplexity']:.1f}")
        return f"step {step}: {kind.removeprefix('eval_')} loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f})"


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
