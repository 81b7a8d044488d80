"""Size ladder presets, the activation-memory estimate against autograd's saved tensors, and ``probformer size``.

The estimate (probformer.sizing.activation_memory) books every tensor the current forward saves, so on CPU
it must equal the measurement: per token as the slope between two batch sizes (which removes what
does not grow with the batch), the fixed bytes as the intercept. The tolerance is 1%: the bookkeeping
is exact today, and 1% is below the smallest term (an N-wide tensor is ~2% of a layer here), so a
forward that starts saving one more tensor fails this test until its term is added.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib import resources

import pytest
import torch

from probformer.sizing.activation_memory import Precision, estimate_activation_memory, measure_saved_activation_bytes
from probformer.cli import main
from probformer.config import load_config, model_config_class, model_fields, preset_names
from probformer.data.batches import Batch
from probformer.models import build_model
from probformer.sizing.units import parse_memory
from probformer.sizing.budget import config_for_budget, count_parameters
from probformer.sizing.memory_fit import ADAMW_STATE_BYTES, fit_micro_batch

VOCAB = 97
TOLERANCE = 0.01
PT = dict(hidden_size=48, num_channels=3, rank=8, latent_size=80, num_iterations=2)
ENCODER = dict(hidden_size=48, num_layers=2, num_heads=3, intermediate_size=80)
CASES = {  # name -> (arch, config fields): every kernel, depth, dropout and LayerNorm branch of the estimate
    "pt-banded": ("pt", {**PT, "mfvi_kernel": "banded"}),
    "pt-fast": ("pt", {**PT, "mfvi_kernel": "fast"}),
    "pt-fast-T3-D2-no-head-dropout": ("pt", {**PT, "mfvi_kernel": "fast", "num_iterations": 3, "max_distance": 2,
                                             "head_dropout": 0.0}),
    "pt-banded-D1-no-latent": ("pt", {**PT, "mfvi_kernel": "banded", "max_distance": 1, "use_latent_factor": False,
                                      "label_dropout": 0.0}),
    "bert": ("bert", ENCODER),
    "bert-no-dropout": ("bert", {**ENCODER, "hidden_dropout": 0.0, "attention_dropout": 0.0}),
    "bert-pre-ln": ("bert", {**ENCODER, "pre_layer_norm": True}),
    "ut-T3": ("ut", {**ENCODER, "num_layers": 3}),
}
LADDER = sorted(name for name in preset_names() if name.startswith("ladder-"))
TARGETS = {"10m": 10_000_000, "40m": 40_000_000, "110m": 110_000_000, "400m": 400_000_000, "1b": 1_000_000_000}


def batch(size: int, n: int) -> Batch:
    g = torch.Generator().manual_seed(size * 1000 + n)
    ids = torch.randint(5, VOCAB, (size, n), generator=g)
    labels = torch.full((size, n), -100)
    labels[:, ::4] = ids[:, ::4]  # a scored fraction of exactly 1/4
    return Batch(ids, torch.ones(size, n, dtype=torch.long), labels)


def measured_split(model, n: int, precision: str) -> tuple[float, float]:
    """(bytes per token, fixed bytes) from the saved bytes at 2 and 4 sequences of n tokens."""
    small, large = (measure_saved_activation_bytes(model, batch(b, n), precision) for b in (2, 4))
    per_token = (large - small) / (2 * n)
    return per_token, small - per_token * 2 * n


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_estimate_equals_saved_tensors(case: str, precision: str):
    arch, fields = CASES[case]
    if "pre_layer_norm" in fields and "pre_layer_norm" not in model_fields(arch):
        pytest.skip("this BERT has no pre-LN option")
    torch.manual_seed(0)
    model = build_model(arch, vocab_size=VOCAB, **fields).train()
    for n in (16, 40):  # two lengths: the n-wide (attention) terms and the width terms change differently
        estimate = estimate_activation_memory(arch, model.config, seq_len=n, precision=Precision(precision, "cpu"),
                                              mask_fraction=0.25)
        model.enable_activation_checkpointing(False)
        per_token, fixed = measured_split(model, n, precision)
        assert estimate.per_token() == pytest.approx(per_token, rel=TOLERANCE), (n, estimate.token_terms)
        assert estimate.fixed() == pytest.approx(fixed, rel=TOLERANCE, abs=64), (n, estimate.fixed_terms)
        # Under checkpointing the forward keeps each application's inputs and what lies outside the loop.
        model.enable_activation_checkpointing(True)
        kept, _ = measured_split(model, n, precision)
        assert estimate.kept_per_token() == pytest.approx(kept, rel=TOLERANCE), n
        assert estimate.per_token(checkpointing=True) == pytest.approx(kept + estimate.repeated_per_token())


def test_checkpointing_keeps_less_than_a_tenth_at_the_ladder_shapes():
    """What checkpointing buys at seq_len 512 on CUDA: the PT 400M rung keeps < 1/10 of its activations."""
    config = load_config(preset="ladder-pt-400m")
    pt = model_config_class("pt")(**{k: v for k, v in config.model.items() if k != "arch"}, vocab_size=32768)
    estimate = estimate_activation_memory("pt", pt, seq_len=512, precision=Precision("bf16", "cuda"))
    assert estimate.kernel == "fast"
    assert estimate.per_token(checkpointing=True) < estimate.per_token() / 10
    assert estimate.fixed(checkpointing=True) < estimate.fixed() / 4  # weight copies: one iteration's, not T


# -- the ladder ------------------------------------------------------------------------------------
def test_ladder_has_every_rung():
    expected = {f"ladder-{arch}-{size}" for arch in ("pt", "bert", "ut") for size in ("10m", "40m", "110m", "400m")}
    assert set(LADDER) == expected | {"ladder-pt-1b"}


def recorded_command(name: str) -> list[str]:
    text = (resources.files("probformer.configs") / f"{name}.yaml").read_text()
    match = re.search(r"^#\s+probformer (size --arch .*)$", text, re.MULTILINE)
    assert match, f"{name}: no 'probformer size' command recorded"
    return shlex.split(match.group(1))


def size_json(args: list[str], capsys) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", LADDER)
def test_ladder_preset_is_what_its_command_builds(name: str, capsys):
    """Built from the config alone (no weights allocated; the meta device counts the modules): the
    recorded command reproduces the preset's model, which lands within 2% of the rung's budget."""
    config = load_config(preset=name)
    arch = config.model["arch"]
    assert (config.data.vocab_size, config.data.seq_len, config.precision) == (32768, 512, "auto")
    fields = {k: v for k, v in config.model.items() if k != "arch"}
    model_cfg = model_config_class(arch)(**fields, vocab_size=config.data.vocab_size)
    total = count_parameters(arch, model_cfg)["total"]
    assert abs(total - TARGETS[name.rsplit("-", 1)[1]]) <= 0.02 * TARGETS[name.rsplit("-", 1)[1]]
    with torch.device("meta"):
        model = build_model(arch, **fields, vocab_size=config.data.vocab_size)
    assert sum(p.numel() for p in model.parameters()) == total

    command = recorded_command(name)
    report = size_json(command, capsys)
    built = {k: v for k, v in report["model"].items() if k != "arch"}
    assert built == {k: getattr(model_cfg, k) for k in built}, name
    multiple = int(command[command.index("--width-multiple") + 1]) if "--width-multiple" in command else 1
    assert model_cfg.hidden_size % multiple == 0


@pytest.mark.parametrize("name", LADDER)
def test_ladder_micro_batch_fits_80gb(name: str, capsys):
    config = load_config(preset=name)
    report = size_json(["size", "--preset", name, "--device-memory", "80GB"], capsys)
    mode = "checkpointing" if getattr(config, "activation_checkpointing", False) else "none"
    assert 1 <= config.batch_size <= report["device_memory"]["max_batch_size"][mode]
    assert config.batch_size * config.grad_accum == 256


# -- probformer size -------------------------------------------------------------------------------
def test_size_table_reports_memory_and_fit(capsys):
    assert main(["size", "--preset", "ladder-bert-10m", "--device-memory", "24GiB"]) == 0
    out = capsys.readouterr().out
    assert "10,090,240 total" in out and "bf16 autocast on cuda, seq_len 512" in out
    assert "per-layer checkpointing" in out and "largest micro-batch" in out and "10% of the device kept free" in out


def test_size_from_budget_with_width_multiple(capsys):
    report = size_json(["size", "--arch", "bert", "--params", "40M", "--vocab-size", "32768", "--width-multiple", "128",
                        "--set", "model.num_layers=8", "--seq-len", "256", "--precision", "fp32", "--batch-size", "4"],
                       capsys)
    assert report["model"]["hidden_size"] % 128 == 0 and abs(report["relative_error"]) <= 0.02
    act = report["activation_memory"]
    assert act["precision"] == "fp32" and act["micro_batch_bytes"]["none"] == pytest.approx(
        4 * 256 * act["per_token_bytes"]["none"] + act["fixed_bytes"]["none"])


@pytest.mark.parametrize(("args", "message"), [
    (["size", "--arch", "gpt", "--params", "10M"], "invalid choice: 'gpt'"),
    (["size", "--params", "10M", "--device-memory", "lots"], "expected a memory size like 80GB"),
    (["size", "--params", "10M", "--device-memory", "0GB"], "expected a memory size like 80GB"),
    (["size"], "give --params"),
    (["size", "--preset", "ladder-pt-10m", "--arch", "bert"], "preset ladder-pt-10m is arch 'pt'"),
    (["size", "--preset", "no-such-preset"], "preset 'no-such-preset' not found"),
])
def test_size_rejects_bad_input(args: list[str], message: str, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_parse_memory_units():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("24GiB") == 24 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5g") == 1_500_000_000
    assert parse_memory("4096") == 4096
    for bad in ("", "GB", "80 XB", "-1GB"):
        with pytest.raises(ValueError, match="memory size"):
            parse_memory(bad)


def test_fit_is_the_largest_batch_that_fits():
    c = config_for_budget("pt", 4_000_000, vocab_size=4096, base={"num_iterations": 3})
    estimate = estimate_activation_memory("pt", c, seq_len=256, precision=Precision("bf16", "cuda"))
    params = count_parameters("pt", c)["total"]
    for checkpointing in (False, True):
        fit = fit_micro_batch(estimate, params, parse_memory("8GiB"), checkpointing=checkpointing)
        assert fit.static_bytes == ADAMW_STATE_BYTES * params
        assert fit.bytes_at(fit.max_batch_size) <= fit.usable_bytes < fit.bytes_at(fit.max_batch_size + 1)
    assert fit_micro_batch(estimate, params, parse_memory("32MiB"), checkpointing=False).max_batch_size == 0


def test_config_for_budget_rejects_bad_width_multiple():
    with pytest.raises(ValueError, match="width_multiple"):
        config_for_budget("pt", 1_000_000, vocab_size=4096, width_multiple=0)
