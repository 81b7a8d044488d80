"""Labels from a trained task model: one per word (token classification) or one per text (text
classification), with probabilities.

The inputs are built exactly as training builds them (:mod:`probformer.data.sentence_rows`), so a
prediction is what the trained model's evaluation would have made of the same words:

- token task: the text is cut into words by the tokenizer's own pre-tokenizer on the raw text
  (whitespace and punctuation, :func:`~probformer.inspection.words.word_spans`); the words, in their
  original spelling (shown as typed; the tokenizer normalises them again), become one row with
  :func:`~probformer.data.sentence_rows.token_rows` and the architecture's ``input_prefix_ids``,
  several rows at word boundaries when longer than ``max_position_embeddings``; each word is read
  on its first piece and the chunks are joined (:func:`~probformer.data.sentence_rows.word_predictions`).
- text task: :func:`~probformer.data.sentence_rows.sentence_rows` with the prefix (BERT / UT's
  ``[CLS]``; PT reads its ROOT and needs none), truncated to ``max_position_embeddings``.

The special ids (the prefix's [CLS], the padding's [PAD], the [UNK] of a word the tokenizer drops)
are read from the model's own tokenizer (:meth:`~probformer.inspection.loading.LoadedModel.special_ids`),
as the task run read them from its tokenizer: probformer's 0..4 or a pretrained tokenizer's.

Those builders want a label per example; the label the model predicts is not known, so every word or
text carries the model's first label as a placeholder, never read. Probabilities are a softmax over
the labels, as in Hugging Face's pipelines; for a text model whose ``problem_type`` is multi-label
(or with a single output) a sigmoid per label, as the text-classification pipeline does. The model
runs in eval mode without gradients, on length-sorted batches (every family masks padding, so a
text's prediction does not depend on its batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probformer.data.errors import DataError
from probformer.data.sentence_rows import Row, eval_batches, sentence_rows, token_rows, word_predictions
from probformer.data.task_files import LabelledText, LabelSet, TaggedSentence
from probformer.inspection.errors import InspectionError
from probformer.inspection.loading import TASK_COMMANDS, LoadedModel, load_model
from probformer.inspection.words import word_spans

TOKEN_TASK, TEXT_TASK = "token-classification", "text-classification"
CLASSIFICATION_TASKS = (TOKEN_TASK, TEXT_TASK)


@dataclass(frozen=True)
class WordLabel:
    word: str  # as written in the text
    start: int  # character offsets of the word in the text
    end: int
    label: str
    probability: float  # of ``label``


@dataclass(frozen=True)
class TokenPrediction:
    text: str
    words: list[WordLabel]

    def to_dict(self) -> dict:
        return {"text": self.text, "words": [vars(w) for w in self.words]}


@dataclass(frozen=True)
class TextPrediction:
    text: str
    label: str
    probability: float  # of ``label``
    probabilities: dict[str, float]  # every label's, in the model's label order

    def to_dict(self) -> dict:
        return {"text": self.text, "label": self.label, "probability": self.probability,
                "probabilities": dict(self.probabilities)}


Prediction = TokenPrediction | TextPrediction


def load_task_model(path: str | Path) -> LoadedModel:
    """A trained token or text classifier from a run directory (its ``model/``) or a model directory;
    an MLM directory, a missing directory or one without config.json is a one-line InspectionError."""
    return load_model(path, tasks=CLASSIFICATION_TASKS)


def model_labels(loaded: LoadedModel) -> LabelSet:
    """The model's labels, id ``i`` = ``id2label[i]`` (config.json)."""
    try:
        return LabelSet.from_id2label(loaded.model.config.id2label, f"{loaded.directory / 'config.json'}")
    except DataError as err:
        raise InspectionError(str(err)) from None


