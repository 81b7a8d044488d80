"""probformer.sizing.memory_fit: the largest micro-batch that fits a device's memory."""

from __future__ import annotations

from probformer.sizing.activation_memory import Precision, estimate_activation_memory
from probformer.sizing.budget import config_for_budget, count_parameters
from probformer.sizing.memory_fit import ADAMW_STATE_BYTES, fit_micro_batch
from probformer.sizing.units import parse_memory


def test_fit_is_the_largest_batch_that_fits():
    c = config_for_budget("pt", 4_000_000, vocab_size=4096, base={"num_iterations": 3})
    estimate = estimate_activation_memory("pt", c, seq_len=256, precision=Precision("bf16", "cuda"))
    params = count_parameters("pt", c)["total"]
    for checkpointing in (False, True):
        fit = fit_micro_batch(estimate, params, parse_memory("8GiB"), checkpointing=checkpointing)
        assert fit.static_bytes == ADAMW_STATE_BYTES * params
        assert fit.bytes_at(fit.max_batch_size) <= fit.usable_bytes < fit.bytes_at(fit.max_batch_size + 1)
    assert fit_micro_batch(estimate, params, parse_memory("32MiB"), checkpointing=False).max_batch_size == 0
