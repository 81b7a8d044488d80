"""Shared fixtures: small synthetic corpora (fast, deterministic, offline) and a prepared cache of one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dor", "fen", "gal", "hin")


def synthetic_words(n_words: int = 300, seed: int = 1234) -> list[str]:
    """A fixed vocabulary of made-up lowercase words (two or three syllables)."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < n_words:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def synthetic_documents(n_docs: int = 40, words_per_doc: int = 150, seed: int = 0) -> list[str]:
    """``n_docs`` distinct documents of lowercase words separated by single spaces (Zipf-ish frequencies)."""
    vocab = synthetic_words()
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    rng = random.Random(seed)
    return [f"doc{i} " + " ".join(rng.choices(vocab, weights, k=words_per_doc)) for i in range(n_docs)]


def write_text_dir(directory: Path, docs: list[str]) -> Path:
    """One ``.txt`` file per document, named so that sorted file order is document order."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (directory / f"doc{i:04d}.txt").write_text(doc + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def synthetic_corpus_dir(tmp_path_factory) -> Path:
    """A directory of 40 synthetic ``.txt`` documents (do not modify: shared by the session)."""
    return write_text_dir(tmp_path_factory.mktemp("synthetic-corpus"), synthetic_documents())


@pytest.fixture(scope="session")
def prepared_synthetic(synthetic_corpus_dir, tmp_path_factory):
    """The synthetic corpus prepared once per session (vocab 512, its own cache dir; read-only)."""
    from probformer.data.prepared import CorpusSpec, prepare_corpus

    spec = CorpusSpec(source=str(synthetic_corpus_dir), vocab_size=512, valid_fraction=0.1, test_fraction=0.1)
    return prepare_corpus(spec, tmp_path_factory.mktemp("corpus-cache"), log=lambda *_: None)
