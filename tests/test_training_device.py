"""training/device.py: which precision ``precision: auto`` picks, with the CPU's bf16 units mocked, and
that a short bf16 run on CPU trains as fp32 does (within a stated tolerance)."""

from __future__ import annotations

import pytest
import torch

from probformer.training import device as device_module
from probformer.training.device import describe_precision, uses_bf16
from probformer.training.trainer import train

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")


@pytest.mark.parametrize("units", [None, "AVX512-BF16", "AMX-BF16"])
def test_auto_is_bf16_on_a_cpu_with_bf16_units_and_fp32_without(monkeypatch, units):
    monkeypatch.setattr(device_module, "cpu_bf16_units", lambda: units)
    assert uses_bf16("auto", CPU) is (units is not None)
    assert uses_bf16("fp32", CPU) is False and uses_bf16("bf16", CPU) is True  # forced either way
    assert uses_bf16("auto", CUDA) is True and uses_bf16("auto", MPS) is False
    line = describe_precision("auto", CPU)
    assert ("bf16 autocast" in line) is (units is not None)
    assert (units or "no bf16 units") in line and "precision=fp32 forces fp32" in line


def test_the_probe_reads_torchs_cpu_feature_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert device_module.cpu_bf16_units() == "AVX512-BF16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert device_module.cpu_bf16_units() is None

    def broken() -> bool:
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert device_module.cpu_bf16_units() is None


@pytest.mark.parametrize("arch", ["pt", "bert", "ut"])
def test_a_short_bf16_run_on_cpu_matches_fp32(tiny_run_config, tmp_path, arch):
    """bf16 autocast rounds matmul inputs to 8 bits of mantissa; 24 steps of the tiny run end within
    0.1 nats of fp32 (about an eighth of what the run learns in those steps; BERT's differ by 0.06)."""
    model = {"pt": {}, "bert": {"model": {"arch": "bert", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                          "intermediate_size": 64}},
             "ut": {"model": {"arch": "ut", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                              "intermediate_size": 64}}}[arch]
    losses = {}
    for precision in ("fp32", "bf16"):
        config = tiny_run_config(tmp_path / precision, "steps=24", "eval_interval=24", "test_eval=false",
                                 f"precision={precision}", **model)
        result = train(config, log=lambda *_: None)
        assert result["status"] == "completed"
        losses[precision] = result["valid_loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.1)
