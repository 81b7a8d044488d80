"""Markdown tables from a throughput result (the JSON ``throughput.py`` writes): one table per
parameter budget, then the ratios that answer the benchmark's questions, one column per budget.

    .venv/bin/python benchmarks/report.py benchmarks/results/throughput-amd-epyc.json   # re-print a result
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memory import memory_cell

# (label, numerator model, denominator model, quantity): quantity is "tokens", "model" or "executed" FLOP/s.
RATIOS = (
    ("PT fast / PT reference, tokens/s (eager)", "pt-fast", "pt-reference", "tokens"),
    ("PT fast / PT reference, tokens/s (compiled)", "pt-fast-compile", "pt-reference-compile", "tokens"),
    ("PT fast / PT banded, tokens/s (eager)", "pt-fast", "pt-banded", "tokens"),
    ("compiled / eager, PT fast", "pt-fast-compile", "pt-fast", "tokens"),
    ("compiled / eager, PT reference", "pt-reference-compile", "pt-reference", "tokens"),
    ("compiled / eager, BERT (ours)", "bert-compile", "bert", "tokens"),
    ("compiled / eager, UT (ours)", "ut-compile", "ut", "tokens"),
    ("PT fast / HF BERT, tokens/s", "pt-fast", "hf-bert", "tokens"),
    ("PT fast / HF BERT, model FLOP/s", "pt-fast", "hf-bert", "model"),
    ("PT fast / HF BERT, executed FLOP/s", "pt-fast", "hf-bert", "executed"),
    ("PT fast compiled / HF BERT, model FLOP/s", "pt-fast-compile", "hf-bert", "model"),
    ("BERT (ours) / HF BERT, tokens/s", "bert", "hf-bert", "tokens"),
    ("UT (ours) / HF BERT, model FLOP/s", "ut", "hf-bert", "model"),
)


def _rate(entry: dict, quantity: str) -> float:
    return entry["tokens_per_s"]["median"] if quantity == "tokens" else entry["gflop_per_s"][quantity]


def _count(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n < 1e9 else f"{n / 1e9:.3g}B"


def budget_table(size: dict, device_type: str) -> str:
    mem = "peak mem (alloc)" if device_type == "cuda" else "peak mem (RSS)"
    mfu = "MFU" if device_type == "cuda" else "MFU (est.)"
    lines = [
        f"| model | shape | params total / non-emb | MFLOP/token model / exec | tokens/s | min – max | vs HF "
        f"| GFLOP/s model / exec | {mfu} | fwd / bwd / opt | {mem} |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for m in size["models"]:
        if "error" in m:
            lines.append(f"| {m['label']} | failed: {m['error'][:160]} |" + " |" * 9)
            continue
        t, p, ph, f, g = (m["tokens_per_s"], m["params"], m["tokens_per_s"]["phase_fraction"], m["flops_per_token"],
                          m["gflop_per_s"])
        ratio = f"{m['ratio_to_hf']:.2f}×" if m.get("ratio_to_hf") else "–"
        mfu_cell = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "–"
        lines.append(
            f"| {m['label']} | {m['shape_short']} | {p['total'] / 1e6:.3f}M / {p['non_embedding'] / 1e6:.3f}M "
            f"| {f['model'] / 1e6:.1f} / {f['executed'] / 1e6:.1f} | {t['median']:,.0f} "
            f"| {t['min']:,.0f} – {t['max']:,.0f} "
            f"| {ratio} | {g['model']:.1f} / {g['executed']:.1f} | {mfu_cell} "
            f"| {ph['forward']:.0%} / {ph['backward']:.0%} / {ph['optimizer']:.0%} | {memory_cell(m.get('memory'))} |"
        )
    return "\n".join(lines)


def ratio_table(result: dict) -> str:
    sizes = result["sizes"]
    header = "| ratio | " + " | ".join(_count(s["params_budget"]) for s in sizes) + " |"
    lines = [header, "|---|" + "--:|" * len(sizes)]
    for label, num, den, quantity in RATIOS:
        cells = []
        for size in sizes:
            by_key = {m["key"]: m for m in size["models"] if "error" not in m}
            if num in by_key and den in by_key:
                cells.append(f"{_rate(by_key[num], quantity) / _rate(by_key[den], quantity):.2f}×")
            else:
                cells.append(None)
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(c or "–" for c in cells) + " |")
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    device, settings = result["device"], result["settings"]
    peak = device.get("peak_flops")
    parts = []
    for size in result["sizes"]:
        parts.append(f"### {_count(size['params_budget'])} parameters (batch {settings['batch_size']} x "
                     f"{settings['seq_len']}, {settings['precision']})\n\n{budget_table(size, device['type'])}")
    parts.append("### Ratios (medians)\n\n" + ratio_table(result))
    if peak:
        parts.append(f"MFU against {peak['flops'] / 1e12:.3g} TFLOP/s: {peak['basis']}.")
    else:
        parts.append("MFU: no peak FLOP/s known for this device (give --peak-flops).")
    if not result.get("complete", True):
        parts.append("**Incomplete run**: only the budgets above finished.")
    return "\n\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULT.json")
    print(markdown_report(json.loads(Path(sys.argv[1]).read_text())))
