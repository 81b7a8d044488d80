"""CoNLL-U reading (gold trees) and writing (predicted trees), https://universaldependencies.org/format.html.

Used by the trainer (the sentences of a treebank as evaluation text) and by
:mod:`probformer.inspection` (gold trees). Only syntactic words enter a tree: multiword-token lines (``1-2``) and
empty nodes (``8.1``) are skipped, as UD's evaluation does. Heads are 1-based word indices with 0 for the root.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probformer.data.errors import ConlluError


@dataclass
class Sentence:
    words: list[str]
    heads: list[int]  # gold head per word, 1-based, 0 = root
    upos: list[str]
    deprels: list[str]
    sent_id: str | None = None
    text: str | None = None
    comments: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.words)


def _sentences(lines: Iterator[tuple[int, str]], source: str) -> Iterator[Sentence]:
    words, heads, upos, deprels, comments = [], [], [], [], []
    sent_id = text = None

    def finish() -> Sentence | None:
        if not words:
            return None
        for i, head in enumerate(heads, start=1):
            if not 0 <= head <= len(words) or head == i:
                raise ConlluError(f"{source}: sentence {sent_id or '?'}: word {i} has head {head} "
                                  f"(sentence of {len(words)} words)")
        return Sentence(list(words), list(heads), list(upos), list(deprels), sent_id, text, list(comments))

    for lineno, raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            sentence = finish()
            if sentence is not None:
                yield sentence
            words, heads, upos, deprels, comments = [], [], [], [], []
            sent_id = text = None
            continue
        if line.startswith("#"):
            comments.append(line)
            key, _, value = line[1:].partition("=")
            if key.strip() == "sent_id":
                sent_id = value.strip()
            elif key.strip() == "text":
                text = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ConlluError(f"{source}:{lineno}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue  # multiword token or empty node
        try:
            index, head = int(cols[0]), int(cols[6])
        except ValueError:
            raise ConlluError(f"{source}:{lineno}: ID {cols[0]!r} / HEAD {cols[6]!r} are not integers") from None
        if index != len(words) + 1:
            raise ConlluError(f"{source}:{lineno}: word ID {index} out of order (expected {len(words) + 1})")
        words.append(cols[1])
        heads.append(head)
        upos.append(cols[3])
        deprels.append(cols[7])
    sentence = finish()
    if sentence is not None:
        yield sentence


def read_conllu(path: str | Path) -> list[Sentence]:
    """All sentences of a CoNLL-U file. Raises :class:`ConlluError` for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConlluError(f"CoNLL-U file {str(path)!r} not found")
    try:
        with path.open(encoding="utf-8") as f:
            sentences = list(_sentences(enumerate(f, start=1), str(path)))
    except UnicodeDecodeError as err:
        raise ConlluError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                          "CoNLL-U files are UTF-8") from None
    if not sentences:
        raise ConlluError(f"{path}: no sentences")
    return sentences


def parse_conllu(text: str, source: str = "<string>") -> list[Sentence]:
    return list(_sentences(enumerate(text.splitlines(), start=1), source))


def format_conllu(words: Sequence[str], heads: Sequence[int], head_probs: Sequence[float | None] | None = None,
                  comments: Sequence[str] = ()) -> str:
    """One predicted tree as a CoNLL-U block. DEPREL is ``dep`` (``root`` for the root); the head's
    probability, when given (None for the root, whose head is not a word), goes to MISC as
    ``HeadProb=0.123``."""
    lines = list(comments)
    for i, (word, head) in enumerate(zip(words, heads, strict=True), start=1):
        prob = head_probs[i - 1] if head_probs is not None else None
        misc = f"HeadProb={prob:.3f}" if prob is not None else "_"
        lines.append("\t".join([str(i), word, "_", "_", "_", "_", str(head), "root" if head == 0 else "dep", "_",
                                misc]))
    return "\n".join(lines) + "\n\n"
