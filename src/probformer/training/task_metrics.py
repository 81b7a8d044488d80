"""Evaluation metrics of the downstream tasks: token classification (tagging, NER) and sentence classification.

Pure Python, so that scoring a fine-tuned model needs neither torch nor the reference libraries; the tests pin
every score to its reference implementation (seqeval for entities, scikit-learn for classification).

Entity spans follow seqeval's *default* mode, which is conlleval-compatible and lenient about invalid BIO
transitions, because that is how NER results (CoNLL, WNUT-17) are reported:

- ``B-X`` always starts an entity of type X;
- ``I-X`` continues an open entity of type X, but starts a new entity of type X after ``O`` or after an
  entity of another type (rather than being dropped, as seqeval's strict mode would);
- an entity ends before ``O``, before any ``B-``, and before an ``I-`` of another type.

Scores are micro-averaged over exact (type, start, end) matches, and an undefined ratio (nothing predicted,
nothing gold) is 0.0 rather than NaN, as seqeval and scikit-learn return under their default ``zero_division``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

TOKEN_TASK = "token-classification"
TEXT_TASK = "text-classification"
TASKS = (TOKEN_TASK, TEXT_TASK)

Span = tuple[str, int, int]


def _check_sentences(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> int:
    """Number of words, after checking that every predicted sentence lines up with its gold sentence: a
    misaligned prediction would otherwise be scored silently against the wrong words."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    words = 0
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if isinstance(gold_tags, str) or isinstance(predicted_tags, str):
            raise ValueError(f"sentence {index} is a string, not a sequence of tags")
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        words += len(gold_tags)
    if words == 0:
        raise ValueError("no words to score")
    return words


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Fraction of words whose predicted tag equals the gold tag: the metric of tagging tasks without entities
    (part of speech), where every word is one decision."""
    words = _check_sentences(gold, predicted)
    correct = sum(g == p for gold_tags, predicted_tags in zip(gold, predicted, strict=True)
                  for g, p in zip(gold_tags, predicted_tags, strict=True))
    return correct / words


def _is_entity_tag(label: str) -> bool:
    return len(label) > 2 and label[0] in "BI" and label[1] == "-"


def is_bio(labels: Iterable[str]) -> bool:
    """True when the labels form a BIO (IOB2) entity scheme: only ``O``, ``B-<type>`` and ``I-<type>``, with at
    least one entity label. Decides whether a token task is scored by entity spans (NER) or per word (UPOS
    tags such as NOUN or VERB would otherwise be misread as chunk prefixes)."""
    any_entity = False
    for label in labels:
        if _is_entity_tag(label):
            any_entity = True
        elif label != "O":
            return False
    return any_entity


def entity_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of one sentence as ``(type, start, end)`` with ``end`` exclusive, under seqeval's default
    (conlleval) reading of invalid transitions: see the module docstring.

    Tags other than ``O``, ``B-<type>`` and ``I-<type>`` raise ValueError: a tag set of another scheme would be
    split into meaningless chunks instead of failing."""
    spans: list[Span] = []
    open_type: str | None = None  # type of the entity being read, None outside one
    start = 0
    for index, tag in enumerate([*tags, "O"]):  # the final O closes an entity that reaches the end
        if tag == "O":
            prefix, type_ = "O", None
        elif _is_entity_tag(tag):
            prefix, type_ = tag[0], tag[2:]
        else:
            raise ValueError(f"tag {tag!r} at position {index} is not O, B-<type> or I-<type>")
        continues = prefix == "I" and type_ == open_type
        if open_type is not None and not continues:
            spans.append((open_type, start, index))
        if type_ is not None and not continues:
            start = index
        open_type = type_
    return spans


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of predicted entities that match a gold entity exactly (type, start and
    end, within the same sentence), as NER is reported; also the numbers of gold and predicted entities, which
    tell a zero score from an empty evaluation."""
    _check_sentences(gold, predicted)
    n_gold = n_predicted = n_correct = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans = set(entity_spans(gold_tags))
        predicted_spans = set(entity_spans(predicted_tags))
        n_gold += len(gold_spans)
        n_predicted += len(predicted_spans)
        n_correct += len(gold_spans & predicted_spans)
    precision = _ratio(n_correct, n_predicted)
    recall = _ratio(n_correct, n_gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "gold_entities": n_gold, "predicted_entities": n_predicted}


def classification_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro F1 of one label per text. Macro F1 (scikit-learn's ``average="macro"``) is the
    unweighted mean of per-label F1 over every label seen in gold or predicted, so rare classes count as much
    as frequent ones; a label never predicted correctly contributes 0."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predicted")
    if not gold:
        raise ValueError("no texts to score")
    correct: Counter[str] = Counter(g for g, p in zip(gold, predicted, strict=True) if g == p)
    gold_counts = Counter(gold)
    predicted_counts = Counter(predicted)
    labels = set(gold_counts) | set(predicted_counts)
    # per-label F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (gold + predicted), 0 when tp = 0
    f1s = [2 * correct[label] / (gold_counts[label] + predicted_counts[label]) for label in labels]
    return {"accuracy": sum(correct.values()) / len(gold), "macro_f1": sum(f1s) / len(f1s)}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def task_metrics(task: str, gold: Sequence[Sequence[str]] | Sequence[str],
                 predicted: Sequence[Sequence[str]] | Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """All metrics reported for ``task``: token accuracy for every token task, plus entity precision, recall
    and F1 when ``labels`` are a BIO scheme; accuracy and macro F1 for a text task. ``gold`` and ``predicted``
    hold tag sequences (one per sentence) for a token task and one label per text for a text task."""
    _check_task(task)
    if task == TEXT_TASK:
        return classification_scores(gold, predicted)  # type: ignore[arg-type]
    scores = {"accuracy": token_accuracy(gold, predicted)}
    if is_bio(labels):
        entities = entity_scores(gold, predicted)
        scores.update({key: entities[key] for key in ("precision", "recall", "f1")})
    return scores


def main_metric(task: str, labels: Sequence[str]) -> str:
    """The metric that picks the best model on the validation set: entity ``"f1"`` for a BIO token task, since
    entity F1 is what NER reports and token accuracy is dominated by the ``O`` tag (a tagger that finds no
    entity at all scores above 90% on WNUT-17); ``"accuracy"`` otherwise."""
    _check_task(task)
    return "f1" if task == TOKEN_TASK and is_bio(labels) else "accuracy"
