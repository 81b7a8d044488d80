"""Task model directories in Hugging Face pipelines, offline: ``pipeline("token-classification")`` and
``pipeline("text-classification")`` on PT (with ROOT) and BERT directories exported as a task run's
model/ is, after ``import probformer``, give the labels and probabilities of
:func:`probformer.inspection.predict.predict`.

The pipelines run in a subprocess with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, as a user's script
would, so nothing is fetched and nothing of this process's state helps. The same script runs under
transformers 4.x (outside CI: see the session notes in the report that added this file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import groupby

import numpy as np
import pytest
from task_models import TEXTS, export_task_model

from probformer.inspection.predict import predict

ARCHS = ("pt", "bert")

PIPELINE_SCRIPT = r"""
import json, sys
import probformer  # registers the architectures with transformers
from transformers import pipeline

token_dirs, text_dirs, texts = json.loads(sys.argv[1])
out = {"token": {}, "first": {}, "text": {}}
for name, path in token_dirs.items():
    tagger = pipeline("token-classification", model=path, aggregation_strategy="none", ignore_labels=[])
    out["token"][name] = [[{"entity": e["entity"], "score": float(e["score"]), "start": int(e["start"]),
                            "end": int(e["end"])} for e in tagger(text)] for text in texts]
    grouped = pipeline("token-classification", model=path, aggregation_strategy="first", ignore_labels=[])
    out["first"][name] = [[{"entity_group": e["entity_group"], "score": float(e["score"]), "start": int(e["start"]),
                            "end": int(e["end"])} for e in grouped(text)] for text in texts]
for name, path in text_dirs.items():
    classifier = pipeline("text-classification", model=path, top_k=None)
    out["text"][name] = [{c["label"]: float(c["score"]) for c in result} for result in classifier(texts)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-models")
    return {(arch, task): export_task_model(arch, task, root / f"{arch}-{task}" / "model")
            for arch in ARCHS for task in ("token-classification", "text-classification")}


@pytest.fixture(scope="module")
def pipeline_output(exported) -> dict:
    token = {arch: str(exported[arch, "token-classification"]) for arch in ARCHS}
    text = {arch: str(exported[arch, "text-classification"]) for arch in ARCHS}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, json.dumps([token, text, TEXTS])],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ARCHS)
def test_token_classification_pipeline_labels_each_words_first_piece_as_predict_does(arch, exported,
                                                                                      pipeline_output):
    ours = predict(exported[arch, "token-classification"], TEXTS)
    for text, mine, theirs in zip(TEXTS, ours, pipeline_output["token"][arch], strict=True):
        by_start = {e["start"]: e for e in theirs}  # aggregation "none": one entry per piece
        assert len(theirs) > len(mine.words) or text == TEXTS[2]  # some words have several pieces
        for word in mine.words:
            first_piece = by_start[word.start]
            assert first_piece["entity"] == word.label, (text, word)
            assert first_piece["score"] == pytest.approx(word.probability, abs=1e-5)
    assert len({w.label for p in ours for w in p.words}) > 1


@pytest.mark.parametrize("arch", ARCHS)
def test_first_aggregation_groups_our_words(arch, exported, pipeline_output):
    """aggregation_strategy="first": a word is labelled by its first piece, then neighbouring words with the
    same (non-BIO) label become one group, scored by their mean."""
    ours = predict(exported[arch, "token-classification"], TEXTS)
    for mine, theirs in zip(ours, pipeline_output["first"][arch], strict=True):
        groups = [list(words) for _, words in groupby(mine.words, key=lambda w: w.label)]
        assert [(g["entity_group"], g["start"], g["end"]) for g in theirs] == \
            [(words[0].label, words[0].start, words[-1].end) for words in groups]
        np.testing.assert_allclose([g["score"] for g in theirs],
                                   [np.mean([w.probability for w in words]) for words in groups], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_text_classification_pipeline_gives_predicts_probabilities(arch, exported, pipeline_output):
    ours = predict(exported[arch, "text-classification"], TEXTS)
    for mine, theirs in zip(ours, pipeline_output["text"][arch], strict=True):
        assert max(theirs, key=theirs.get) == mine.label
        assert set(theirs) == set(mine.probabilities)
        for label, p in mine.probabilities.items():
            assert theirs[label] == pytest.approx(p, abs=1e-5)
