"""Sentence rows: one sentence (or one chunk of a long one) per row, padded, in length-bucketed batches.

docs/design.md §9, "Sentence rows": a task batch holds one sentence per row and no head may point
into another row. Rows are never concatenated, so that holds by construction; padding is marked
by ``attention_mask == 0`` (and the tokenizer's ``[PAD]`` id, ``pad_id``), and the models keep padded
positions out of every word's heads.

Alignment of word labels to subword pieces follows Hugging Face's token classification: words are
pre-split, each word is tokenised on its own, its label goes on its first piece and
:data:`~probformer.data.masking.IGNORE_INDEX` on the others (docs/design.md §9, "Token head": each word is
scored on its first piece). A word the tokenizer turns into nothing (a lone zero-width space, say)
becomes one ``[UNK]`` piece (the tokenizer's, ``unk_id``), so every word is scored and predicted.
:attr:`Row.word_positions` keeps each word's first-piece position for turning piece predictions back
into word predictions (:func:`word_predictions`).

Model families differ only in tokens around the text: BERT / UT sentence classification prepends
``[CLS]`` (``prefix_ids``: the tokenizer's [CLS] id, from models/registry.py's ``input_prefix_ids``); PT
with ROOT needs none (ROOT lives inside the model). Those tokens, and the ``[PAD]`` / ``[UNK]`` ids
(probformer's own 0 and 1 by default; read from any other tokenizer by its caller), are parameters,
never an architecture branch. A sentence longer than ``max_len`` pieces is split into rows at word
boundaries (token tasks) or truncated (sentence tasks), with one
:class:`~probformer.data.errors.DataWarning` per call that says how many.

Batches (:class:`BucketedStream` for training, :func:`eval_batches` for evaluation) are
:class:`~probformer.data.batches.Batch` objects, padded to their longest row: token labels (B, n),
sentence labels (B,).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from probformer.data.batches import Batch, EpochPosition, epoch_order_seed
from probformer.data.errors import DataWarning
from probformer.data.masking import IGNORE_INDEX
from probformer.data.task_files import LabelledText, LabelSet, TaggedSentence
from probformer.data.tokenization import PAD_ID, UNK_ID


@dataclass(frozen=True, eq=False)  # eq=False: rows hold arrays, whose == is elementwise
class Row:
    """One row of a task batch, before padding.

    ``labels`` is (n,) for a token task (a label id on each word's first piece, IGNORE_INDEX
    elsewhere, prefix and suffix tokens included) and a 0-d array (the label id) for a sentence task.
    """

    input_ids: np.ndarray  # (n,) int64: prefix + pieces + suffix
    labels: np.ndarray  # (n,) token task; () sentence task
    example: int  # the index of the sentence / text this row comes from
    first_word: int = 0  # token task: the index, in its sentence, of the row's first word
    word_positions: np.ndarray | None = None  # token task: (words,) row position of each word's first piece

    def __len__(self) -> int:
        return len(self.input_ids)


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer``, or a copy with truncation and padding off: rows are cut and padded here."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _content_budget(max_len: int, prefix_ids: Sequence[int], suffix_ids: Sequence[int]) -> int:
    budget = max_len - len(prefix_ids) - len(suffix_ids)
    if budget < 1:
        raise ValueError(f"max_len={max_len} leaves no room for text after {len(prefix_ids)} prefix and "
                         f"{len(suffix_ids)} suffix tokens")
    return budget


def word_pieces(tokenizer: Tokenizer, sentences: Sequence[Sequence[str]],
                unk_id: int = UNK_ID) -> list[list[list[int]]]:
    """Per sentence, per word, the word's piece ids (at least one: ``unk_id`` for a word the tokenizer
    drops). The tokenizer sees the words pre-split (``is_pretokenized``), so it never joins two words;
    its pre-tokenizer may still split one word into several pieces (``sat-on`` -> ``sat - on``)."""
    encodings = _plain(tokenizer).encode_batch([list(words) for words in sentences], is_pretokenized=True,
                                               add_special_tokens=False)
    out = []
    for words, encoding in zip(sentences, encodings, strict=True):
        pieces: list[list[int]] = [[] for _ in words]
        for piece, word in zip(encoding.ids, encoding.word_ids, strict=True):
            if word is not None:
                pieces[word].append(piece)
        out.append([p or [unk_id] for p in pieces])
    return out


def _chunks(pieces: Sequence[Sequence[int]], budget: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) of at most ``budget`` pieces each, filled greedily; a word of more
    pieces than that is a range of its own (and is cut by the caller)."""
    ranges, start, used = [], 0, 0
    for w, word in enumerate(pieces):
        if used and used + len(word) > budget:
            ranges.append((start, w))
            start, used = w, 0
        used += len(word)
    ranges.append((start, len(pieces)))
    return ranges


