"""probformer.training.task_metrics: hand-worked scores, seqeval's default-mode entity reading (I- after O,
type switches) matched on random and real (WNUT-17) tag sequences, scikit-learn's accuracy and macro F1, the
BIO check that decides between entity and word scores, and the errors for misaligned or empty input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

seqeval_metrics = pytest.importorskip("seqeval.metrics")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
from seqeval.metrics.sequence_labeling import get_entities

from probformer.training.task_metrics import (
    classification_scores,
    entity_scores,
    entity_spans,
    is_bio,
    main_metric,
    task_metrics,
    token_accuracy,
)

WNUT_DEV = Path("/work/shared/data/wnut17/wnut17-dev.conll")
TYPES = ("PER", "LOC", "creative-work", "ORG")
BIO_LABELS = ["O"] + [f"{prefix}-{type_}" for type_ in TYPES for prefix in "BI"]
WNUT_LABELS = ["O"] + [f"{prefix}-{type_}" for type_ in ("person", "location", "group", "creative-work",
                                                          "corporation", "product") for prefix in "BI"]
UPOS_LABELS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
               "PUNCT", "SCONJ", "SYM", "VERB", "X"]


def reference_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """seqeval's entities of one sentence, with its inclusive end made exclusive."""
    return [(type_, start, end + 1) for type_, start, end in get_entities(list(tags))]


def reference_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """seqeval's default-mode (conlleval) micro scores; zero_division=0 is its default 'warn' without the warning."""
    kwargs = {"mode": None, "zero_division": 0}
    return {"precision": seqeval_metrics.precision_score(gold, predicted, **kwargs),
            "recall": seqeval_metrics.recall_score(gold, predicted, **kwargs),
            "f1": seqeval_metrics.f1_score(gold, predicted, **kwargs)}


def assert_matches_seqeval(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    scores = entity_scores(gold, predicted)
    for key, expected in reference_scores(gold, predicted).items():
        assert scores[key] == pytest.approx(expected, abs=1e-12, rel=0), key
    assert scores["gold_entities"] == sum(len(get_entities(tags)) for tags in gold)
    assert scores["predicted_entities"] == sum(len(get_entities(tags)) for tags in predicted)
    return scores


def perturb(sentences: list[list[str]], labels: list[str], rate: float, rng: np.random.Generator) -> list[list[str]]:
    """Each tag replaced, with probability ``rate``, by a uniformly drawn label (often an invalid transition)."""
    return [[str(labels[rng.integers(len(labels))]) if rng.random() < rate else tag for tag in tags]
            for tags in sentences]


def random_sentences(rng: np.random.Generator, n: int) -> list[list[str]]:
    """Tag sequences with every label uniformly likely besides a frequent O: many I- after O and type switches."""
    weights = np.array([4.0] + [1.0] * (len(BIO_LABELS) - 1))
    weights /= weights.sum()
    return [[str(tag) for tag in rng.choice(BIO_LABELS, size=int(rng.integers(0, 13)), p=weights)]
            for _ in range(n)]


# --- entity spans ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "expected"), [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # I- after O starts an entity
    (["I-PER"], [("PER", 0, 1)]),  # ... so does I- at the start
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # type switch on I- ends and starts
    (["I-PER", "I-LOC", "B-LOC"], [("PER", 0, 1), ("LOC", 1, 2), ("LOC", 2, 3)]),
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # B- always starts
    (["O", "B-creative-work", "I-creative-work"], [("creative-work", 1, 3)]),  # hyphenated type, at the end
    (["O", "O"], []),
    ([], []),
])
def test_entity_spans_hand_worked_and_seqeval(tags, expected):
    assert entity_spans(tags) == expected
    assert reference_spans(tags) == expected


@pytest.mark.parametrize("tag", ["NOUN", "E-PER", "S-PER", "B-", "B", "o", "I_PER"])
def test_entity_spans_rejects_tags_outside_bio(tag):
    with pytest.raises(ValueError, match=f"tag '{tag}' at position 1"):
        entity_spans(["O", tag])


