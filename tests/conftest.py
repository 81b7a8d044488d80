"""Shared fixtures: small synthetic corpora (fast, deterministic, offline), a prepared cache of one, a
`probformer prepare-data` directory of one with sentences, the tiny training run several files train
on it, and the tiny BERT / UT encoders of the model tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

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


def sentence_documents(n_docs: int, seed: int = 0) -> list[str]:
    """Documents of a few sentences each (ending in . ! or ?, some lines broken), distinct."""
    rng = random.Random(seed)
    vocab = synthetic_words()
    docs = []
    for i in range(n_docs):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = rng.choices(vocab, k=rng.randint(3, 12))
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?") + rng.choice(["", "\n"]))
        docs.append(f"Doc{i} " + " ".join(sentences).strip())
    return docs


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


@pytest.fixture(scope="session")
def prepared_shards_dir(tmp_path_factory) -> Path:
    """300 documents of a few sentences each (sentence_documents) prepared by `probformer prepare-data`'s
    pipeline (vocab 512, shards of about 2,000 tokens, valid and test capped at 1,500 tokens; read-only)."""
    from probformer.data.prepare_stream import prepare_shards

    root = tmp_path_factory.mktemp("prepared-shards")
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in sentence_documents(300)), encoding="utf-8")
    prepare_shards(str(source), root / "prepared", vocab_size=512, work_unit_bytes=1500, shard_tokens=2000,
                   valid_fraction=0.1, test_fraction=0.1, valid_tokens=1500, test_tokens=1500, progress=False,
                   log=lambda *_: None)
    return root / "prepared"


# -- the tiny training run -------------------------------------------------------------------------
def _tiny_data_section(corpus_dir: Path, prepared) -> dict:
    return {"source": str(corpus_dir), "vocab_size": 512, "seq_len": 32, "valid_fraction": 0.1, "test_fraction": 0.1,
            "cache_dir": str(prepared.root.parent)}


@pytest.fixture
def tiny_data_section(synthetic_corpus_dir, prepared_synthetic) -> dict:
    """The data section of a tiny run, for experiment specs that hold a ``train`` mapping: the session's
    synthetic corpus (vocab 512, blocks of 32 tokens, 10% valid and test) read from its prepared cache
    (a fresh dict per test)."""
    return _tiny_data_section(synthetic_corpus_dir, prepared_synthetic)


@pytest.fixture(scope="session")
def tiny_run_config(synthetic_corpus_dir, prepared_synthetic):
    """A factory of tiny training runs: ``make(out_dir, *overrides, **values) -> TrainConfig``.

    The ``tiny`` preset trained on the session's synthetic corpus from its prepared cache (the data
    section of :func:`tiny_data_section`), writing to ``out_dir``, with progress bars and TensorBoard
    off. Then ``values`` set top-level keys (a mapping replaces the whole section, e.g.
    ``model={"arch": "bert", ...}``) and ``overrides`` are ``key=value`` strings as for ``--set``
    (dotted keys reach into a section); later ones win."""
    from probformer.config import load_config

    data = _tiny_data_section(synthetic_corpus_dir, prepared_synthetic)

    def make(out_dir: str | Path, *overrides: str, **values):
        fixed = [f"data.{key}={json.dumps(value)}" for key, value in data.items()]
        fixed += [f"out_dir={json.dumps(str(out_dir))}", "progress=false", "tensorboard=false"]
        given = [f"{key}={json.dumps(value)}" for key, value in values.items()]
        return load_config(preset="tiny", overrides=[*fixed, *given, *overrides])

    return make


# -- tiny BERT / UT encoders (hidden 32, 2 layers, 4 heads, vocab 99; batches of 3 sequences of 7) ---
ENCODER_VOCAB, ENCODER_BATCH, ENCODER_SEQ = 99, 3, 7
TINY_ENCODER = dict(vocab_size=ENCODER_VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)
ENCODERS = ("bert", "ut")


def tiny_encoder(arch: str, preset: str = "mup", **overrides):
    """A tiny ``arch`` encoder under ``preset`` (overrides, ``parametrization`` included, win)."""
    from probformer.models import MODEL_CLASSES

    config_cls, model_cls = MODEL_CLASSES[arch]
    return model_cls(config_cls(**{**TINY_ENCODER, "parametrization": preset, **overrides}))


def _padded_ids(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, ENCODER_VOCAB, (ENCODER_BATCH, ENCODER_SEQ), generator=g)
    mask = torch.ones(ENCODER_BATCH, ENCODER_SEQ, dtype=torch.long)
    mask[1, 5:] = 0  # padded tails of different lengths
    mask[2, 3:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def encoder_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, labels): padded tails of different lengths, four scored positions."""
    ids, mask = _padded_ids(torch.Generator().manual_seed(seed))
    labels = torch.full((ENCODER_BATCH, ENCODER_SEQ), -100)
    labels[0, 1], labels[1, 2], labels[1, 4], labels[2, 0] = 7, 8, 9, 10
    return ids, mask, labels


def encoder_batch_half_scored(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ids and mask of :func:`encoder_batch`, about half the real positions scored (their own ids)."""
    g = torch.Generator().manual_seed(seed)
    ids, mask = _padded_ids(g)
    labels = torch.where(mask.bool() & (torch.rand(ENCODER_BATCH, ENCODER_SEQ, generator=g) < 0.5), ids, -100)
    labels[0, 0] = ids[0, 0]  # at least one scored position
    return ids, mask, labels


def perturb_norms_and_biases(model: torch.nn.Module) -> None:
    """Move norms and biases off their 1 / 0 init, so that a comparison tests them too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or ".ln." in name or name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
