"""The architecture registry: per ``arch`` name everything the rest of the package needs to know
about a model family, reached through :func:`architecture` (or :func:`architecture_of` from a saved
``model_type``).

An :class:`Architecture` entry names its config and model classes (the MLM model and the token and
sequence classifiers of docs/design.md §9; Hugging Face registration and export follow from them),
its accounting (parameters, training FLOPs per token, activation-memory terms, the budget search's
width grid and secondary knob: ``models/<family>/accounting.py``), its coordinate-check base model
and lr (``models/<family>/coord_check.py``), and the names reports and taps use. Code outside
``models/`` asks the entry and never branches on the name, so a new family is one entry here plus its
model package.

``import probformer`` calls :func:`register_with_transformers`, after which ``AutoConfig``,
``AutoModelForMaskedLM``, ``AutoModelForTokenClassification``, ``AutoModelForSequenceClassification``,
``AutoTokenizer`` and ``transformers.pipeline("fill-mask", model=dir)`` load a run's ``model/``
directory, with no ``trust_remote_code``: the classes are registered in-process. A task class's
``from_pretrained`` on an MLM model's directory loads the encoder and starts a new, zero-initialised
read-out (the MLM read-out is dropped).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from probformer.data.shards import SPECIAL_TOKENS as SPECIAL_TOKEN_NAMES
from probformer.data.shards import special_token_ids
from probformer.data.tokenization import OWN_SPECIAL_IDS, SPECIAL_TOKENS
from probformer.models.accounting import ActivationTerms, Precision
from probformer.models.bert import accounting as bert_accounting
from probformer.models.bert import coord_check as bert_coord_check
from probformer.models.bert.configuration_bert import ProbformerBertConfig
from probformer.models.bert.modeling_bert import (
    ProbformerBertForMaskedLM,
    ProbformerBertForSequenceClassification,
    ProbformerBertForTokenClassification,
)
from probformer.models.pt import accounting as pt_accounting
from probformer.models.pt import coord_check as pt_coord_check
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForMaskedLM, PTForSequenceClassification, PTForTokenClassification
from probformer.models.ut import accounting as ut_accounting
from probformer.models.ut.configuration_ut import UniversalTransformerConfig
from probformer.models.ut.modeling_ut import (
    UniversalTransformerForMaskedLM,
    UniversalTransformerForSequenceClassification,
    UniversalTransformerForTokenClassification,
)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# Role of each special token for transformers, by BERT's token names (whatever their ids).
_SPECIAL_TOKEN_ROLES = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS,
                                strict=True))


@dataclass(frozen=True)
class Architecture:
    """One model family: what ``model.arch`` names, how it is built, registered and exported, what it
    costs, how its coordinate check starts, and what reports call its parts."""

    name: str
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]  # the MLM model
    # Task models (docs/design.md §9): a tag per token, a label per sequence; same encoder parameter names.
    token_classification_class: type[PreTrainedModel]
    sequence_classification_class: type[PreTrainedModel]
    # Accounting from a config alone (tests hold each to the built model / torch / autograd).
    count_parameters: Callable[[PretrainedConfig], dict[str, int]]  # total / embedding / non_embedding
    flops_per_token: Callable[[PretrainedConfig, int, float], float]  # (config, seq_len, mask_fraction)
    activation_terms: Callable[[PretrainedConfig, int, Precision, float], ActivationTerms]  # (.., precision, ..)
    # The budget search (sizing.budget.config_for_budget): widths are multiples of width_step(config);
    # budget_knob is the one field it then tunes to land on a budget, unless budget_knob_absent(config)
    # says why the config has none (a phrase: "without the latent factor").
    width_step: Callable[[PretrainedConfig], int]
    budget_knob: str
    budget_knob_absent: Callable[[PretrainedConfig], str | None]
    # The coordinate check's base model at width N0: config fields from (base_width, vocab_size, seq_len).
    coord_check_base: Callable[[int, int, int], dict[str, Any]]
    coord_check_lr: float
    # Names. The model's per-application identity taps ``taps.<i>.<kind>`` are labelled
    # ``<tap_prefix><i>.<kind>``; depth_name is one application (layer, step, iteration) in reports.
    tap_prefix: str
    depth_name: str
    shape_fields: tuple[str, ...]  # width and depth, in reading order
    base_fields: tuple[str, ...]  # the muP base the multipliers are relative to
    variant_fields: tuple[str, ...]  # implementation choices that keep the shape and the count
    shape_symbols: tuple[tuple[str, str], ...]  # (field, symbol) for a one-line shape: N=128 L=4 ...
    # Special tokens put before a text of a sentence task (docs/design.md §9), by role ("cls": data/shards.py's
    # names), whose ids come from the run's tokenizer (input_prefix_ids): BERT's pooler reads a [CLS] at
    # position 0; PT reads its ROOT variable (inside the model) and needs none.
    sequence_prefix_roles: tuple[str, ...] = ()
    # Model fields a task model of this family defaults to, per task (a config or an init_from run's
    # own value wins): PT's sequence read-out is ROOT's label logits, so a PT text classifier has ROOT.
    task_model_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def short_shape(self, config: PretrainedConfig) -> str:
        """The shape on one line in docs/design.md's symbols, e.g. ``N=128 L=4 H=4 I=512``."""
        return " ".join(f"{symbol}={getattr(config, field)}" for field, symbol in self.shape_symbols)

    def build(self, **config_kwargs) -> PreTrainedModel:
        """A freshly initialised model built from config fields."""
        return self.model_class(self.config_class(**config_kwargs))

    def task_class(self, task: str) -> type[PreTrainedModel]:
        """The model class for ``task``: one of :data:`TASKS` (the Hugging Face pipeline names)."""
        classes = {"fill-mask": self.model_class, "token-classification": self.token_classification_class,
                   "text-classification": self.sequence_classification_class}
        if task not in classes:
            raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
        return classes[task]

    def input_prefix_roles(self, task: str) -> tuple[str, ...]:
        """The special tokens (roles: ``"cls"``, ...) put before each row's text for ``task``."""
        self.task_class(task)  # a known task
        return self.sequence_prefix_roles if task == "text-classification" else ()

    def input_prefix_ids(self, task: str, special_ids: Mapping[str, int] = OWN_SPECIAL_IDS) -> tuple[int, ...]:
        """The ids the data layer puts before each row's text for ``task`` (and the exported
        tokenizer's post-processor adds, so that pipelines feed the model what it was trained on):
        :meth:`input_prefix_roles` in the tokenizer's ``special_ids`` (role -> id, data/shards.py's
        ``special_token_ids``; default probformer's own layout, [CLS] = 2)."""
        return tuple(int(special_ids[role]) for role in self.input_prefix_roles(task))

    def task_of(self, model: PreTrainedModel) -> str:
        """The task (a :data:`TASKS` name) that ``model``'s class is for."""
        for task in TASKS:
            if isinstance(model, self.task_class(task)):
                return task
        raise ValueError(f"{type(model).__name__} is not one of the {self.name!r} model classes")

    def export(self, model: PreTrainedModel, directory: Path, tokenizer_file: Path,
               state_dict: dict | None = None) -> Path:
        """Write ``model`` (safetensors + config.json) and its tokenizer into ``directory`` so that
        transformers' Auto classes and pipelines load it offline. ``state_dict``: full weights gathered
        from a sharded run (default: the model's own).

        The tokenizer gets a post-processor that adds exactly the prefix the model's rows had
        (:meth:`input_prefix_ids`, in that tokenizer's own ids), and none when they had none (a masked
        LM's running text, a tagger's words): a pretrained tokenizer's own ``[CLS] $A [SEP]`` template is
        replaced, so that a pipeline feeds the model what it was trained on."""
        directory = Path(directory)
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        if Path(tokenizer_file).resolve() != (directory / TOKENIZER_FILE).resolve():
            shutil.copy(tokenizer_file, directory / TOKENIZER_FILE)
        set_prefix_processor(directory / TOKENIZER_FILE, self.input_prefix_roles(self.task_of(model)))
        write_tokenizer_config(directory, model_max_length=int(model.config.max_position_embeddings))
        return directory


