"""probformer.sizing.report: the size ladder presets (each what its recorded ``probformer size`` command
builds, each micro-batch fitting 80 GB) and the size report's table and JSON."""

from __future__ import annotations

import json
import re
import shlex
from importlib import resources

import pytest
import torch

from probformer.cli import main
from probformer.config import load_config, model_config_class, preset_names
from probformer.models import build_model
from probformer.sizing.budget import count_parameters

LADDER = sorted(name for name in preset_names() if name.startswith("ladder-"))
TARGETS = {"10m": 10_000_000, "40m": 40_000_000, "110m": 110_000_000, "400m": 400_000_000, "1b": 1_000_000_000}


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
