"""Task model directories for the predict, inspect and pipeline tests, made the way a task run's
``model/`` is: ``Architecture.export`` of a token or sequence classifier with id2label / label2id,
beside a WordPiece tokenizer from ``train_wordpiece``. The zero-initialised classifier is perturbed
with a seeded generator, so that predictions differ between words and texts (an untrained head
would give every word the same label and every label the same probability)."""

from __future__ import annotations

from pathlib import Path

import torch

from probformer.data.tokenization import train_wordpiece
from probformer.models import architecture

CORPUS = ["The cat sat on the mat.", "A dog ran, quickly, to the park!", "Dogs and cats are friends",
          "Unbelievably tall giraffes wander slowly", "the old man and the sea"]
LABELS = ("ADJ", "DET", "NOUN", "PUNCT", "VERB")
# Cased, with punctuation split off words and words of several pieces ("Unbelievably", "giraffes").
TEXTS = ["The Cat sat, on the mat.", "Unbelievably tall giraffes wander slowly!", "dogs", "A man ran to the sea"]


def tokenizer_file(directory: Path) -> Path:
    """A small lowercasing WordPiece tokenizer (vocabulary 80: rare words split into pieces)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    if not path.is_file():
        train_wordpiece(CORPUS * 10, vocab_size=80).save(str(path))
    return path


def task_model(arch: str, task: str, vocab_size: int, seed: int = 0, **config):
    """A tiny ``arch`` model for ``task`` (PT with its ROOT), its read-out perturbed (module doc), in eval mode."""
    entry = architecture(arch)
    fields = {**entry.coord_check_base(32, vocab_size, 16), "num_labels": len(LABELS),
              "id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)},
              **({"use_root": True} if entry.name == "pt" else {}), **config}
    torch.manual_seed(seed)
    model = entry.task_class(task)(entry.config_class(**fields))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.classifier.weight.copy_(3.0 * torch.randn(model.classifier.weight.shape, generator=g))
        model.classifier.bias.copy_(torch.randn(model.classifier.bias.shape, generator=g))
    return model.eval()


def export_task_model(arch: str, task: str, directory: Path, seed: int = 0, **config) -> Path:
    """``directory`` as the trainer exports a task run's model/ (tokenizer beside it, in its parent)."""
    from tokenizers import Tokenizer

    tokenizer = tokenizer_file(directory.parent / "tokenizer")
    model = task_model(arch, task, Tokenizer.from_file(str(tokenizer)).get_vocab_size(), seed, **config)
    return architecture(arch).export(model, directory, tokenizer)