def _token_row(pieces: Sequence[Sequence[int]], tags: Sequence[int], start: int, end: int, budget: int,
               example: int, prefix_ids: Sequence[int], suffix_ids: Sequence[int]) -> Row:
    ids, labels, positions = list(prefix_ids), [IGNORE_INDEX] * len(prefix_ids), []
    for w in range(start, end):
        word = list(pieces[w])[:budget]  # only a single over-long word is cut (_chunks)
        positions.append(len(ids))
        ids.extend(word)
        labels.extend([tags[w]] + [IGNORE_INDEX] * (len(word) - 1))
    ids.extend(suffix_ids)
    labels.extend([IGNORE_INDEX] * len(suffix_ids))
    return Row(np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64), example, start,
               np.asarray(positions, dtype=np.int64))


def token_rows(sentences: Sequence[TaggedSentence], tokenizer: Tokenizer, labels: LabelSet, max_len: int,
               prefix_ids: Sequence[int] = (), suffix_ids: Sequence[int] = (), source: str = "sentences",
               unk_id: int = UNK_ID) -> list[Row]:
    """Rows of a token task: each sentence one row, or several consecutive rows (chunks at word
    boundaries) when it has more than ``max_len`` pieces with the prefix and suffix. One DataWarning
    says how many sentences were split. ``source`` names the file in warnings and label errors; ``unk_id``
is the piece of a word the tokenizer drops (:func:`word_pieces`)."""
    budget = _content_budget(max_len, prefix_ids, suffix_ids)
    rows: list[Row] = []
    split = cut_words = 0
    pieces_of = word_pieces(tokenizer, [s.words for s in sentences], unk_id)
    for example, (sentence, pieces) in enumerate(zip(sentences, pieces_of, strict=True)):
        if not pieces or len(sentence.tags) != len(pieces):
            raise ValueError(f"{source}: sentence {example + 1} has {len(pieces)} words and {len(sentence.tags)} tags")
        tags = [labels.id(tag, _where(source, sentence, w, example)) for w, tag in enumerate(sentence.tags)]
        ranges = _chunks(pieces, budget)
        split += len(ranges) > 1
        cut_words += sum(len(word) > budget for word in pieces)
        rows.extend(_token_row(pieces, tags, start, end, budget, example, prefix_ids, suffix_ids)
                    for start, end in ranges)
    if split:
        message = (f"{source}: {split} of {len(sentences)} sentences have more than max_len={max_len} pieces "
                   f"({budget} after {len(prefix_ids) + len(suffix_ids)} prefix/suffix tokens) and were split "
                   f"into {len(rows) - len(sentences) + split} rows at word boundaries")
        if cut_words:
            message += f"; {cut_words} single words longer than that were cut to their first {budget} pieces"
        warnings.warn(message, DataWarning, stacklevel=2)
    return rows


def _where(source: str, sentence: TaggedSentence, word: int, example: int) -> str:
    if sentence.lines:
        return f"{source}:{sentence.lines[word]}"
    return f"{source}: sentence {example + 1}, word {word + 1}"


def sentence_rows(texts: Sequence[LabelledText], tokenizer: Tokenizer, labels: LabelSet, max_len: int,
                  prefix_ids: Sequence[int] = (), suffix_ids: Sequence[int] = (), source: str = "texts",
                  unk_id: int = UNK_ID) -> list[Row]:
    """Rows of a sentence task: one per text, truncated to ``max_len`` pieces with the prefix and
    suffix (a text the tokenizer turns into nothing is one ``unk_id`` piece); one DataWarning says how
    many were truncated."""
    budget = _content_budget(max_len, prefix_ids, suffix_ids)
    encodings = _plain(tokenizer).encode_batch([t.text for t in texts], add_special_tokens=False)
    rows, truncated = [], 0
    for example, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
        label = labels.id(text.label, f"{source}:{text.line}" if text.line else f"{source}: text {example + 1}")
        pieces = encoding.ids or [unk_id]
        truncated += len(pieces) > budget
        ids = [*prefix_ids, *pieces[:budget], *suffix_ids]
        rows.append(Row(np.asarray(ids, dtype=np.int64), np.asarray(label, dtype=np.int64), example))
    if truncated:
        warnings.warn(f"{source}: {truncated} of {len(texts)} texts have more than max_len={max_len} pieces "
                      f"({budget} after {len(prefix_ids) + len(suffix_ids)} prefix/suffix tokens) and were "
                      f"truncated to their first {budget}", DataWarning, stacklevel=2)
    return rows


def encode_rows(examples: Sequence[TaggedSentence] | Sequence[LabelledText], tokenizer: Tokenizer,
                labels: LabelSet, max_len: int, prefix_ids: Sequence[int] = (), suffix_ids: Sequence[int] = (),
                source: str = "examples", unk_id: int = UNK_ID) -> list[Row]:
    """:func:`token_rows` for tagged sentences, :func:`sentence_rows` for labelled texts."""
    encode = token_rows if examples and isinstance(examples[0], TaggedSentence) else sentence_rows
    return encode(examples, tokenizer, labels, max_len, prefix_ids, suffix_ids, source,  # type: ignore[arg-type]
                  unk_id)


