"""The architecture registry: per ``arch`` name its config and model classes, its Hugging Face
registration and its export (weights plus the tokenizer files transformers needs offline).

Everything that has to agree across the three model families lives here once, so a new family is
one :class:`Architecture` entry. ``import probformer`` calls :func:`register_with_transformers`,
after which ``AutoConfig``, ``AutoModelForMaskedLM``, ``AutoTokenizer`` and
``transformers.pipeline("fill-mask", model=dir)`` load a run's ``model/`` directory, with no
``trust_remote_code``: the classes are registered in-process.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import (AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerFast)

from probformer.data.tokenization import SPECIAL_TOKENS
from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.bert.modeling_bert import ProbformerBertForMaskedLM
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM
from probformer.models.ut.configuration_ut import UniversalTransformerConfig
from probformer.models.ut.modeling_ut import UniversalTransformerForMaskedLM

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# Role of each special token for transformers, in SPECIAL_TOKENS' id order ([PAD] = 0 ... [MASK] = 4).
_SPECIAL_TOKEN_ROLES = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS,
                                strict=True))


@dataclass(frozen=True)
class Architecture:
    """One model family: what ``model.arch`` names, and how it is built, registered and exported."""

    name: str
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def build(self, **config_kwargs) -> PreTrainedModel:
        """A freshly initialised model built from config fields."""
        return self.model_class(self.config_class(**config_kwargs))

    def export(self, model: PreTrainedModel, directory: Path, tokenizer_file: Path,
               state_dict: dict | None = None) -> Path:
        """Write ``model`` (safetensors + config.json) and its tokenizer into ``directory`` so that
        transformers' Auto classes and the fill-mask pipeline load it offline. ``state_dict``: full
        weights gathered from a sharded run (default: the model's own)."""
        directory = Path(directory)
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        if Path(tokenizer_file).resolve() != (directory / TOKENIZER_FILE).resolve():
            shutil.copy(tokenizer_file, directory / TOKENIZER_FILE)
        write_tokenizer_config(directory, model_max_length=int(model.config.max_position_embeddings))
        return directory


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("pt", PTConfig, PTForMaskedLM),
        Architecture("bert", ProbformerBertConfig, ProbformerBertForMaskedLM),
        Architecture("ut", UniversalTransformerConfig, UniversalTransformerForMaskedLM),
    )
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def architecture_of(model_type: str | None) -> Architecture:
    """The registered family of a ``model_type`` (what config.json stores)."""
    for arch in ARCHITECTURES.values():
        if arch.model_type == model_type:
            return arch
    raise ValueError(f"model_type {model_type!r} is not a probformer architecture; "
                     f"known: {', '.join(a.model_type for a in ARCHITECTURES.values())}")


def write_tokenizer_config(directory: Path, model_max_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json for ``PreTrainedTokenizerFast`` over our
    tokenizer.json, written by hand rather than by ``save_pretrained``: the class that transformers
    5 records there does not exist in transformers 4, and these two files load in both.

    The tokenizer has no post-processor, so HF tokenizers add no [CLS]/[SEP]: inference inputs are
    exactly what the trainer fed (running text, documents separated by [SEP], never a [CLS])."""
    directory = Path(directory)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **_SPECIAL_TOKEN_ROLES,
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "attention_mask"],  # our models take no token_type_ids
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (directory / SPECIAL_TOKENS_MAP_FILE).write_text(json.dumps(_SPECIAL_TOKEN_ROLES, indent=2) + "\n")


def ensure_tokenizer_config(directory: Path) -> bool:
    """Add the HF tokenizer files to a model directory saved before they were written (older
    probformer versions saved only tokenizer.json). Returns whether anything was written."""
    directory = Path(directory)
    if (directory / TOKENIZER_CONFIG_FILE).exists() or not (directory / TOKENIZER_FILE).exists():
        return False
    config = json.loads((directory / "config.json").read_text())
    write_tokenizer_config(directory, model_max_length=int(config.get("max_position_embeddings", 512)))
    return True


_registered = False


def register_with_transformers() -> None:
    """Register every architecture with AutoConfig / AutoModelForMaskedLM / AutoTokenizer (idempotent)."""
    global _registered
    if _registered:
        return
    for arch in ARCHITECTURES.values():
        AutoConfig.register(arch.model_type, arch.config_class, exist_ok=True)
        AutoModelForMaskedLM.register(arch.config_class, arch.model_class, exist_ok=True)
        # For directories without tokenizer_config.json AutoTokenizer falls back to the model type.
        AutoTokenizer.register(arch.config_class, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
    _registered = True
