"""probformer.inspection.sentence: with the model's own ROOT, one sentence's trees are decoded with its ROOT
probabilities (single-rooted, the root word's probability is P(ROOT)) and its JSON carries them; without
ROOT, no ROOT field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from task_models import tokenizer_file
from tokenizers import Tokenizer

from probformer.inspection.loading import LoadedModel
from probformer.inspection.sentence import inspect_words
from probformer.inspection.trees import argmax_heads, mst_heads
from probformer.models import architecture

WORDS = ["The", "cat", "sat", "on", "the", "mat", "."]


def _loaded(tmp_path: Path, **config) -> LoadedModel:
    tokenizer = Tokenizer.from_file(str(tokenizer_file(tmp_path)))
    entry = architecture("pt")
    torch.manual_seed(0)
    model = entry.build(**entry.coord_check_base(32, tokenizer.get_vocab_size(), 16), **config).eval()
    return LoadedModel(model, tokenizer, tmp_path, entry)


def test_trees_of_a_model_with_root_use_its_root_probabilities(tmp_path):
    inspection = inspect_words(_loaded(tmp_path, use_root=True), WORDS)
    m = inspection.marginals
    assert m.root is not None and m.root.shape == m.heads.shape[:3]
    for tree in inspection.trees:
        probs, root = m.heads[tree.iteration - 1, tree.channel], m.root[tree.iteration - 1, tree.channel]
        decode = mst_heads if tree.decoder == "mst" else argmax_heads
        assert tree.heads == decode(probs, root).tolist()
        for u, h in enumerate(tree.heads):
            assert tree.probabilities[u] == (root[u] if h == 0 else probs[u, h - 1])
        if tree.decoder == "mst":
            assert tree.heads.count(0) == 1
    report = inspection.to_dict()
    assert np.asarray(report["root_marginals"]).shape == m.root.shape
    (root_line,) = [line.split("\t") for line in inspection.conllu(1, [0], "mst").splitlines()
                    if line and not line.startswith("#") and line.split("\t")[6] == "0"]
    assert root_line[9].startswith("HeadProb=")  # the root word's P(ROOT), in CoNLL-U's MISC


def test_without_root_the_report_has_no_root_field(tmp_path):
    inspection = inspect_words(_loaded(tmp_path), WORDS)
    assert inspection.marginals.root is None and "root_marginals" not in inspection.to_dict()
    for tree in inspection.trees:
        assert all((p is None) == (h == 0) for h, p in zip(tree.heads, tree.probabilities, strict=True))