# -- batches ---------------------------------------------------------------------------------------------
def collate(rows: Sequence[Row], pad_to_multiple_of: int = 1, pad_id: int = PAD_ID) -> Batch:
    """The rows as one Batch, padded with ``pad_id`` (the tokenizer's ``[PAD]``; attention 0, label
    IGNORE_INDEX) to the longest row, rounded up to a multiple of ``pad_to_multiple_of``."""
    if not rows:
        raise ValueError("a batch needs at least one row")
    n = -(-max(len(row) for row in rows) // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), n), dtype=torch.long)
    sentence_task = rows[0].labels.ndim == 0
    if any((row.labels.ndim == 0) != sentence_task for row in rows):
        raise ValueError("a batch mixes token-task and sentence-task rows")
    labels = torch.empty(len(rows), dtype=torch.long) if sentence_task else torch.full_like(input_ids, IGNORE_INDEX)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.from_numpy(row.input_ids)
        attention_mask[i, : len(row)] = 1
        if sentence_task:
            labels[i] = int(row.labels)
        else:
            labels[i, : len(row)] = torch.from_numpy(row.labels)
    return Batch(input_ids, attention_mask, labels)


def _by_length(lengths: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``indices`` sorted by row length, ties in their given order (stable: deterministic)."""
    return indices[np.argsort(lengths[indices], kind="stable")]


class BucketedStream(EpochPosition):
    """Training batches of ``batch_size`` rows, epoch after epoch, with little padding.

    Each epoch: a seeded permutation of the rows (the ``len % batch_size`` left over sit this epoch
    out, a different few each epoch, so every batch is full and splits over processes), cut into
    buckets of ``bucket_batches`` batches; rows sorted by length inside each bucket and cut into
    batches; then the order of all the epoch's batches shuffled with the same seed. The whole state is
    (epoch, index within it), as for :class:`~probformer.data.batches.TrainStream`, so a resumed run
    sees exactly the batches the interrupted one would have seen. Rows are padded with ``pad_id``.
    """

    def __init__(self, rows: Sequence[Row], batch_size: int, seed: int, bucket_batches: int = 50,
                 pad_to_multiple_of: int = 1, pad_id: int = PAD_ID):
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size and bucket_batches must be positive, got {batch_size}, {bucket_batches}")
        if len(rows) < batch_size:
            raise ValueError(f"only {len(rows)} training rows, fewer than batch_size={batch_size}")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.bucket_batches, self.pad_to_multiple_of, self.pad_id = bucket_batches, pad_to_multiple_of, pad_id
        self.lengths = np.asarray([len(row) for row in rows], dtype=np.int64)
        self._enter_epoch(0)

    def _enter_epoch(self, epoch: int) -> None:
        super()._enter_epoch(epoch)
        self._plan = self.epoch_plan(epoch)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.rows) // self.batch_size

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """The row indices of every batch of ``epoch``, in order: a function of (seed, epoch) alone."""
        rng = np.random.default_rng(epoch_order_seed(self.seed, epoch))
        used = rng.permutation(len(self.rows))[: self.batches_per_epoch * self.batch_size]
        bucket = self.bucket_batches * self.batch_size
        batches = []
        for start in range(0, len(used), bucket):
            ordered = _by_length(self.lengths, used[start : start + bucket])
            batches.extend(np.split(ordered, len(ordered) // self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def next_rows(self) -> np.ndarray:
        """The row indices of the next batch (and advance)."""
        if self.index >= self.batches_per_epoch:
            self._enter_epoch(self.epoch + 1)
        indices = self._plan[self.index]
        self.index += 1
        return indices

    def next(self) -> Batch:
        return collate([self.rows[i] for i in self.next_rows()], self.pad_to_multiple_of, self.pad_id)



def eval_batches(rows: Sequence[Row], batch_size: int, pad_to_multiple_of: int = 1,
                 pad_id: int = PAD_ID) -> list[tuple[np.ndarray, Batch]]:
    """Every row once, in a fixed order (sorted by length, so little padding), as (row indices, batch)
    pairs, padded with ``pad_id``; the last batch may be smaller. The indices map predictions back to rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = np.asarray([len(row) for row in rows], dtype=np.int64)
    order = _by_length(lengths, np.arange(len(rows)))
    return [(order[s : s + batch_size], collate([rows[i] for i in order[s : s + batch_size]], pad_to_multiple_of,
                                                pad_id))
            for s in range(0, len(rows), batch_size)]


def word_predictions(rows: Sequence[Row], predictions: Sequence[np.ndarray]) -> list[list[int]]:
    """Per example, one prediction per word: ``predictions[r]`` holds row ``r``'s prediction at every
    position (padding beyond the row allowed); each word takes its first piece's, and the chunks of a
    split sentence are joined in order. Rows must be :func:`token_rows`' rows, in their order."""
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    out: list[list[int]] = []
    for row, predicted in zip(rows, predictions, strict=True):
        if row.word_positions is None:
            raise ValueError("word predictions need token-task rows")
        if row.first_word == 0 and row.example == len(out):
            out.append([])
        elif row.example != len(out) - 1 or row.first_word != len(out[-1]):
            raise ValueError("rows are not in token_rows' order")
        out[-1].extend(int(p) for p in np.asarray(predicted)[row.word_positions])
    return out
