"""probformer.models.registry, the architecture registry: every family has every fact, the facts agree with
the built models, and no code outside models/ branches on an architecture's name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from torch import nn

import probformer
from probformer.models import ARCHITECTURES, Architecture, architecture, architecture_of
from probformer.models.accounting import ActivationTerms, Precision

PACKAGE = Path(probformer.__file__).resolve().parent
BENCHMARKS = PACKAGE.parents[1] / "benchmarks"
FACTS = [f.name for f in dataclasses.fields(Architecture)]
OPTIONAL_FACTS = {"sequence_prefix_roles"}  # PT reads ROOT, not a prefix token


def tiny_config(name: str):
    entry = architecture(name)
    return entry.config_class(**entry.coord_check_base(32, 128, 16))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_entry_has_every_fact(name: str):
    entry = ARCHITECTURES[name]
    assert entry.name == name
    missing = [fact for fact in FACTS if getattr(entry, fact) in (None, "", ()) and fact not in OPTIONAL_FACTS]
    assert not missing, f"{name} lacks {missing}"
    for fact in ("count_parameters", "flops_per_token", "activation_terms", "width_step", "budget_knob_absent",
                 "coord_check_base"):
        assert callable(getattr(entry, fact)), fact
    config = tiny_config(name)
    named = {*entry.shape_fields, *entry.base_fields, *entry.variant_fields, entry.budget_knob,
             *(field for field, _ in entry.shape_symbols)}
    assert all(hasattr(config, field) for field in named), sorted(f for f in named if not hasattr(config, f))
    assert entry.coord_check_lr > 0 and entry.width_step(config) >= 1
    assert entry.flops_per_token(config, 16, 0.15) > 0
    terms = entry.activation_terms(config, 16, Precision("fp32", "cpu"), 0.15)
    assert isinstance(terms, ActivationTerms) and terms.depth >= 1 and terms.token_terms
    assert architecture_of(entry.model_type) is entry


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'gpt'"):
        architecture("gpt")
    with pytest.raises(ValueError, match="not a probformer architecture"):
        architecture_of("bert")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_count_parameters_matches_the_built_model(name: str):
    entry = architecture(name)
    config = tiny_config(name)
    model = entry.model_class(config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # tied weights once
    counts = entry.count_parameters(config)
    assert counts["total"] == trainable
    assert counts["embedding"] + counts["non_embedding"] == counts["total"]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_tap_prefix_labels_the_models_taps(name: str):
    from probformer.experiments.coord_check import activation_taps

    entry = architecture(name)
    model = entry.model_class(tiny_config(name))
    per_application = [label for label in activation_taps(model) if "." in label]
    assert per_application and all(re.fullmatch(rf"{entry.tap_prefix}\d+\.\w+", label) for label in per_application)
    assert isinstance(next(iter(activation_taps(model).values())), nn.Identity)


# -- no architecture branches outside the registry -------------------------------------------------
def _names_pattern() -> str:
    name = "|".join(re.escape(n) for n in ARCHITECTURES)
    quoted = rf"""["'](?:{name})["']"""
    return rf"[(\[]\s*{quoted}(?:\s*,\s*{quoted}){{{len(ARCHITECTURES) - 1}}}\s*,?\s*[)\]]"


BRANCHES = [
    (re.compile(r"\barch\s*(?:==|!=)"), "compares an architecture name"),
    (re.compile(r"""\barch\s+(?:not\s+)?in\s*[(\[{]\s*["']"""), "tests an architecture name against literal names"),
    (re.compile(r"\bmodel_type\s*(?:==|!=)\s*[\"']probformer-"), "compares a probformer model_type"),
    (re.compile(_names_pattern()), "lists the architecture names"),
]


def _sources() -> list[Path]:
    models = PACKAGE / "models"
    files = [p for p in PACKAGE.rglob("*.py") if models not in p.parents]
    return files + sorted(BENCHMARKS.glob("*.py"))


def test_no_architecture_branch_outside_models():
    found = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in BRANCHES:
                if pattern.search(code):
                    found.append(f"{path.relative_to(PACKAGE.parents[1])}:{number}: {what}: {line.strip()}")
    assert not found, "ask probformer.models.architecture(arch) instead:\n" + "\n".join(found)


def test_the_branch_patterns_catch_what_they_should():
    caught = [
        'if arch == "pt":',
        'step = ref.head_dim if arch in ("bert", "ut") else 1',
        'if spec.arch != "ut":',
        'prefix = "it" if model.config.model_type == "probformer-pt" else "layer"',
        'ARCHS = ("pt", "bert", "ut")',
        "for a in ['ut', 'pt', 'bert']:",
    ]
    allowed = [
        "for arch in ARCHITECTURES:",
        "for arch in spec.archs:",
        'if train and arch not in (None, train.model["arch"]):',
        'mask_tokens(ids, "bert", 0.15)',
        'DEFAULT_MASK_PROB = {"bert": 0.15, "pt2023": 0.30}',
    ]
    assert all(any(p.search(line) for p, _ in BRANCHES) for line in caught)
    assert not any(p.search(line) for line in allowed for p, _ in BRANCHES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_a_sequence_classifier_export_makes_the_tokenizer_add_the_prefix_it_was_trained_with(name, tmp_path):
    from tokenizers import Tokenizer

    from probformer.data.tokenization import train_wordpiece

    entry = ARCHITECTURES[name]
    tokenizer_file = tmp_path / "tokenizer.json"
    train_wordpiece(["the cat sat on the mat", "a dog ran"] * 20, vocab_size=64).save(str(tokenizer_file))
    fields = {**entry.coord_check_base(32, 64, 16), "num_labels": 2}
    config = entry.config_class(**fields, **({"use_root": True} if name == "pt" else {}))
    for task in ("token-classification", "text-classification"):
        model = entry.task_class(task)(config)
        assert entry.task_of(model) == task
        out = entry.export(model, tmp_path / task, tokenizer_file)
        ids = Tokenizer.from_file(str(out / "tokenizer.json")).encode("the cat").ids
        prefix = list(entry.input_prefix_ids(task))
        assert ids[: len(prefix)] == prefix and len(ids) == len(prefix) + 2
    assert entry.input_prefix_ids("fill-mask") == ()
