"""The losses of the token and sequence classifiers every architecture shares (docs/design.md §9).

They follow Hugging Face's ``*ForTokenClassification`` / ``*ForSequenceClassification``: token labels
use -100 for positions that are not scored (a word's later subword pieces, padding); a sequence
classifier's ``config.problem_type`` picks regression (MSE), single-label (cross-entropy) or
multi-label (BCE with logits), and is inferred from ``num_labels`` and the labels' dtype when unset,
as HF does. Losses are computed in >= fp32 under autocast, as the MLM loss is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from probformer.data.masking import IGNORE_INDEX  # one label value for "not scored"
from probformer.parametrization import Role, tag

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def classifier_linear(config: PretrainedConfig) -> nn.Linear:
    """A task head's classifier W_task, b (docs/design.md §9): hidden_size -> num_labels, the weight
    with the output role (zero init and the alpha_out N0/N multiplier under muP), the bias a vector."""
    return tag(nn.Linear(config.hidden_size, config.num_labels), weight=Role.OUTPUT, bias=Role.VECTOR)


def _accurate(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mean cross-entropy of (B, n, C) logits over the labels that are not -100; None without labels."""
    if labels is None:
        return None
    return F.cross_entropy(_accurate(logits).flatten(0, -2), labels.flatten().to(logits.device),
                           ignore_index=IGNORE_INDEX)


def problem_type(config: PretrainedConfig, labels: torch.Tensor) -> str:
    """``config.problem_type``, or HF's inference from ``num_labels`` and the labels' dtype."""
    if config.problem_type is not None:
        if config.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {config.problem_type!r}")
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor | None,
                                 config: PretrainedConfig) -> torch.Tensor | None:
    """The loss of (B, C) logits against ``labels`` (B,) or (B, C) by the problem type; None without labels."""
    if labels is None:
        return None
    labels = labels.to(logits.device)
    kind = problem_type(config, labels)
    if kind == "regression":
        if config.num_labels == 1:  # one score per sequence: labels (B,) or (B, 1)
            return F.mse_loss(_accurate(logits).view(-1), _accurate(labels).view(-1))
        return F.mse_loss(_accurate(logits), _accurate(labels))
    if kind == "single_label_classification":
        return F.cross_entropy(_accurate(logits).view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(_accurate(logits), _accurate(labels))
