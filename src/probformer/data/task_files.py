"""Task files: tagged sentences and labelled texts for token and sentence classification.

Deliverable 2 of the task work (docs/design.md §9): the readers behind token classification
(tagging, NER) and sentence classification (sentiment), and the label inventory they share.

Formats (:class:`TaskFormat`, ``name``):

- ``conllu``: a CoNLL-U treebank, one tag per syntactic word: UPOS (column 4) or XPOS (column 5).
  Multiword-token ranges (``3-4``) and empty nodes (``5.1``) are skipped, as
  :mod:`probformer.data.conllu` and UD's evaluation do. That module's :class:`~probformer.data.conllu.Sentence`
  holds neither XPOS nor line numbers, so this reader parses the lines itself, by the same rules.
- ``conll``: one ``token<TAB>tag`` line per token (the tag is the last column), sentences separated by
  blank or whitespace-only lines (WNUT-17 separates some with a lone tab). ``#`` starts no comment
  here: in WNUT-17 it begins hashtag tokens. ``-DOCSTART-`` lines (CoNLL-2003) end a sentence and are skipped.
- ``tsv`` / ``csv``: one example per row. Integer fields are 0-based column indices and the file has no
  header (SST-2: ``text<TAB>label``); string fields are column names read from the first line.
  TSV is split on tabs without quoting (as GLUE's files are); CSV uses :mod:`csv` quoting.
- ``jsonl``: one JSON object per line, ``text_field`` / ``label_field`` its keys.
- ``label-text``: ``label text`` per line, the label the first whitespace-separated word (SST-5).

Blank lines between classification examples are skipped. Every problem is a one-line
:class:`~probformer.data.errors.DataError` naming the file and, where there is one, the line:
a missing file or field, invalid UTF-8, a malformed line, an empty file, and (:meth:`LabelSet.check`)
a dev/test label that the training file does not have.

Labels are read from the training file alone (:meth:`LabelSet.from_examples`), in sorted order by
default: ids are then a function of the label *set*, not of the file's order, so two runs on
differently ordered (or differently sampled) training files agree. Labels that are all integers
(SST's ``0``..``4``) sort as numbers, so label ``k`` gets id ``k``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from probformer.data.errors import ConlluError, DataError

TOKEN_FORMATS = ("conllu", "conll")
SENTENCE_FORMATS = ("tsv", "csv", "jsonl", "label-text")
FORMATS = TOKEN_FORMATS + SENTENCE_FORMATS
CONLLU_COLUMNS = {"upos": 3, "xpos": 4}  # 0-based: UPOS is CoNLL-U column 4, XPOS column 5
LabelOrder = Literal["sorted", "first-seen"]
Task = Literal["token", "sentence"]
DOCSTART = "-DOCSTART-"


@dataclass
class TaggedSentence:
    """One sentence of a token task: its words (pre-split) and one tag per word."""

    words: list[str]
    tags: list[str]
    lines: list[int] = field(default_factory=list)  # the file line of each word, for error messages

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class LabelledText:
    """One example of a sentence task: raw text (tokenised later) and its label."""

    text: str
    label: str
    line: int = 0  # the file line it came from (0: not from a file)


Example = TaggedSentence | LabelledText


# -- lines -------------------------------------------------------------------------------------------
def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of a UTF-8 file; a DataError names a missing file,
    or the line of the first invalid byte. Lines end at ``\\n`` only (as in text-mode files), so a
    U+2028 inside a word does not split it; a leading byte-order mark is dropped."""
    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start} of the line); "
                                "task files are UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            yield lineno, line.rstrip("\n").rstrip("\r")


def _nonempty(examples: list, path: Path) -> list:
    if not examples:
        raise DataError(f"{path}: no examples (empty file?)")
    return examples


