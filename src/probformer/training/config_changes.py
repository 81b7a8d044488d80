"""Which configuration keys a run may change when it is resumed: one table, read by ``train --resume``
and by the experiments' check that a run directory holds the run a spec asks for (experiments/runs.py).

A resumed run continues a checkpoint: its weights (the model), its optimizer state, and its position
in the training stream, which counts batches of a fixed size in a fixed order drawn from the seed. A
key that would change what those mean is refused (:data:`REFUSED`, with the reason); the others are
allowed and each change is said once at the start (:func:`check_resume`). Where a run is written
(``out_dir``, ``data.cache_dir``) is not part of what it is (:data:`IGNORED`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from probformer.config import ConfigError, DataConfig, OptimConfig, TaskConfig, model_defaults

_CORPUS = "the corpus (its text, splits, tokenizer and token ids) would be another one"
REFUSED: dict[str, str] = {  # a key, or a section and every key under it -> why a resumed run cannot change it
    "model": "the checkpoint holds this model's weights",
    "seed": "the order of the batches and their masks are drawn from it: the saved data position would "
            "point into another order",
    "batch_size": "the saved data position counts batches of this size",
    "grad_accum": "the saved data position counts micro-batches per step",
    "data.seq_len": "the training blocks, which the saved data position counts, are cut at this length",
    "data.rows": "the saved data position counts rows of this kind (blocks, sentences or documents), in an order "
                 "drawn for them by another loader",
    "data.mask_style": "the remaining batches would be masked otherwise than the run's",
    "data.mask_prob": "the remaining batches would be masked otherwise than the run's",
    **dict.fromkeys(("data.source", "data.text_field", "data.vocab_size", "data.valid_fraction",
                     "data.test_fraction", "data.split_seed", "data.lowercase"), _CORPUS),
    "task.name": "the checkpoint holds a model of this task",
    **dict.fromkeys(("task.train", "task.format", "task.tag_column", "task.text_field", "task.label_field",
                     "task.tokenizer"), "the training rows and labels, which the saved data position and the "
                                        "model's label ids count, would be other ones"),
    "task.init_from": "the checkpoint's weights started from it",
}
IGNORED = ("out_dir", "data.cache_dir")  # where a run is written, not what it is

# Allowed changes with something particular to say (every other allowed change is named plainly).
_NOTES = {
    "steps": "the run now ends at the new total, and the lr schedule (warmup, decay) is recomputed for it",
    "token_budget": "the run now ends at the new total, and the lr schedule (warmup, decay) is recomputed for it",
    "optim": "applies from the checkpoint's step on",
    "eval_batches": "evaluations from here on score other batches than the ones before",
    "eval_texts": "evaluations from here on score other texts than the ones before",
    "unigram_bias_init": "no effect: the weights come from the checkpoint",
    "task.epochs": "the run now ends at the new total, and the lr schedule (warmup, decay) is recomputed for it",
    "task.valid": "evaluations from here on score another file; the best model so far was chosen on the old one",
    "task.select_by": "the best model from here on is the best by the new metric, compared with the one kept",
}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"seq_len": 32}}`` -> ``{"data.seq_len": 32}``: mappings are opened (an empty one has
    no keys), anything else is a value. Read through JSON, so a tuple equals its list read back."""
    flat: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(config)).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _rule_key(key: str, table: dict[str, Any] | tuple[str, ...]) -> str | None:
    """The entry of ``table`` that covers ``key``: the key itself or its closest section."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return ".".join(parts[:end])
    return None


def ignored(key: str) -> bool:
    """Whether ``key`` says where a run is written rather than what it is (:data:`IGNORED`)."""
    return _rule_key(key, IGNORED) is not None


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "task": TaskConfig}


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its model, data, optim and task sections completed by their defaults: a field
    added to probformer after a run was written (the model's ``use_root``, ``data.rows``, the ``task``
    section, say) is absent from its train_config.json, and absent means the default, not a change."""
    for name, cls in _SECTIONS.items():
        section = config.get(name)
        if name not in config or isinstance(section, dict):  # a section absent (the task's, once) is all defaults
            defaults = {f.name: f.default for f in dataclasses.fields(cls)}
            config = {**config, name: {**json.loads(json.dumps(defaults)), **(section or {})}}
    model = config.get("model")
    if not isinstance(model, dict):
        return config
    try:
        defaults = model_defaults(model.get("arch", "pt"))
    except ConfigError:  # an unknown arch: compared as written
        return config
    return {**config, "model": {**json.loads(json.dumps(defaults)), **model}}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two ``TrainConfig.to_dict()`` dicts (one read back from
    JSON), in the order of ``new``; a key only one of them has counts as changed, except a model or data
    field left out by a config written before it existed (:func:`with_defaults`). :data:`IGNORED`
    skipped."""
    old_flat, new_flat = flatten(with_defaults(old)), flatten(with_defaults(new))
    keys = list(new_flat) + [k for k in old_flat if k not in new_flat]
    return [k for k in keys if not ignored(k) and old_flat.get(k) != new_flat.get(k)]


def refusal(key: str) -> str | None:
    """Why ``key`` may not change on resume, or None."""
    rule = _rule_key(key, REFUSED)
    return None if rule is None else REFUSED[rule]


def check_resume(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(refused, allowed) changes from the checkpoint's config ``old`` to ``new``: one line per changed
    key with its two values, a refused one with why, an allowed one with what the change means."""
    old_flat, new_flat = flatten(with_defaults(old)), flatten(with_defaults(new))
    refused, allowed = [], []
    for key in changed_keys(old, new):
        change = f"{key} {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
        reason = refusal(key)
        if reason is not None:
            refused.append(f"{change} ({reason})")
        else:
            note = _NOTES.get(key) or _NOTES.get(key.split(".")[0])
            allowed.append(change + (f": {note}" if note else ""))
    return refused, allowed