TASKS = ("fill-mask", "token-classification", "text-classification")
_ENCODER_SHAPE = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
_ENCODER_BASE = ("base_hidden_size", "base_head_dim")

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "pt", PTConfig, PTForMaskedLM, PTForTokenClassification, PTForSequenceClassification,
            count_parameters=pt_accounting.count_parameters,
            flops_per_token=pt_accounting.training_flops_per_token,
            activation_terms=pt_accounting.activation_terms,
            width_step=pt_accounting.width_step,
            budget_knob=pt_accounting.BUDGET_KNOB,
            budget_knob_absent=pt_accounting.budget_knob_absent,
            coord_check_base=pt_coord_check.coord_check_base,
            coord_check_lr=pt_coord_check.COORD_CHECK_LR,
            tap_prefix="it",
            depth_name="iteration",
            shape_fields=("hidden_size", "num_channels", "rank", "latent_size", "num_iterations", "max_distance"),
            base_fields=("base_hidden_size",),
            variant_fields=("mfvi_kernel",),
            shape_symbols=(("hidden_size", "N"), ("num_channels", "h"), ("rank", "r"), ("latent_size", "M"),
                           ("num_iterations", "T")),
            task_model_defaults={"text-classification": {"use_root": True}},
        ),
        Architecture(
            "bert", ProbformerBertConfig, ProbformerBertForMaskedLM, ProbformerBertForTokenClassification,
            ProbformerBertForSequenceClassification,
            count_parameters=bert_accounting.count_parameters,
            flops_per_token=bert_accounting.training_flops_per_token,
            activation_terms=bert_accounting.activation_terms,
            width_step=bert_accounting.width_step,
            budget_knob=bert_accounting.BUDGET_KNOB,
            budget_knob_absent=bert_accounting.budget_knob_absent,
            coord_check_base=bert_coord_check.coord_check_base,
            coord_check_lr=bert_coord_check.COORD_CHECK_LR,
            tap_prefix="layer",
            depth_name="layer",
            shape_fields=_ENCODER_SHAPE,
            base_fields=_ENCODER_BASE,
            variant_fields=("pre_layer_norm",),
            shape_symbols=(("hidden_size", "N"), ("num_layers", "L"), ("num_heads", "H"), ("intermediate_size", "I")),
            sequence_prefix_roles=("cls",),
        ),
        # BERT's layer shared across T steps: BERT's base model, lr and knobs, its own count and memory.
        Architecture(
            "ut", UniversalTransformerConfig, UniversalTransformerForMaskedLM,
            UniversalTransformerForTokenClassification, UniversalTransformerForSequenceClassification,
            count_parameters=ut_accounting.count_parameters,
            flops_per_token=ut_accounting.training_flops_per_token,
            activation_terms=ut_accounting.activation_terms,
            width_step=ut_accounting.width_step,
            budget_knob=ut_accounting.BUDGET_KNOB,
            budget_knob_absent=ut_accounting.budget_knob_absent,
            coord_check_base=bert_coord_check.coord_check_base,
            coord_check_lr=bert_coord_check.COORD_CHECK_LR,
            tap_prefix="step",
            depth_name="step",
            shape_fields=_ENCODER_SHAPE,
            base_fields=_ENCODER_BASE,
            variant_fields=("pre_layer_norm",),
            shape_symbols=(("hidden_size", "N"), ("num_layers", "T"), ("num_heads", "H"), ("intermediate_size", "I")),
            sequence_prefix_roles=("cls",),
        ),
    )
}


