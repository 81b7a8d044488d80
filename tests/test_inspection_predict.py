"""probformer.inspection.predict: a task model's labels equal a direct forward pass read on each word's
first piece (or on the text, after the family's prefix), batched or not, long texts split like
training's rows; and the loader's one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_models import LABELS, TEXTS, export_task_model
from tokenizers import Tokenizer

from probformer.data.errors import DataWarning
from probformer.inspection.errors import InspectionError
from probformer.inspection.predict import TextPrediction, TokenPrediction, load_task_model, predict
from probformer.inspection.words import split_words
from probformer.models import architecture

CASES = [(arch, task) for arch in ("pt", "bert") for task in ("token-classification", "text-classification")]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One run directory (holding model/) per (arch, task)."""
    root = tmp_path_factory.mktemp("task-models")
    return {(arch, task): export_task_model(arch, task, root / f"{arch}-{task}" / "model").parent
            for arch, task in CASES}


@torch.no_grad()
def _reference_tokens(model, tokenizer: Tokenizer, text: str) -> list[tuple[str, str, float]]:
    """(word, label, probability) per word: each word encoded on its own, one forward of the whole
    text, the softmax read at each word's first piece."""
    words = split_words(tokenizer, text)
    ids, firsts = [], []
    for word in words:
        firsts.append(len(ids))
        ids.extend(tokenizer.encode(word, add_special_tokens=False).ids or [1])
    probs = torch.softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)[firsts]
    return [(w, LABELS[int(p.argmax())], float(p.max())) for w, p in zip(words, probs, strict=True)]


@torch.no_grad()
def _reference_text(model, tokenizer: Tokenizer, text: str, prefix: tuple[int, ...]) -> np.ndarray:
    ids = [*prefix, *tokenizer.encode(text, add_special_tokens=False).ids]
    return torch.softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1).numpy()


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_predictions_equal_a_direct_forward_pass(model_dirs, arch, task):
    loaded = load_task_model(model_dirs[arch, task])  # the run directory: its model/ is read
    assert loaded.task == task and type(loaded.model) is architecture(arch).task_class(task)
    assert not loaded.model.training
    predictions = predict(loaded, TEXTS, batch_size=3)
    assert len(predictions) == len(TEXTS)
    if task == "token-classification":
        assert any(len(loaded.tokenizer.encode(w, add_special_tokens=False).ids) > 1
                   for w in split_words(loaded.tokenizer, TEXTS[1]))  # first pieces are exercised
        for text, got in zip(TEXTS, predictions, strict=True):
            assert isinstance(got, TokenPrediction) and got.text == text
            want = _reference_tokens(loaded.model, loaded.tokenizer, text)
            assert [(w.word, w.label) for w in got.words] == [(w, label) for w, label, _ in want]
            np.testing.assert_allclose([w.probability for w in got.words], [p for _, _, p in want], atol=1e-6)
            assert [text[w.start:w.end] for w in got.words] == [w.word for w in got.words]  # offsets in the text
        assert TEXTS[0].startswith("The Cat") and predictions[0].words[1].word == "Cat"  # spelling as typed
        assert len({w.label for p in predictions for w in p.words}) > 1
    else:
        prefix = architecture(arch).input_prefix_ids(task)
        for text, got in zip(TEXTS, predictions, strict=True):
            assert isinstance(got, TextPrediction)
            want = _reference_text(loaded.model, loaded.tokenizer, text, prefix)
            np.testing.assert_allclose(list(got.probabilities.values()), want, atol=1e-6)
            assert list(got.probabilities) == list(LABELS) and got.label == LABELS[int(want.argmax())]
            assert got.probability == max(got.probabilities.values())
    # Batching does not change a prediction.
    alone = [predict(loaded, [text], batch_size=1)[0] for text in TEXTS]
    for a, b in zip(alone, predictions, strict=True):
        np.testing.assert_allclose(_flat(a), _flat(b), atol=1e-6)


def _flat(prediction) -> list[float]:
    if isinstance(prediction, TokenPrediction):
        return [w.probability for w in prediction.words]
    return list(prediction.probabilities.values())


def test_a_text_longer_than_the_model_reads_is_split_at_words_like_training_rows(tmp_path):
    model_dir = export_task_model("pt", "token-classification", tmp_path / "short" / "model",
                                  max_position_embeddings=6)
    text = "the cat sat on the mat and the dog ran to the park"
    with pytest.warns(DataWarning, match=r"were split into \d+ rows at word boundaries"):
        (got,) = predict(model_dir, [text])
    assert [w.word for w in got.words] == text.split()
    # Each chunk is a row of its own: the words of the first (as many as fit in 6 pieces) get what
    # those words alone get.
    tokenizer = load_task_model(model_dir).tokenizer
    pieces = np.cumsum([len(tokenizer.encode(w, add_special_tokens=False).ids) for w in text.split()])
    k = int((pieces <= 6).sum())
    assert 0 < k < len(pieces)
    (first,) = predict(model_dir, [" ".join(text.split()[:k])])
    assert [w.label for w in got.words[:k]] == [w.label for w in first.words]
    np.testing.assert_allclose(_flat(got)[:k], _flat(first), atol=1e-6)


def test_loading_errors_are_one_line(tmp_path):
    with pytest.raises(InspectionError, match="not found"):
        load_task_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InspectionError, match="no config.json"):
        load_task_model(tmp_path / "empty")
    mlm = tmp_path / "mlm" / "model"
    from task_models import tokenizer_file

    tokenizer = tokenizer_file(tmp_path / "tok")
    entry = architecture("pt")
    entry.export(entry.build(**entry.coord_check_base(32, Tokenizer.from_file(str(tokenizer)).get_vocab_size(), 16)),
                 mlm, tokenizer)
    for path in (mlm, mlm.parent):
        with pytest.raises(InspectionError, match="this is a fill-mask model; use `probformer fill-mask`") as err:
            predict(path, ["the cat"])
        assert "\n" not in str(err.value)


def test_a_text_without_words_is_named(model_dirs):
    for task in ("token-classification", "text-classification"):
        with pytest.raises(InspectionError, match="text 2 has no words"):
            predict(model_dirs["pt", task], ["the cat", "   "])
    with pytest.raises(InspectionError, match="batch size"):
        predict(model_dirs["pt", "text-classification"], ["the cat"], batch_size=0)