def predict(model: str | Path | LoadedModel, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
    """One prediction per text, in order: :class:`TokenPrediction` (a label per word) for a token
    classifier, :class:`TextPrediction` for a text classifier. ``model``: a directory (run or model)
    or what :func:`load_task_model` returned. A text without words is an InspectionError naming it."""
    loaded = model if isinstance(model, LoadedModel) else load_task_model(model)
    if loaded.task not in CLASSIFICATION_TASKS:
        raise InspectionError(f"{loaded.directory}: this is a {loaded.task} model; use `{TASK_COMMANDS[loaded.task]}`")
    if batch_size < 1:
        raise InspectionError(f"batch size must be >= 1, got {batch_size}")
    texts = list(texts)
    if loaded.task == TOKEN_TASK:
        return _predict_tokens(loaded, texts, batch_size)
    return _predict_texts(loaded, texts, batch_size)


def _no_words(k: int, text: str) -> InspectionError:
    return InspectionError(f"text {k + 1} has no words: {text!r}")


def _predict_tokens(loaded: LoadedModel, texts: list[str], batch_size: int) -> list[Prediction]:
    labels = model_labels(loaded)
    spans = [word_spans(loaded.tokenizer, text) for text in texts]
    for k, (text, text_spans) in enumerate(zip(texts, spans, strict=True)):
        if not text_spans:
            raise _no_words(k, text)
    sentences = [TaggedSentence([text[s:e] for s, e in text_spans], [labels.labels[0]] * len(text_spans))
                 for text, text_spans in zip(texts, spans, strict=True)]
    ids = loaded.special_ids()
    rows = token_rows(sentences, loaded.tokenizer, labels, _max_len(loaded),
                      loaded.architecture.input_prefix_ids(TOKEN_TASK, ids), source="texts", unk_id=ids["unk"])
    probs = _probabilities(loaded, rows, batch_size, ids["pad"])  # per row (n, C)
    # Every position of every row gets a global index into one table; word_predictions then picks each
    # word's first piece and joins a split text's chunks, exactly as evaluation does with label ids.
    offsets = np.cumsum([0] + [len(row) for row in rows])
    table = np.concatenate(probs)
    firsts = word_predictions(rows, [np.arange(offsets[r], offsets[r + 1]) for r in range(len(rows))])
    out: list[Prediction] = []
    for text, text_spans, sentence, positions in zip(texts, spans, sentences, firsts, strict=True):
        words = []
        for (start, end), word, position in zip(text_spans, sentence.words, positions, strict=True):
            label = int(table[position].argmax())
            words.append(WordLabel(word, start, end, labels.labels[label], float(table[position, label])))
        out.append(TokenPrediction(text, words))
    return out


def _predict_texts(loaded: LoadedModel, texts: list[str], batch_size: int) -> list[Prediction]:
    labels = model_labels(loaded)
    for k, text in enumerate(texts):
        if not text.strip():
            raise _no_words(k, text)
    ids = loaded.special_ids()
    rows = sentence_rows([LabelledText(text, labels.labels[0]) for text in texts], loaded.tokenizer, labels,
                         _max_len(loaded), loaded.architecture.input_prefix_ids(TEXT_TASK, ids), source="texts",
                         unk_id=ids["unk"])
    out: list[Prediction] = []
    for text, p in zip(texts, _probabilities(loaded, rows, batch_size, ids["pad"]), strict=True):
        label = int(p.argmax())
        out.append(TextPrediction(text, labels.labels[label], float(p[label]),
                                  {name: float(q) for name, q in zip(labels.labels, p, strict=True)}))
    return out


def _max_len(loaded: LoadedModel) -> int:
    """Rows are at most as long as the position table (BERT / UT index it; PT's P has as many rows)."""
    return int(loaded.model.config.max_position_embeddings)


def _sigmoid_outputs(config) -> bool:
    """Hugging Face's text-classification pipeline: sigmoid for multi-label or a single output."""
    return config.problem_type == "multi_label_classification" or config.num_labels == 1


@torch.no_grad()
def _probabilities(loaded: LoadedModel, rows: Sequence[Row], batch_size: int, pad_id: int) -> list[np.ndarray]:
    """Per row, label probabilities: (n, C) for token rows (every position), (C,) for text rows; batches
    padded with ``pad_id``."""
    model = loaded.model.eval()
    sigmoid = loaded.task == TEXT_TASK and _sigmoid_outputs(model.config)
    out: list[np.ndarray | None] = [None] * len(rows)
    for indices, batch in eval_batches(rows, batch_size, pad_id=pad_id):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
        probs = (torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)).numpy()
        for b, r in enumerate(indices):
            out[r] = probs[b] if loaded.task == TEXT_TASK else probs[b, : len(rows[r])]
    return out  # type: ignore[return-value]
