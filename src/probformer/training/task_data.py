"""A downstream task's side of a run: labelled files, tokenizer, task model, sentence-row batches, metrics.

The other kind of run data beside the masked LM's (training/mlm_data.py); the trainer reads both
through the same methods (training/run.py's ``RunData``), so a task run has the MLM run's
checkpoints, exact resume, muP groups, torchrun, metrics, TensorBoard and progress bar.

What is particular to a task (docs/tasks.md, docs/design.md §9):

- Rows are sentences (data/sentence_rows.py): one per row, padded, length-bucketed; the model's heads
  never cross rows. A token task's label sits on each word's first piece; a text task's on the row.
- The tokenizer is, in this order: a resumed checkpoint's; the ``task.init_from`` run's (its model
  reads those ids); ``task.tokenizer``; else a WordPiece trained on the training file's text. Any
  tokenizer with BERT's special-token names works: the ids of [PAD], [UNK], [CLS], [SEP], [MASK] are
  read from it (data/shards.py's ``special_token_ids``) and go into the model config (pad / mask),
  the rows' padding and [UNK] fallback, and the sentence prefix (models/registry.py).
- ``task.init_from`` starts the encoder (and ROOT, if the run has it) from an MLM run: its model
  fields are the run's, a field the config sets to another width or shape is refused with the reason,
  the MLM read-out is dropped and the task head starts as a fresh one (zero classifier, §9).
- The classifier bias starts at the log label frequencies of train (``unigram_bias_init``), as the
  MLM read-out starts at the log unigram frequencies: step 0 predicts the context-free baseline,
  whose loss (``unigram_loss``) is the divergence rule's baseline.
- Every evaluation scores the whole valid file: ``loss`` and the task's metrics
  (training/task_metrics.py); the trainer exports the model whenever ``select_by`` improves.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel

from probformer.config import ConfigError, TrainConfig, model_fields
from probformer.data.batches import RankShards
from probformer.data.errors import DataError, DataWarning
from probformer.data.masking import IGNORE_INDEX
from probformer.data.prepared import sha256_hex
from probformer.data.sentence_rows import BucketedStream, Row, encode_rows, eval_batches, word_predictions
from probformer.data.shards import special_token_ids
from probformer.data.task_files import LabelledText, TaggedSentence, TaskFormat, read_task_splits
from probformer.data.tokenization import train_wordpiece
from probformer.models import architecture, architecture_of
from probformer.models.registry import find_model_directory
from probformer.training.distributed import ProcessContext, unwrap
from probformer.training.mlm_data import VALID
from probformer.training.objective import TrainingObjective
from probformer.training.task_metrics import main_metric, task_metrics

TEST = "test"
MODEL_FILE = "model.safetensors"
# Above this lr PT's ROOT read-out often stays at the label prior (docs/tasks.md, results/tasks/root_probe.py).
ROOT_LR_WARNING = 3e-3


@dataclass(frozen=True)
class EvalSet:
    """A whole split, encoded once: its rows, their fixed batches and the gold labels per example."""

    name: str
    examples: list[TaggedSentence] | list[LabelledText]
    rows: list[Row]
    batches: list[tuple[np.ndarray, Any]]  # (row indices, Batch)


@dataclass(frozen=True)
class InitSource:
    """The MLM run a task run starts from (``task.init_from``): its model directory's files."""

    directory: Path
    config: dict[str, Any]  # its config.json
    tokenizer_json: bytes

    @classmethod
    def read(cls, path: str) -> InitSource:
        given = Path(path)
        directory = find_model_directory(given)
        if directory is None:
            raise ConfigError(f"task.init_from: {given} holds no model (neither {given}/model/config.json nor "
                              f"{given}/config.json); give the directory of a finished `probformer train` run")
        for name in ("tokenizer.json", MODEL_FILE):
            if not (directory / name).is_file():
                raise ConfigError(f"task.init_from: {directory} has no {name}; it is not a complete exported model")
        try:
            config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"task.init_from: {directory / 'config.json'} does not read as JSON ({err})") from None
        return cls(directory, config, (directory / "tokenizer.json").read_bytes())