def architecture(name: str) -> Architecture:
    """The registered family ``name`` (what ``model.arch`` holds); ValueError naming the known ones."""
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


def set_prefix_processor(tokenizer_file: Path, prefix_roles: tuple[str, ...]) -> None:
    """Make the tokenizer put the special tokens ``prefix_roles`` (``"cls"``, ...), at its own ids,
    before every text it encodes with special tokens, as HF pipelines do: a sequence classifier that
    pools its first position then reads the [CLS] it was trained with. No roles: the tokenizer adds
    nothing (a post-processor it has is removed; a file without one is left as it is, byte for byte).
    A tokenizer lacking one of BERT's special tokens is a one-line DataError."""
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    if not prefix_roles:
        spec = json.loads(tokenizer.to_str())
        if spec.get("post_processor") is not None:
            spec["post_processor"] = None
            Tokenizer.from_str(json.dumps(spec)).save(str(tokenizer_file))
        return
    ids = special_token_ids(tokenizer, str(tokenizer_file), needed_by="a task model's export")
    prefix = [(SPECIAL_TOKEN_NAMES[role], ids[role]) for role in prefix_roles]
    tokens = [token for token, _ in prefix]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join([*tokens, "$A"]), pair=" ".join([*tokens, "$A", "$B"]), special_tokens=sorted(set(prefix)))
    tokenizer.save(str(tokenizer_file))


def find_model_directory(run: str | Path) -> Path | None:
    """The exported model of a run directory (its ``model/``), or ``run`` itself if it is one (holds a
    config.json); None if neither is."""
    path = Path(run)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def write_tokenizer_config(directory: Path, model_max_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json for ``PreTrainedTokenizerFast`` over our
    tokenizer.json, written by hand rather than by ``save_pretrained``: the class that transformers
    5 records there does not exist in transformers 4, and these two files load in both.

    An MLM's tokenizer has no post-processor (:meth:`Architecture.export` removes a pretrained one's), so HF
    tokenizers add no [CLS]/[SEP]:
    inference inputs are exactly what the trainer fed (running text, documents separated by [SEP],
    never a [CLS]); a task model's adds exactly its rows' prefix (:func:`set_prefix_processor`). The
    special tokens are named by BERT's names, whatever their ids in the tokenizer."""
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


_registered = False


def register_with_transformers() -> None:
    """Register every architecture with AutoConfig, AutoModelForMaskedLM, AutoModelForTokenClassification,
    AutoModelForSequenceClassification and AutoTokenizer (idempotent)."""
    global _registered
    if _registered:
        return
    for arch in ARCHITECTURES.values():
        AutoConfig.register(arch.model_type, arch.config_class, exist_ok=True)
        AutoModelForMaskedLM.register(arch.config_class, arch.model_class, exist_ok=True)
        AutoModelForTokenClassification.register(arch.config_class, arch.token_classification_class, exist_ok=True)
        AutoModelForSequenceClassification.register(arch.config_class, arch.sequence_classification_class,
                                                    exist_ok=True)
        # For directories without tokenizer_config.json AutoTokenizer falls back to the model type.
        AutoTokenizer.register(arch.config_class, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
    _registered = True
