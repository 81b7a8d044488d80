"""Markdown tables from a throughput result (the JSON ``throughput.py`` writes): per parameter budget
one table of every (model, precision) entry and, when a run has both fp32 and bf16, a side-by-side
table of the two with their ratio; then the ratios that answer the benchmark's questions (per
precision, one column per budget) and bf16 / fp32 per model.

    .venv/bin/python benchmarks/report.py benchmarks/results/throughput-amd-epyc.json   # re-print a result

Results written before ``--precisions`` existed (one precision per run, entries keyed by model) are
read too: their precision is the run's ``settings.precision``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memory import memory_cell

# (label, numerator model, denominator model, quantity): quantity is "tokens", "model" or "executed" FLOP/s.
# Each is given per precision, both entries in the same one.
RATIOS = (
    ("PT fast / PT reference, tokens/s (eager)", "pt-fast", "pt-reference", "tokens"),
    ("PT fast / PT reference, tokens/s (compiled)", "pt-fast-compile", "pt-reference-compile", "tokens"),
    ("PT fast / PT banded, tokens/s (eager)", "pt-fast", "pt-banded", "tokens"),
    ("compiled / eager, PT fast", "pt-fast-compile", "pt-fast", "tokens"),
    ("compiled / eager, PT reference", "pt-reference-compile", "pt-reference", "tokens"),
    ("compiled / eager, BERT (ours)", "bert-compile", "bert", "tokens"),
    ("compiled / eager, UT (ours)", "ut-compile", "ut", "tokens"),
    ("PT banded / HF BERT, tokens/s", "pt-banded", "hf-bert", "tokens"),
    ("PT banded / HF BERT, model FLOP/s", "pt-banded", "hf-bert", "model"),
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


def _normalise(result: dict) -> tuple[list[str], dict]:
    """(precisions, peak per precision), with old single-precision results' entries given their
    ``model`` and ``precision`` (in place)."""
    settings, device = result["settings"], result["device"]
    if "precisions" in settings:
        precisions = settings["precisions"]
    else:
        precisions = ["bf16" if "bf16" in str(settings.get("precision", "")) else "fp32"]
    for size in result["sizes"]:
        for m in size["models"]:
            m.setdefault("model", m["key"])
            m.setdefault("precision", precisions[0])
    peak = device.get("peak_flops")
    peaks = {precisions[0]: peak} if peak is None or "flops" in peak else peak
    return precisions, peaks


def _by_entry(size: dict) -> dict[tuple[str, str], dict]:
    return {(m["model"], m["precision"]): m for m in size["models"] if "error" not in m}


def budget_table(size: dict, device_type: str) -> str:
    mem = "peak mem (alloc)" if device_type == "cuda" else "peak mem (RSS)"
    mfu = "MFU" if device_type == "cuda" else "MFU (est.)"
    lines = [
        f"| model | precision | shape | params total / non-emb | MFLOP/token model / exec | tokens/s | min – max "
        f"| vs HF | GFLOP/s model / exec | {mfu} | fwd / bwd / opt | {mem} |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for m in size["models"]:
        if "error" in m:
            lines.append(f"| {m['label']} | {m['precision']} | failed: {m['error'][:160]} |" + " |" * 9)
            continue
        t, p, ph, f, g = (m["tokens_per_s"], m["params"], m["tokens_per_s"]["phase_fraction"], m["flops_per_token"],
                          m["gflop_per_s"])
        ratio = f"{m['ratio_to_hf']:.2f}×" if m.get("ratio_to_hf") else "–"
        mfu_cell = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "–"
        lines.append(
            f"| {m['label']} | {m['precision']} | {m['shape_short']} "
            f"| {p['total'] / 1e6:.3f}M / {p['non_embedding'] / 1e6:.3f}M "
            f"| {f['model'] / 1e6:.1f} / {f['executed'] / 1e6:.1f} | {t['median']:,.0f} "
            f"| {t['min']:,.0f} – {t['max']:,.0f} "
            f"| {ratio} | {g['model']:.1f} / {g['executed']:.1f} | {mfu_cell} "
            f"| {ph['forward']:.0%} / {ph['backward']:.0%} / {ph['optimizer']:.0%} | {memory_cell(m.get('memory'))} |"
        )
    return "\n".join(lines)


def precision_table(size: dict, device_type: str) -> str | None:
    """fp32 and bf16 side by side per model: tokens/s, their ratio, model GFLOP/s, model FLOP/s against
    HF BERT's in the same precision, MFU (each against its own precision's peak) and memory."""
    entries = _by_entry(size)
    models = list(dict.fromkeys(m["model"] for m in size["models"]))
    pairs = [(k, entries.get((k, "fp32")), entries.get((k, "bf16"))) for k in models]
    pairs = [(k, a, b) for k, a, b in pairs if a or b]
    if not any(a and b for _, a, b in pairs):
        return None
    hf = {x: entries.get(("hf-bert", x)) for x in ("fp32", "bf16")}
    mfu = "MFU" if device_type == "cuda" else "MFU (est.)"
    lines = [f"| model | tokens/s fp32 | tokens/s bf16 | bf16 / fp32 | GFLOP/s fp32 | GFLOP/s bf16 "
             f"| FLOP/s vs HF fp32 | FLOP/s vs HF bf16 | {mfu} fp32 | {mfu} bf16 | mem fp32 | mem bf16 |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]

    def cells(entry: dict | None, precision: str) -> tuple[str, str, str, str, str]:
        if entry is None:
            return ("–",) * 5
        base = hf[precision]
        vs_hf = f"{entry['gflop_per_s']['model'] / base['gflop_per_s']['model']:.2f}×" if base else "–"
        mfu_cell = f"{entry['mfu']:.1%}" if entry.get("mfu") is not None else "–"
        return (f"{entry['tokens_per_s']['median']:,.0f}", f"{entry['gflop_per_s']['model']:.1f}", vs_hf, mfu_cell,
                memory_cell(entry.get("memory")))

    for _key, a, b in pairs:
        (ta, ga, ha, ma, mema), (tb, gb, hb, mb, memb) = cells(a, "fp32"), cells(b, "bf16")
        ratio = f"{b['tokens_per_s']['median'] / a['tokens_per_s']['median']:.2f}×" if a and b else "–"
        label = (a or b)["label"]
        lines.append(f"| {label} | {ta} | {tb} | **{ratio}** | {ga} | {gb} | {ha} | {hb} | {ma} | {mb} | {mema} "
                     f"| {memb} |")
    return "\n".join(lines)


def ratio_table(result: dict, precisions: list[str]) -> str | None:
    sizes = result["sizes"]
    header = "| ratio | precision | " + " | ".join(_count(s["params_budget"]) for s in sizes) + " |"
    lines = [header, "|---|---|" + "--:|" * len(sizes)]
    for label, num, den, quantity in RATIOS:
        for precision in precisions:
            cells = []
            for size in sizes:
                entries = _by_entry(size)
                a, b = entries.get((num, precision)), entries.get((den, precision))
                cells.append(f"{_rate(a, quantity) / _rate(b, quantity):.2f}×" if a and b else None)
            if any(cells):
                lines.append(f"| {label} | {precision} | " + " | ".join(c or "–" for c in cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else None


def bf16_table(result: dict) -> str | None:
    """bf16 / fp32 median tokens/s per model (rows) and budget (columns)."""
    sizes = result["sizes"]
    ratios = [s.get("bf16_over_fp32_tokens_per_s") or {} for s in sizes]
    labels = {m["model"]: m["label"] for s in sizes for m in s["models"]}
    models = list(dict.fromkeys(k for r in ratios for k in r))
    if not models:
        return None
    lines = ["| model | " + " | ".join(_count(s["params_budget"]) for s in sizes) + " |",
             "|---|" + "--:|" * len(sizes)]
    for key in models:
        lines.append(f"| {labels.get(key, key)} | "
                     + " | ".join(f"{r[key]:.2f}×" if key in r else "–" for r in ratios) + " |")
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    device, settings = result["device"], result["settings"]
    precisions, peaks = _normalise(result)
    parts = []
    for size in result["sizes"]:
        head = (f"### {_count(size['params_budget'])} parameters (batch {settings['batch_size']} x "
                f"{settings['seq_len']}, {' and '.join(precisions)})")
        parts.append(f"{head}\n\n{budget_table(size, device['type'])}")
        side = precision_table(size, device["type"])
        if side:
            parts.append(f"fp32 vs bf16 at {_count(size['params_budget'])} (model FLOP/s; vs HF: against HF "
                         f"BertForMaskedLM in the same precision; MFU against that precision's peak):\n\n{side}")
    ratios = ratio_table(result, precisions)
    if ratios:
        parts.append("### Ratios (medians, both models in the same precision)\n\n" + ratios)
    bf16 = bf16_table(result)
    if bf16:
        parts.append("### bf16 / fp32, tokens/s (medians)\n\n" + bf16)
    for precision in precisions:
        peak = peaks.get(precision)
        if peak:
            parts.append(f"MFU of {precision} entries against {peak['flops'] / 1e12:.3g} TFLOP/s: {peak['basis']}.")
        else:
            parts.append(f"MFU of {precision} entries: no peak FLOP/s known for this device and precision "
                         "(give --peak-flops).")
    if not result.get("complete", True):
        parts.append("**Incomplete run**: only the budgets above finished.")
    return "\n\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULT.json")
    print(markdown_report(json.loads(Path(sys.argv[1]).read_text())))