def test_entity_spans_equal_seqeval_on_random_sequences():
    rng = np.random.default_rng(0)
    sentences = random_sentences(rng, 400)
    n_spans = 0
    for tags in sentences:
        spans = entity_spans(tags)
        assert spans == reference_spans(tags), tags
        n_spans += len(spans)
    assert n_spans > 500  # the sequences do hold entities, invalid transitions included
    assert any(tags[i].startswith("I-") and tags[i - 1] == "O" for tags in sentences for i in range(1, len(tags)))


# --- entity scores --------------------------------------------------------------------------------------------

def test_entity_scores_hand_worked():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"]]  # PER cut short: only LOC matches exactly
    scores = assert_matches_seqeval(gold, predicted)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "gold_entities": 2, "predicted_entities": 2}

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]  # three right, one spurious ORG
    predicted = [["B-PER", "I-PER", "B-ORG", "B-LOC"], ["O", "B-ORG"]]
    scores = assert_matches_seqeval(gold, predicted)
    assert (scores["precision"], scores["recall"]) == (0.75, 1.0)
    assert scores["f1"] == pytest.approx(2 * 0.75 / 1.75)


def test_entity_scores_match_within_a_sentence_only():
    # gold and predicted PER at the same offsets but in different sentences; I- opening sentence 2 is not a
    # continuation of sentence 1's entity
    gold = [["O", "B-PER"], ["I-PER", "O"]]
    assert entity_spans(gold[1]) == [("PER", 0, 1)]
    scores = assert_matches_seqeval(gold, [["O", "B-PER"], ["O", "O"]])
    assert (scores["precision"], scores["recall"]) == (1.0, 0.5)
    scores = assert_matches_seqeval([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["B-PER", "O"]])
    assert scores["f1"] == 0.0


def test_entity_scores_are_zero_not_nan_without_entities():
    scores = assert_matches_seqeval([["B-PER", "O"]], [["O", "O"]])
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gold_entities": 1, "predicted_entities": 0}
    scores = assert_matches_seqeval([["O", "O"]], [["O", "O"]])
    assert not any(math.isnan(value) for value in scores.values())
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gold_entities": 0, "predicted_entities": 0}


def test_entity_scores_equal_seqeval_on_random_corpora():
    rng = np.random.default_rng(1)
    f1s = []
    for _ in range(50):
        gold = random_sentences(rng, 8)
        gold[0] = gold[0] or ["O"]  # at least one word
        predicted = perturb(gold, BIO_LABELS, float(rng.choice([0.1, 0.3, 1.0])), rng)
        f1s.append(assert_matches_seqeval(gold, predicted)["f1"])
    assert min(f1s) < 0.5 < max(f1s)  # from heavily to lightly perturbed: the comparison covers a range


def test_entity_scores_equal_seqeval_on_wnut17_dev():
    if not WNUT_DEV.exists():
        pytest.skip(f"{WNUT_DEV} not present")
    gold: list[list[str]] = [[]]
    for line in WNUT_DEV.read_text(encoding="utf-8").splitlines():
        if line.strip():
            gold[-1].append(line.split("\t")[-1].strip())
        elif gold[-1]:
            gold.append([])
    gold = [tags for tags in gold if tags]
    labels = sorted({tag for tags in gold for tag in tags})
    assert is_bio(labels)
    assert main_metric("token-classification", labels) == "f1"

    predicted = perturb(gold, labels, 0.1, np.random.default_rng(17))
    scores = assert_matches_seqeval(gold, predicted)
    assert scores["gold_entities"] > 500
    assert 0.2 < scores["f1"] < 0.95
    assert all(entity_spans(tags) == reference_spans(tags) for tags in predicted)
    # why entity F1 picks the model: tagging every word O is already > 90% accurate yet finds no entity
    all_o = [["O"] * len(tags) for tags in gold]
    assert token_accuracy(gold, all_o) > 0.9
    assert entity_scores(gold, all_o)["f1"] == 0.0


