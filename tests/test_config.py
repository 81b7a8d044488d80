"""Run configuration: defaults, YAML files, presets, typed ``key=value`` overrides, one-line errors."""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib import resources

import pytest
import yaml

from probformer.config import (
    DATA_OWNED_MODEL_KEYS,
    ConfigError,
    DataConfig,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    model_fields,
    preset_names,
)
from probformer.models import MODEL_CLASSES


def config_error(*overrides: str, path=None, preset=None) -> str:
    """The one-line message of the ConfigError that loading with these overrides raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, preset, list(overrides))
    message = str(err.value)
    assert "\n" not in message and message
    return message


def get(config: TrainConfig, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


# -- building --------------------------------------------------------------------------------------
def test_defaults_build():
    config = load_config()
    assert config == TrainConfig()
    assert config.model == {"arch": "pt"}
    assert isinstance(config.data, DataConfig) and isinstance(config.optim, OptimConfig)
    assert config.data.source == "sotu" and config.data.mask_style == "bert"
    assert config.data.resolved_mask_prob == 0.15
    assert load_config(overrides=["data.mask_style=pt2023"]).data.resolved_mask_prob == 0.30
    assert load_config(overrides=["data.mask_style=pt2023", "data.mask_prob=0.2"]).data.resolved_mask_prob == 0.2
    assert config.total_steps == config.steps
    budget = load_config(overrides=["token_budget=1e6", "batch_size=10", "grad_accum=2", "data.seq_len=100"])
    assert budget.token_budget == 1_000_000 and budget.total_steps == 500
    assert config_from_dict(config.to_dict()) == config  # to_dict round-trips


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"arch": "bert", "hidden_size": 64, "num_heads": 2, "parametrization": "sp"},
        "data": {"source": "corpus.jsonl", "text_field": "body", "mask_style": "pt2023", "mask_prob": None},
        "optim": {"lr": 3e-3, "decay": "linear"},
        "steps": 50,
        "precision": "fp32",
    }))
    config = load_config(path, overrides=["optim.lr=1e-3", "model.hidden_size=128", "steps=60"])
    assert config.model == {"arch": "bert", "hidden_size": 128, "num_heads": 2, "parametrization": "sp"}
    assert (config.data.source, config.data.text_field, config.data.mask_style) == ("corpus.jsonl", "body", "pt2023")
    assert config.data.mask_prob is None and config.data.resolved_mask_prob == 0.30
    assert config.optim.lr == 1e-3 and config.optim.decay == "linear" and config.optim.beta2 == 0.98  # merged
    assert config.steps == 60 and config.precision == "fp32"
    assert config.data.vocab_size == DataConfig().vocab_size


def test_yaml_sections_may_be_empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == TrainConfig()
    path.write_text("model:\ndata:\noptim:\n")  # every key commented out: defaults
    assert load_config(path) == TrainConfig()


def test_preset_tiny():
    assert "tiny" in preset_names()
    raw = yaml.safe_load((resources.files("probformer.configs") / "tiny.yaml").read_text())
    config = load_config(preset="tiny")
    assert config.model == raw["model"]
    assert (config.data.vocab_size, config.data.seq_len) == (raw["data"]["vocab_size"], raw["data"]["seq_len"])
    run_keys = ("batch_size", "steps", "eval_interval", "eval_batches", "checkpoint_interval", "log_interval",
                "out_dir")
    for key in run_keys:
        assert getattr(config, key) == raw[key]
    # preset < file < overrides
    assert load_config(preset="tiny", overrides=["model.hidden_size=48"]).model["hidden_size"] == 48
    assert load_config(preset="tiny").model["num_iterations"] == raw["model"]["num_iterations"]


def test_preset_then_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("steps: 7\nmodel:\n  rank: 8\n")
    config = load_config(path, "tiny", ["steps=9"])
    assert config.steps == 9 and config.model["rank"] == 8 and config.model["hidden_size"] == 32


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.lr=3e-3", "optim.lr", 3e-3),
        ("optim.lr=1e-2", "optim.lr", 1e-2),
        ("optim.lr=0.5", "optim.lr", 0.5),
        ("optim.lr=1", "optim.lr", 1.0),
        ("optim.eps=1e-06", "optim.eps", 1e-6),
        ("batch_size=16", "batch_size", 16),
        ("steps=2e3", "steps", 2000),
        ("progress=false", "progress", False),
        ("tensorboard=no", "tensorboard", False),
        ("test_eval=True", "test_eval", True),
        ("data.lowercase=false", "data.lowercase", False),
        ("data.mask_prob=null", "data.mask_prob", None),
        ("data.mask_prob=0.25", "data.mask_prob", 0.25),
        ("token_budget=null", "token_budget", None),
        ("token_budget=5000000", "token_budget", 5_000_000),
        ("eval_batches=null", "eval_batches", None),
        ("threads=4", "threads", 4),
        ("data.cache_dir=/tmp/cache", "data.cache_dir", "/tmp/cache"),
        ("data.source=hf:wikitext:wikitext-103-raw-v1", "data.source", "hf:wikitext:wikitext-103-raw-v1"),
        ("data.mask_style=pt2023", "data.mask_style", "pt2023"),
        ("optim.decay=constant", "optim.decay", "constant"),
        ("precision=bf16", "precision", "bf16"),
        ("out_dir=runs/x", "out_dir", "runs/x"),
        ("model.hidden_size=64", "model.hidden_size", 64),
        ("model.label_dropout=0", "model.label_dropout", 0.0),
        ("model.parametrization=sp", "model.parametrization", "sp"),
        ("model.use_latent_factor=false", "model.use_latent_factor", False),
        ("model.base_hidden_size=null", "model.base_hidden_size", None),
        ("model.base_hidden_size=32", "model.base_hidden_size", 32),
        ("model.width_scaling=rank", "model.width_scaling", "rank"),
    ],
)
def test_overrides_are_typed(override, key, expected):
    value = get(load_config(overrides=[override]), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("lerning_rate=1", ["model", "data", "optim", "batch_size", "steps"]),
        ("data.vocab=100", ["source", "text_field", "vocab_size", "mask_style"]),
        ("optim.learning_rate=1e-3", ["lr", "weight_decay", "beta1", "warmup_fraction"]),
        ("model.hiden_size=64", ["hidden_size", "num_channels", "rank", "parametrization"]),
        ("model.vocab_size=100", ["hidden_size"]),  # filled from the data, not by the user
    ],
)
def test_unknown_keys_name_the_key_and_list_allowed(override, allowed):
    message = config_error(override)
    key = override.partition("=")[0]
    assert message.startswith(f"{key}: unknown key") and "allowed: " in message
    listed = message.partition("allowed: ")[2].split(", ")
    assert set(allowed) <= set(listed) and key.rpartition(".")[2] not in listed


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.lr=abc", "optim.lr", "a number"),
        ("batch_size=2.5", "batch_size", "an integer"),
        ("batch_size=abc", "batch_size", "an integer"),
        ("seed=true", "seed", "an integer"),  # a bool is not a number
        ("optim.lr=true", "optim.lr", "a number"),
        ("progress=maybe", "progress", "true or false"),
        ("progress=2", "progress", "true or false"),
        ("threads=many", "threads", "an integer or null"),
        ("data.mask_prob=high", "data.mask_prob", "a number or null"),
        ("data.mask_style=bart", "data.mask_style", "one of 'bert', 'pt2023'"),
        ("precision=fp16", "precision", "one of 'auto', 'fp32', 'bf16'"),
        ("optim.decay=step", "optim.decay", "one of 'cosine', 'linear', 'constant'"),
        ("out_dir=null", "out_dir", "a string"),
        ("data.source=[a, b]", "data.source", "a string"),
        ("model.hidden_size=abc", "model.hidden_size", "an integer"),
        ("model.hidden_size=64.5", "model.hidden_size", "an integer"),
        ("model.parametrization=foo", "model.parametrization", "one of 'sp', 'mup'"),
        ("model.use_latent_factor=maybe", "model.use_latent_factor", "true or false"),
        ("model.base_rank=abc", "model.base_rank", "an integer or null"),
        ("model.head_dropout=x", "model.head_dropout", "a number"),
    ],
)
def test_bad_value_types(override, key, expected):
    message = config_error(override)
    assert message.startswith(f"{key}: expected {expected}")
    assert repr(yaml.safe_load(override.partition("=")[2])) in message or "null" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("batch_size=0", "batch_size"),
        ("grad_accum=0", "grad_accum"),
        ("steps=-5", "steps"),
        ("eval_interval=0", "eval_interval"),
        ("log_interval=0", "log_interval"),
        ("checkpoint_interval=-1", "checkpoint_interval"),
        ("token_budget=0", "token_budget"),
        ("eval_batches=0", "eval_batches"),
        ("seed=-1", "seed"),
        ("threads=0", "threads"),
        ("data.vocab_size=10", "data.vocab_size"),
        ("data.seq_len=1", "data.seq_len"),
        ("data.valid_fraction=0.6", "data.valid_fraction"),
        ("data.test_fraction=0", "data.test_fraction"),
        ("data.mask_prob=1.5", "data.mask_prob"),
        ("data.mask_prob=0", "data.mask_prob"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.beta1=1", "optim.beta1"),
        ("optim.beta2=1.5", "optim.beta2"),
        ("optim.eps=0", "optim.eps"),
        ("optim.warmup_fraction=1", "optim.warmup_fraction"),
        ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("optim.ternary_norm_penalty=-1", "optim.ternary_norm_penalty"),
    ],
)
def test_out_of_range_values(override, key):
    message = config_error(override)
    assert message.startswith(f"{key}: expected ")
    assert "got " in message


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["model.num_channels=0"], "num_channels"),
        (["model.head_dropout=1.5"], "head_dropout"),
        (["model.arch=bert", "model.hidden_size=30"], "hidden_size"),  # not a multiple of num_heads
        (["model.arch=ut", "model.num_layers=0"], "num_layers"),
    ],
)
def test_model_ranges_are_checked_by_the_architecture(overrides, name):
    message = config_error(*overrides)
    assert message.startswith("model: ") and name in message


def test_unknown_arch():
    message = config_error("model.arch=gpt")
    assert message.startswith("model.arch: unknown architecture 'gpt'")
    assert message.endswith("allowed: bert, pt, ut")
    assert config_error("model.arch=[pt]").startswith("model.arch: unknown architecture")


@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_model_fields_come_from_the_config_signature(arch):
    config_cls = MODEL_CLASSES[arch][0]
    params = inspect.signature(config_cls.__init__).parameters
    expected = {name for name, p in params.items()
                if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and name not in DATA_OWNED_MODEL_KEYS}
    fields = model_fields(arch)
    assert set(fields) == expected and "hidden_size" in fields and "parametrization" in fields
    assert not set(DATA_OWNED_MODEL_KEYS) & set(fields)
    # every field accepts its own default, written as an override string
    overrides = [f"model.arch={arch}"] + [f"model.{name}={yaml.safe_dump(params[name].default).splitlines()[0]}"
                                          for name in sorted(expected)]
    config = load_config(overrides=overrides)
    assert config.model == {"arch": arch, **{name: params[name].default for name in expected}}
    message = config_error(f"model.arch={arch}", "model.hidden_size=abc")
    assert message == "model.hidden_size: expected an integer, got 'abc'"
    message = config_error(f"model.arch={arch}", "model.parametrization=foo")
    assert message.startswith("model.parametrization:") and "'sp'" in message and "'mup'" in message


def test_fields_of_one_arch_are_rejected_for_another():
    message = config_error("model.arch=bert", "model.num_channels=2")
    assert message.startswith("model.num_channels: unknown key for arch 'bert'") and "num_heads" in message
    assert config_error("model.num_layers=2").startswith("model.num_layers: unknown key for arch 'pt'")
    assert load_config(overrides=["model.arch=ut", "model.num_layers=2"]).model == {"arch": "ut", "num_layers": 2}


def test_unknown_preset_missing_file_invalid_yaml(tmp_path):
    message = config_error(preset="huge")
    assert "preset 'huge' not found" in message and "tiny" in message
    assert "not found" in config_error(path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\nsteps: 3\n")
    assert "not valid YAML" in config_error(path=bad)
    bad.write_text("- a\n- list\n")
    assert "must hold a mapping" in config_error(path=bad)


@pytest.mark.parametrize(
    ("content", "start"),
    [
        ("data: 5\n", "data: expected a mapping"),
        ("optim: [1, 2]\n", "optim: expected a mapping"),
        ("model: 5\n", "model: expected a mapping"),
        ("model: abc\n", "model: expected a mapping"),
    ],
)
def test_sections_must_be_mappings(tmp_path, content, start):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    assert config_error(path=path).startswith(start)


def test_malformed_overrides():
    assert "expected key=value" in config_error("optim.lr")
    assert config_error("seed.value=3").startswith("seed: expected an integer")
    assert "steps is not a section" in config_error("steps.value=3", preset="tiny")


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match=r"^data\.seq_len: expected an integer, got 'x'$"):
        TrainConfig(data={"seq_len": "x"})
    with pytest.raises(ConfigError, match=r"^model\.rank: expected an integer"):
        TrainConfig(model={"arch": "pt", "rank": "wide"})
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a number > 0"):
        OptimConfig(lr=0)


def test_cli_reports_config_errors_in_one_line():
    result = subprocess.run([sys.executable, "-m", "probformer", "train", "--set", "optim.lr=abc"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: optim.lr: expected a number, got 'abc'"]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=inf", "optim.lr: expected a finite number, got inf"),
        ("optim.eps=nan", "optim.eps: expected a finite number, got nan"),
        ("data.source=", "data.source: expected 'sotu', a file or directory"),  # was: every file under the cwd
        ("out_dir=", "out_dir: expected a directory path, got ''"),  # was: the current directory
        (f"seed={2**70}", "seed: expected an integer in 0..2^63-1"),
        ("threads=100000", "threads: expected null or an integer in 1..1024"),  # was: a segfault
        (f"data.vocab_size={2**40}", "data.vocab_size: expected an integer in 64..16777216"),  # was: a Rust abort
        ("device=foo", "device: expected auto, cpu, mps, cuda or cuda:N, got 'foo'"),
        ("data.seq_len=1024", "data.seq_len: expected at most model.max_position_embeddings (512)"),
    ],
)
def test_values_no_run_could_use_are_refused(override, message):
    assert config_error(override).startswith(message)


def test_bert_longer_than_its_position_table_is_refused():
    assert config_error("model.arch=bert", "data.seq_len=600").startswith(
        "data.seq_len: expected at most model.max_position_embeddings (512)")
    assert load_config(overrides=["model.arch=bert", "data.seq_len=600", "model.max_position_embeddings=600"])


def test_config_files_with_duplicate_keys_or_other_bytes_are_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1.0e-2\n  lr: 3.0e-2\n")  # PyYAML alone would keep the second silently
    assert config_error(path=path) == f"config file {path} is not valid YAML: duplicate key 'lr' (line 3, column 3)"
    path.write_bytes("optim:\n  lr: 1.0e-2  # caf\xe9\n".encode("latin-1"))
    assert config_error(path=path).startswith(f"config file {path} is not UTF-8 text")
    assert config_error(path=tmp_path).startswith(f"config file {tmp_path} is not a file")