# -- token tasks ----------------------------------------------------------------------------------------
def read_conllu_tags(path: str | Path, column: str = "upos") -> list[TaggedSentence]:
    """The sentences of a CoNLL-U file with their ``column`` tags (``upos`` or ``xpos``), syntactic
    words only. A tag of ``_`` (not annotated) is an error: a tagger trained on it learns nothing."""
    if column not in CONLLU_COLUMNS:
        raise DataError(f"CoNLL-U tag column must be one of {sorted(CONLLU_COLUMNS)}, got {column!r}")
    path, index = Path(path), CONLLU_COLUMNS[column]
    sentences: list[TaggedSentence] = []
    current = TaggedSentence([], [])
    for lineno, line in _lines(path, "CoNLL-U"):
        if not line.strip():
            if current.words:
                sentences.append(current)
            current = TaggedSentence([], [])
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ConlluError(f"{path}:{lineno}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue  # multiword-token range or empty node: not a syntactic word
        if cols[0] != str(len(current.words) + 1):
            raise ConlluError(f"{path}:{lineno}: word ID {cols[0]!r} out of order (expected {len(current.words) + 1})")
        if cols[index] == "_":
            raise ConlluError(f"{path}:{lineno}: word {cols[1]!r} has no {column.upper()} ('_'); "
                              f"is the file annotated with {column.upper()}?")
        current.words.append(cols[1])
        current.tags.append(cols[index])
        current.lines.append(lineno)
    if current.words:
        sentences.append(current)
    return _nonempty(sentences, path)


def read_conll_tags(path: str | Path, separator: str | None = "\t") -> list[TaggedSentence]:
    """The sentences of a ``token<TAB>tag`` file (module docstring). ``separator=None`` splits on any
    whitespace (CoNLL-2003's ``token POS chunk tag``); the tag is always the last column."""
    path = Path(path)
    sentences: list[TaggedSentence] = []
    current = TaggedSentence([], [])
    for lineno, line in _lines(path, "token/tag"):
        cols = line.split(separator)
        if not line.strip() or cols[0] == DOCSTART:
            if current.words:
                sentences.append(current)
            current = TaggedSentence([], [])
            continue
        if len(cols) < 2:
            shown = "a tab" if separator == "\t" else repr(separator or "whitespace")
            raise DataError(f"{path}:{lineno}: expected 'token<sep>tag' separated by {shown}, got {line[:60]!r}")
        token, tag = cols[0], cols[-1].strip()
        if not token or not tag:
            raise DataError(f"{path}:{lineno}: empty {'token' if not token else 'tag'} in {line[:60]!r}")
        current.words.append(token)
        current.tags.append(tag)
        current.lines.append(lineno)
    if current.words:
        sentences.append(current)
    return _nonempty(sentences, path)


# -- sentence tasks -------------------------------------------------------------------------------------
def _field(value: str | int) -> str | int:
    """A field as given, a digit string read as a column index (config files give strings)."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _example(path: Path, lineno: int, text: object, label: object) -> LabelledText:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}:{lineno}: the text is {'empty' if isinstance(text, str) else repr(text)}")
    if isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip():
        raise DataError(f"{path}:{lineno}: the label {label!r} is not a non-empty string or integer")
    return LabelledText(text.strip(), str(label).strip(), lineno)


def _columns(path: Path, rows: Iterable[tuple[int, list[str]]], text_field: str | int, label_field: str | int,
             kind: str) -> list[LabelledText]:
    """Examples from the rows of a TSV or CSV file (module docstring: int fields, or named by a header)."""
    examples: list[LabelledText] = []
    positions: tuple[int, int] | None = None
    if isinstance(text_field, int) and isinstance(label_field, int):
        positions = (text_field, label_field)
    elif isinstance(text_field, int) or isinstance(label_field, int):
        raise DataError(f"{path}: give both fields as column indices or both as header names, "
                        f"got {text_field!r} and {label_field!r}")
    for lineno, cols in rows:
        if positions is None:  # the first row is the header
            missing = [name for name in (text_field, label_field) if name not in cols]
            if missing:
                raise DataError(f"{path}:{lineno}: no column {missing[0]!r} in the header (columns: {cols})")
            positions = (cols.index(text_field), cols.index(label_field))
            continue
        if max(positions) >= len(cols):
            raise DataError(f"{path}:{lineno}: expected at least {max(positions) + 1} {kind} columns, "
                            f"got {len(cols)}")
        examples.append(_example(path, lineno, cols[positions[0]], cols[positions[1]]))
    return _nonempty(examples, path)


def read_tsv(path: str | Path, text_field: str | int = 0, label_field: str | int = 1) -> list[LabelledText]:
    """Examples of a tab-separated file, split on tabs without quoting."""
    path = Path(path)
    rows = ((n, line.split("\t")) for n, line in _lines(path, "TSV") if line.strip())
    return _columns(path, rows, _field(text_field), _field(label_field), "tab-separated")


def read_csv(path: str | Path, text_field: str | int = 0, label_field: str | int = 1) -> list[LabelledText]:
    """Examples of a comma-separated file with CSV quoting (a quoted field may span lines)."""
    path = Path(path)
    reader = csv.reader(line for _, line in _lines(path, "CSV"))
    try:
        rows = [(reader.line_num, cols) for cols in reader if cols]
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return _columns(path, rows, _field(text_field), _field(label_field), "comma-separated")


def read_jsonl(path: str | Path, text_field: str = "text", label_field: str = "label") -> list[LabelledText]:
    """Examples of a JSON-lines file: one object per line, text and label under the given keys."""
    path = Path(path)
    examples: list[LabelledText] = []
    for lineno, line in _lines(path, "JSONL"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        for name in (text_field, label_field):
            if name not in record:
                raise DataError(f"{path}:{lineno}: no field {name!r} (fields: {sorted(record)})")
        examples.append(_example(path, lineno, record[text_field], record[label_field]))
    return _nonempty(examples, path)


def read_label_text(path: str | Path) -> list[LabelledText]:
    """Examples of a ``label text`` file: the first whitespace-separated word is the label."""
    path = Path(path)
    examples: list[LabelledText] = []
    for lineno, line in _lines(path, "label-text"):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected 'label text', got {line.strip()[:60]!r}")
        examples.append(_example(path, lineno, parts[1], parts[0]))
    return _nonempty(examples, path)


# -- formats ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskFormat:
    """How to read a task's files: the format name and its options (module docstring).

    ``column`` is for ``conllu`` (``upos`` / ``xpos``), ``separator`` for ``conll`` (None: whitespace),
    ``text_field`` / ``label_field`` for the sentence formats (None: ``0`` / ``1`` for TSV and CSV,
    ``text`` / ``label`` for JSONL)."""

    name: str
    column: str = "upos"
    separator: str | None = "\t"
    text_field: str | int | None = None
    label_field: str | int | None = None

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise DataError(f"task file format must be one of {FORMATS}, got {self.name!r}")
        if self.column not in CONLLU_COLUMNS:
            raise DataError(f"CoNLL-U tag column must be one of {sorted(CONLLU_COLUMNS)}, got {self.column!r}")

    @property
    def task(self) -> Task:
        """``token`` (a label per word) or ``sentence`` (a label per example)."""
        return "token" if self.name in TOKEN_FORMATS else "sentence"

    def read(self, path: str | Path) -> list[TaggedSentence] | list[LabelledText]:
        """The examples of one file in this format."""
        if self.name == "conllu":
            return read_conllu_tags(path, self.column)
        if self.name == "conll":
            return read_conll_tags(path, self.separator)
        if self.name == "label-text":
            return read_label_text(path)
        if self.name == "jsonl":
            return read_jsonl(path, "text" if self.text_field is None else str(self.text_field),
                              "label" if self.label_field is None else str(self.label_field))
        reader = read_tsv if self.name == "tsv" else read_csv
        return reader(path, 0 if self.text_field is None else self.text_field,
                      1 if self.label_field is None else self.label_field)


# -- labels ----------------------------------------------------------------------------------------------
def _labels_and_lines(examples: Iterable[Example]) -> Iterator[tuple[str, int]]:
    for example in examples:
        if isinstance(example, LabelledText):
            yield example.label, example.line
        else:
            lines = example.lines or [0] * len(example.tags)
            yield from zip(example.tags, lines, strict=True)


def _sort_key(labels: Sequence[str]):
    """Numeric order when every label is an integer (``2`` before ``10``), else string order."""
    try:
        [int(label) for label in labels]
    except ValueError:
        return lambda label: label
    return int


@dataclass(frozen=True)
class LabelSet:
    """The labels of a task, id ``i`` = ``labels[i]`` (the config's ``id2label``), read from train."""

    labels: tuple[str, ...]
    source: str = "the training file"
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise DataError(f"{self.source}: no labels")
        duplicates = sorted(label for label, n in Counter(self.labels).items() if n > 1)
        if duplicates:
            raise DataError(f"{self.source}: label {duplicates[0]!r} given twice")
        object.__setattr__(self, "_ids", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def from_examples(cls, examples: Iterable[Example], order: LabelOrder = "sorted", source: str = "") -> LabelSet:
        """The labels that occur in ``examples`` (the training split), ``sorted`` (module docstring)
        or in ``first-seen`` order."""
        seen = list(dict.fromkeys(label for label, _ in _labels_and_lines(examples)))
        if order == "sorted":
            seen.sort(key=_sort_key(seen))
        elif order != "first-seen":
            raise DataError(f"label order must be 'sorted' or 'first-seen', got {order!r}")
        return cls(tuple(seen), source or "the training file")

    @classmethod
    def from_id2label(cls, id2label: dict[int, str] | dict[str, str], source: str = "the model config") -> LabelSet:
        """The label set of a model config's ``id2label`` (keys may be strings, as in JSON)."""
        by_id = {int(i): label for i, label in id2label.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise DataError(f"{source}: id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        return cls(tuple(by_id[i] for i in range(len(by_id))), source)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._ids

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return dict(self._ids)

    def id(self, label: str, where: str) -> int:
        """The id of ``label``; a DataError at ``where`` (``file:line``) if train does not have it."""
        try:
            return self._ids[label]
        except KeyError:
            raise DataError(f"{where}: label {label!r} does not occur in {self.source} "
                            f"({len(self)} labels: {_shown(self.labels)})") from None

    def check(self, examples: Iterable[Example], path: str | Path) -> None:
        """Every label of ``examples`` (read from ``path``) is known; else the first unknown one's line."""
        for label, line in _labels_and_lines(examples):
            if label not in self._ids:
                self.id(label, f"{path}:{line}" if line else str(path))


def _shown(labels: Sequence[str], limit: int = 12) -> str:
    head = ", ".join(repr(label) for label in labels[:limit])
    return head + (f", ... ({len(labels) - limit} more)" if len(labels) > limit else "")


# -- splits ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSplits:
    """A task's train / valid / test examples and the labels read from train."""

    format: TaskFormat
    labels: LabelSet
    train: list[TaggedSentence] | list[LabelledText]
    valid: list[TaggedSentence] | list[LabelledText] | None
    test: list[TaggedSentence] | list[LabelledText] | None


def read_task_splits(fmt: TaskFormat, train: str | Path, valid: str | Path | None = None,
                     test: str | Path | None = None, label_order: LabelOrder = "sorted") -> TaskSplits:
    """Read the splits of a task; labels from ``train``; a valid/test label missing from train is an
    error naming its file and line."""
    train_examples = fmt.read(train)
    labels = LabelSet.from_examples(train_examples, label_order, source=f"the training file {train}")
    splits: dict[str, list | None] = {"valid": None, "test": None}
    for name, path in (("valid", valid), ("test", test)):
        if path is not None:
            splits[name] = fmt.read(path)
            labels.check(splits[name], path)
    return TaskSplits(fmt, labels, train_examples, splits["valid"], splits["test"])


# -- the most-frequent-tag baseline ----------------------------------------------------------------------
@dataclass(frozen=True)
class MostFrequentTagger:
    """Each word's most frequent training tag (exact, case-sensitive form); unknown words get the most
    frequent tag overall. A word's tied tags go to the overall more frequent one, then the smaller name."""

    by_word: dict[str, str]
    default: str

    @classmethod
    def fit(cls, sentences: Iterable[TaggedSentence]) -> MostFrequentTagger:
        per_word: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for sentence in sentences:
            for word, tag in zip(sentence.words, sentence.tags, strict=True):
                per_word.setdefault(word, Counter())[tag] += 1
                overall[tag] += 1
        if not overall:
            raise DataError("the most-frequent-tag baseline needs at least one tagged word")

        def best(counts: Counter[str]) -> str:
            return min(counts, key=lambda tag: (-counts[tag], -overall[tag], tag))

        return cls({word: best(counts) for word, counts in per_word.items()}, best(overall))

    def tag(self, words: Sequence[str]) -> list[str]:
        return [self.by_word.get(word, self.default) for word in words]


def tag_accuracy(gold: Iterable[TaggedSentence], predicted: Iterable[Sequence[str]]) -> float:
    """The fraction of words whose predicted tag equals the gold one."""
    right = total = 0
    for sentence, tags in zip(gold, predicted, strict=True):
        right += sum(g == p for g, p in zip(sentence.tags, tags, strict=True))
        total += len(sentence.tags)
    if not total:
        raise DataError("tag accuracy of no words")
    return right / total


def most_frequent_tag_baseline(train: Sequence[TaggedSentence], evaluation: Sequence[TaggedSentence]) -> float:
    """Token accuracy on ``evaluation`` of :class:`MostFrequentTagger` fitted on ``train``: the floor a
    tagger has to beat (the issue's demonstrations compare against it)."""
    tagger = MostFrequentTagger.fit(train)
    return tag_accuracy(evaluation, (tagger.tag(s.words) for s in evaluation))