# --- token accuracy -------------------------------------------------------------------------------------------

def test_token_accuracy_counts_words_not_sentences():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["B-PER"]]
    assert token_accuracy(gold, predicted) == 3 / 5
    assert token_accuracy([["NOUN", "VERB"], []], [["NOUN", "VERB"], []]) == 1.0


@pytest.mark.parametrize("scorer", [token_accuracy, entity_scores])
def test_token_scores_reject_misaligned_or_empty_input(scorer):
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        scorer([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        scorer([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0 is a string"):
        scorer(["O"], ["O"])
    for empty in ([], [[], []]):
        with pytest.raises(ValueError, match="no words"):
            scorer(empty, empty)


# --- classification -------------------------------------------------------------------------------------------

def test_classification_scores_hand_worked():
    # a: F1 2/3, b: 2/3, c (never predicted): 0, d (only predicted): 0
    scores = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "d"])
    assert scores["accuracy"] == 0.5
    assert scores["macro_f1"] == pytest.approx(1 / 3, abs=1e-15)


def test_classification_scores_equal_sklearn_on_random_labels():
    rng = np.random.default_rng(2)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        gold = [f"c{k}" for k in rng.integers(0, 5, size=n)]
        predicted = [f"c{k}" for k in rng.integers(0, 5, size=n)]
        if trial % 2:
            predicted[int(rng.integers(n))] = "only-predicted"
        scores = classification_scores(gold, predicted)
        assert scores["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, predicted), abs=1e-12)
        expected = sklearn_metrics.f1_score(gold, predicted, average="macro", zero_division=0)
        assert scores["macro_f1"] == pytest.approx(expected, abs=1e-12)


def test_classification_scores_reject_misaligned_or_empty_input():
    with pytest.raises(ValueError, match="2 gold labels but 1 predicted"):
        classification_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no texts"):
        classification_scores([], [])


# --- label schemes and task dispatch --------------------------------------------------------------------------

def test_is_bio():
    assert is_bio(WNUT_LABELS)
    assert is_bio(iter(["I-PER", "O"]))  # any iterable; I- alone is enough
    assert not is_bio(UPOS_LABELS)
    assert not is_bio(["O"])  # no entity type
    assert not is_bio([])
    assert not is_bio(["O", "B-PER", "E-PER"])  # IOBES is not accepted
    assert not is_bio(["O", "B-PER", "I-PER", "X"])
    assert not is_bio(["O", "B-", "I-"])


def test_task_metrics_for_each_task():
    gold, predicted = [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]]
    scores = task_metrics("token-classification", gold, predicted, WNUT_LABELS + BIO_LABELS)
    assert scores == {"accuracy": 0.75, "precision": 0.5, "recall": 0.5, "f1": 0.5}

    scores = task_metrics("token-classification", [["NOUN", "VERB"]], [["NOUN", "NOUN"]], UPOS_LABELS)
    assert scores == {"accuracy": 0.5}

    scores = task_metrics("text-classification", ["a", "a", "b", "c"], ["a", "b", "b", "d"], ["a", "b", "c"])
    assert scores.keys() == {"accuracy", "macro_f1"}
    assert scores == classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "d"])


def test_main_metric():
    assert main_metric("token-classification", WNUT_LABELS) == "f1"
    assert main_metric("token-classification", UPOS_LABELS) == "accuracy"
    assert main_metric("text-classification", ["positive", "negative"]) == "accuracy"
    assert main_metric("text-classification", ["B-PER", "O"]) == "accuracy"  # entity F1 is for token tasks only


@pytest.mark.parametrize("task", ["fill-mask", "ner", ""])
def test_unknown_task_is_an_error(task):
    with pytest.raises(ValueError, match="unknown task"):
        task_metrics(task, [["O"]], [["O"]], ["O"])
    with pytest.raises(ValueError, match="unknown task"):
        main_metric(task, ["O"])
