"""``probformer size``: a model's parameters, training FLOPs and training memory, as a table or JSON.

The model comes from a parameter budget (:func:`probformer.sizing.config_for_budget`) or from a
training preset as it stands; :func:`build_report` gathers the numbers into one JSON-able dict and
:func:`render` prints that dict as a small table, so the two outputs cannot disagree.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from probformer.models import architecture
from probformer.sizing.activation_memory import Precision, estimate_activation_memory
from probformer.sizing.budget import count_parameters, training_flops_per_token
from probformer.sizing.memory_fit import ADAMW_STATE_BYTES, fit_micro_batch
from probformer.sizing.units import format_bytes


def build_report(
    arch: str,
    config: PretrainedConfig,
    *,
    seq_len: int,
    precision: Precision,
    mask_fraction: float,
    batch_size: int | None = None,
    device_bytes: int | None = None,
    margin: float = 0.10,
    budget: int | None = None,
    source: str = "",
    fields: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Counts, FLOPs/token and the activation estimate (with and without checkpointing); with
    ``device_bytes`` also the largest micro-batch that fits. ``fields`` name the model section keys."""
    depth_name = architecture(arch).depth_name
    counts = count_parameters(arch, config)
    estimate = estimate_activation_memory(arch, config, seq_len=seq_len, precision=precision,
                                          mask_fraction=mask_fraction)
    modes = {"none": False, "checkpointing": True}
    activations: dict[str, Any] = {
        "precision": precision.dtype, "device": precision.device, "kernel": estimate.kernel,
        "mask_fraction": mask_fraction, "depth": estimate.depth,
        "per_token_bytes": {m: estimate.per_token(c) for m, c in modes.items()},
        "fixed_bytes": {m: estimate.fixed(c) for m, c in modes.items()},
        "token_terms": [{"name": t.name, "scope": t.scope, "bytes": t.nbytes} for t in estimate.token_terms],
        "fixed_terms": [{"name": t.name, "scope": t.scope, "bytes": t.nbytes} for t in estimate.fixed_terms],
    }
    if batch_size is not None:
        activations["batch_size"] = batch_size
        activations["micro_batch_bytes"] = {m: estimate.micro_batch_bytes(batch_size, c) for m, c in modes.items()}
    report: dict[str, Any] = {
        "arch": arch,
        "source": source,
        "budget": budget,
        "relative_error": None if budget is None else (counts["total"] - budget) / budget,
        "parameters": counts,
        "seq_len": seq_len,
        "training_flops_per_token": training_flops_per_token(arch, config, seq_len, mask_fraction),
        "model": {"arch": arch, **{k: getattr(config, k) for k in fields if hasattr(config, k)}},
        "activation_memory": activations,
    }
    if device_bytes is not None:
        fits = {m: fit_micro_batch(estimate, counts["total"], device_bytes, checkpointing=c, margin=margin)
                for m, c in modes.items()}
        report["device_memory"] = {
            "bytes": device_bytes, "margin": margin, "static_bytes": fits["none"].static_bytes,
            "assumes": (f"{ADAMW_STATE_BYTES} B/param: fp32 weights 4 + fp32 grads 4 + AdamW moments 8; plus one "
                        f"more {depth_name}'s activations as the backward working set; {margin:.0%} of the "
                        "device kept free"),
            "max_batch_size": {m: f.max_batch_size for m, f in fits.items()},
            "bytes_at_max": {m: f.bytes_at(f.max_batch_size) for m, f in fits.items()},
        }
    return report


def render(report: dict[str, Any]) -> str:
    """The report as a few aligned lines and two small tables (plain text)."""
    arch, p, act = report["arch"], report["parameters"], report["activation_memory"]
    entry = architecture(arch)
    depth_name, shape_fields = entry.depth_name, (*entry.shape_fields, *entry.base_fields)
    lines = [report["source"] + ("" if report["budget"] is None else f": within {report['relative_error']:+.2%}")]
    shape = ", ".join(f"{k} {report['model'][k]}" for k in shape_fields if k in report["model"])
    lines += [
        f"  shape         {shape}",
        f"  parameters    {p['total']:,} total = {p['embedding']:,} embedding + {p['non_embedding']:,} non-embedding",
        f"  FLOPs/token   {report['training_flops_per_token']:.3g} "
        f"(training: 6 x matmul MACs, seq_len {report['seq_len']})",
        "",
        f"  activations saved for backward: {act['precision']}{' autocast' if act['precision'] == 'bf16' else ''} "
        f"on {act['device']}, seq_len {report['seq_len']}, "
        f"{act['mask_fraction']:.0%} of tokens scored" + (f", PT kernel {act['kernel']}" if act["kernel"] else ""),
    ]
    header = ["", "per token", "per sequence", "fixed per step"]
    if "batch_size" in act:
        header.append(f"micro-batch of {act['batch_size']}")
    rows = [header]
    ckpt = f"per-{depth_name} checkpointing"
    for mode, label in (("none", f"all {act['depth']} {depth_name}s kept"), ("checkpointing", ckpt)):
        row = [label, format_bytes(act["per_token_bytes"][mode]),
               format_bytes(act["per_token_bytes"][mode] * report["seq_len"]), format_bytes(act["fixed_bytes"][mode])]
        if "batch_size" in act:
            row.append(format_bytes(act["micro_batch_bytes"][mode]))
        rows.append(row)
    lines += _table(rows)
    largest = sorted((t for t in act["token_terms"] if t["scope"] == "repeat"), key=lambda t: -t["bytes"])[:4]
    lines.append(f"  largest per-token terms, one {depth_name}: "
                 + "; ".join(f"{t['name']} {format_bytes(t['bytes'])}" for t in largest))
    if "device_memory" in report:
        dm = report["device_memory"]
        lines += ["", f"  fit in {format_bytes(dm['bytes'])}: "
                      f"static {format_bytes(dm['static_bytes'])} ({dm['assumes']})"]
        rows = [["", "largest micro-batch", "memory at it"]]
        for mode, label in (("none", f"all {act['depth']} {depth_name}s kept"), ("checkpointing", ckpt)):
            b = dm["max_batch_size"][mode]
            fits = f"{b} x {report['seq_len']} tokens" if b else "does not fit"
            rows.append([label, fits, format_bytes(dm["bytes_at_max"][mode])])
        lines += _table(rows)
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    # every row has the header's cells (the callers build them so)
    return ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