class TaskData:
    """A token- or text-classification task on labelled files (module docstring)."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None], tokenizer_json: bytes | None = None):
        self.config, t = config, config.task
        self.task: str = t.name
        self.arch = architecture(config.model["arch"])
        fmt = TaskFormat(t.format or "", column=t.tag_column, text_field=t.text_field, label_field=t.label_field)
        self.splits = read_task_splits(fmt, t.train, t.valid, t.test)
        self.labels = self.splits.labels
        self.init_source = InitSource.read(t.init_from) if t.init_from else None
        self.model_config = self._model_fields(log)
        if tokenizer_json:
            self.tokenizer_json, where = tokenizer_json, "the checkpoint's tokenizer"
        else:
            self.tokenizer_json, where = self._tokenizer_json(log)
        self.tokenizer_sha256 = sha256_hex(self.tokenizer_json)
        tokenizer = _load_tokenizer(self.tokenizer_json, where)
        self.special_ids = special_token_ids(tokenizer, where, needed_by="a task run")  # role -> id
        self.vocab_size = tokenizer.get_vocab_size()
        self.max_len = config.data.seq_len
        max_positions = int(self.model_config.get("max_position_embeddings", self.max_len))
        if self.max_len > max_positions:
            raise ConfigError(f"data.seq_len: {self.max_len} pieces per row, more than the model's "
                              f"max_position_embeddings ({max_positions}); lower data.seq_len")
        prefix = self.arch.input_prefix_ids(self.task, self.special_ids)
        self.rows: dict[str, list[Row]] = {}
        for split, examples, path in (("train", self.splits.train, t.train), (VALID, self.splits.valid, t.valid),
                                      (TEST, self.splits.test, t.test)):
            if examples is not None:
                with warnings.catch_warnings(record=True) as caught:  # said in the run's log, one line each
                    warnings.simplefilter("always", DataWarning)
                    self.rows[split] = encode_rows(examples, tokenizer, self.labels, self.max_len,
                                                   prefix_ids=prefix, source=str(path),
                                                   unk_id=self.special_ids["unk"])
                for warning in caught:
                    log(f"warning: {warning.message}")
        if len(self.rows["train"]) < config.batch_size:
            raise ConfigError(f"batch_size: {t.train} gives {len(self.rows['train'])} training rows, fewer than "
                              f"batch_size={config.batch_size}; lower batch_size")
        counts = np.bincount(_targets(self.rows["train"]), minlength=len(self.labels)).astype(np.float64)
        self.label_log_prior = np.log(counts / counts.sum())  # every label occurs in train: finite
        self.train_unigram_loss = float(-(counts * self.label_log_prior).sum() / counts.sum())
        self.select_by = t.select_by or main_metric(self.task, self.labels.labels)
        self.train_tokens = int(sum(len(row) for row in self.rows["train"]))
        log(f"{self.task}: {len(self.splits.train):,} training examples in {len(self.rows['train']):,} rows "
            f"({self.train_tokens:,} tokens), {len(self.labels)} labels, vocabulary of {self.vocab_size:,}; "
            f"the model with the best valid {self.select_by} is exported")

    # -- tokenizer and model ----------------------------------------------------------------------------
    def _tokenizer_json(self, log: Callable[[str], None]) -> tuple[bytes, str]:
        """The tokenizer.json and what to call it in an error (module docstring's order, less a resumed
        checkpoint's)."""
        t, d = self.config.task, self.config.data
        if self.init_source is not None:
            if t.tokenizer is not None:
                raise ConfigError(f"task.tokenizer: the run task.init_from={t.init_from} brings its own tokenizer, "
                                  "whose ids its encoder reads; leave task.tokenizer out")
            return self.init_source.tokenizer_json, f"task.init_from: {self.init_source.directory / 'tokenizer.json'}"
        if t.tokenizer is not None:
            path = Path(t.tokenizer)
            file = path / "tokenizer.json" if path.is_dir() else path
            if not file.is_file():
                raise ConfigError(f"task.tokenizer: {file} not found (give a tokenizer.json or a directory with one)")
            return file.read_bytes(), f"task.tokenizer: {file}"
        texts = [" ".join(e.words) if isinstance(e, TaggedSentence) else e.text for e in self.splits.train]
        log(f"training a WordPiece tokenizer ({d.vocab_size:,} pieces) on the text of {t.train}")
        return train_wordpiece(texts, d.vocab_size, d.lowercase).to_str().encode("utf-8"), "the trained tokenizer"

    def _model_fields(self, log: Callable[[str], None]) -> dict[str, Any]:
        """The model config's fields: the config's, over the init_from run's (refused where they differ
        in what the run's weights are: shape, muP base, parametrization)."""
        user = {k: v for k, v in self.config.model.items() if k != "arch"}
        defaults = self.arch.task_model_defaults.get(self.task, {})
        source = self.init_source
        if source is None:
            return {**defaults, **user}
        try:
            family = architecture_of(source.config.get("model_type"))
        except ValueError as err:
            raise ConfigError(f"task.init_from: {source.directory}: {err}") from None
        if family.name != self.arch.name:
            raise ConfigError(f"task.init_from: {source.directory} is a {family.name!r} model, this config trains "
                              f"model.arch={self.arch.name!r}; set model.arch={family.name} (an encoder's weights "
                              "only load into its own architecture)")
        mlm_class = family.model_class.__name__
        if mlm_class not in source.config.get("architectures", [mlm_class]):
            raise ConfigError(f"task.init_from: {source.directory} holds a {source.config['architectures']} model, "
                              f"not a masked LM ({mlm_class}); fine-tune from an MLM run")
        run_fields = {k: source.config[k] for k in model_fields(family.name) if k in source.config}
        fixed = (*family.shape_fields, *family.base_fields, "parametrization")
        for key in fixed:
            if key in user and key in run_fields and user[key] != run_fields[key]:
                raise ConfigError(f"task.init_from: the run has model.{key}={run_fields[key]!r}, this config "
                                  f"{user[key]!r}; the encoder's weights are of the run's shape and parametrization "
                                  f"(leave model.{key} out to take the run's)")
        log(f"starting from {source.directory}: its encoder, tokenizer and model fields")
        return {**run_fields, **defaults, **user}

    def make_model(self, log: Callable[[str], None]) -> PreTrainedModel:
        config = self.arch.config_class(vocab_size=self.vocab_size, pad_token_id=self.special_ids["pad"],
                                        mask_token_id=self.special_ids["mask"], num_labels=len(self.labels),
                                        id2label=self.labels.id2label, label2id=self.labels.label2id,
                                        **self.model_config)
        try:
            model = self.arch.task_class(self.task)(config)
        except ValueError as err:  # e.g. classifier_pooling=root without use_root
            raise ConfigError(f"model: {err}") from None
        if self.config.unigram_bias_init:
            with torch.no_grad():
                model.classifier.bias.copy_(torch.from_numpy(self.label_log_prior).to(model.classifier.bias.dtype))
        if self.init_source is not None:
            self._load_encoder(model, log)
        if getattr(config, "classifier_pooling", None) == "root" and self.config.optim.lr > ROOT_LR_WARNING:
            log(f"note: PT's ROOT read-out at lr {self.config.optim.lr:g}: above {ROOT_LR_WARNING:g} the words "
                "can stop choosing ROOT early and the classifier stay at the label prior (SST-2: 55% at 1e-2, "
                "80% at 1e-3; docs/tasks.md); consider optim.lr=1e-3 or model.classifier_pooling=mean")
        return model

    def _load_encoder(self, model: PreTrainedModel, log: Callable[[str], None]) -> None:
        """The init_from run's weights, less its MLM read-out; the task head (and ROOT, if the run had
        none) stays as initialised. Anything else missing, or a shape that differs, is refused."""
        from safetensors.torch import load_file

        source = self.init_source
        assert source is not None
        state = load_file(str(source.directory / MODEL_FILE))
        with torch.device("meta"):  # the run's MLM model, for its parameter names only
            mlm_keys = set(self.arch.model_class(model.config).state_dict())
        own = model.state_dict()
        head = sorted(set(own) - mlm_keys)
        mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                      if k in state and state[k].shape != own[k].shape]
        if mismatched:
            raise ConfigError(f"task.init_from: {source.directory}'s weights do not fit this model: "
                              f"{'; '.join(mismatched[:3])}")
        missing, _unexpected = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        fresh = [k for k in missing if k not in head]
        not_root = [k for k in fresh if not k.startswith("root.")]
        if not_root:
            raise ConfigError(f"task.init_from: {source.directory / MODEL_FILE} lacks encoder weights "
                              f"{not_root[:3]}; it is not a complete model of this architecture")
        log(f"task head starts fresh: {', '.join(head) or '(none)'}"
            + (f"; ROOT starts fresh (the run has none): {', '.join(fresh)}" if fresh else ""))

    def objective(self, model: nn.Module) -> TrainingObjective:
        return TrainingObjective(model, self.config.optim.ternary_norm_penalty, scored_logits_only=False)

    # -- training ---------------------------------------------------------------------------------------
    def stream(self, context: ProcessContext) -> RankShards:
        """The global batches of :class:`BucketedStream`, this process's rows of each."""
        stream = BucketedStream(self.rows["train"], self.config.batch_size, self.config.seed,
                                pad_id=self.special_ids["pad"])
        return RankShards(stream, context.rank, context.world_size)

    def total_steps(self) -> int:
        c = self.config
        steps = c.total_steps
        if steps is not None:
            return steps
        batches = len(self.rows["train"]) // c.batch_size
        if c.task.epochs is not None:
            return max(1, math.ceil(c.task.epochs * batches / c.grad_accum))
        assert c.token_budget is not None
        mean_row = self.train_tokens / len(self.rows["train"])
        return max(1, int(c.token_budget // (c.batch_size * c.grad_accum * mean_row)))

    def batch_shape(self) -> str:
        c = self.config
        return f"{c.batch_size * c.grad_accum} rows of <= {self.max_len} tokens"

    # -- evaluation -------------------------------------------------------------------------------------
    def _eval_set(self, split: str) -> EvalSet:
        examples = self.splits.valid if split == VALID else self.splits.test
        assert examples is not None
        rows = self.rows[split]
        batches = eval_batches(rows, self.config.batch_size, pad_id=self.special_ids["pad"])
        return EvalSet(split, examples, rows, batches)

    def evaluation_sets(self) -> dict[str, EvalSet]:
        return {VALID: self._eval_set(VALID)}

    def test_set(self) -> EvalSet | None:
        return self._eval_set(TEST) if TEST in self.rows and self.config.test_eval else None

    @torch.no_grad()
    def evaluate(self, wrapped: nn.Module, eval_set: EvalSet, device: torch.device,
                 autocast: Callable[[], AbstractContextManager], context: ProcessContext) -> dict[str, float]:
        """``loss`` (mean cross-entropy per scored target), ``unigram_loss`` (the label prior's on the same
        targets) and the task's metrics over the whole split. Every process scores every batch: the sets
        are small, a sharded (FSDP) forward is collective anyway, and no predictions need gathering."""
        module = wrapped if context.mode == "fsdp" else unwrap(wrapped)
        was_training = module.training
        module.eval()
        predictions: list[np.ndarray | None] = [None] * len(eval_set.rows)
        loss_sum = scored = 0.0
        for indices, batch in eval_set.batches:
            count = batch.num_scored
            batch = batch.to(device)
            with autocast():
                _, loss, logits = module(batch.input_ids, batch.attention_mask, batch.labels)
            loss_sum += float(loss) * count
            scored += count
            predicted = logits.argmax(-1).cpu().numpy()
            for row, prediction in zip(indices, predicted, strict=True):
                predictions[row] = prediction
        module.train(was_training)
        names = self.labels.labels
        if self.task == "token-classification":
            gold: list = [e.tags for e in eval_set.examples]  # type: ignore[union-attr]
            predicted_labels: list = [[names[i] for i in words] for words in word_predictions(eval_set.rows,
                                                                                               predictions)]
        else:
            gold = [e.label for e in eval_set.examples]  # type: ignore[union-attr]
            predicted_labels = [names[int(p)] for p in predictions]
        targets = _targets(eval_set.rows)
        return {"loss": loss_sum / max(scored, 1.0),
                "unigram_loss": float(-self.label_log_prior[targets].mean()) if len(targets) else math.nan,
                **task_metrics(self.task, gold, predicted_labels, names), "examples": len(eval_set.examples)}

    def evaluation_line(self, step: int, kind: str, m: dict[str, float]) -> str:
        scores = ", ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1", "macro_f1") if k in m)
        return f"step {step}: {kind} loss {m['loss']:.4f} (label prior {m['unigram_loss']:.4f}), {scores}"


def _targets(rows: Sequence[Row]) -> np.ndarray:
    """Every scored label id of ``rows`` (word labels of a token task, one per row of a text task)."""
    labels = np.concatenate([np.atleast_1d(row.labels) for row in rows]) if rows else np.zeros(0, dtype=np.int64)
    return labels[labels != IGNORE_INDEX]


def _load_tokenizer(tokenizer_json: bytes, where: str) -> Tokenizer:
    """The tokenizer; a one-line DataError naming ``where`` when it does not load."""
    try:
        return Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    except Exception as err:
        raise DataError(f"{where} does not load as a tokenizers tokenizer.json ({type(err).__name__})") from None
