"""Training throughput, FLOP/s and MFU of PT (kernels, eager / compiled), our BERT and UT and HF
BertForMaskedLM at equal parameter budgets, several budgets and precisions in one run.

Not part of the package or of CI. Run from the repository root with the project's environment:

    .venv/bin/python benchmarks/throughput.py --threads 1          # CPU: 1M, 2.5M, 10M parameters
    .venv/bin/python benchmarks/throughput.py --threads 1 --params 1.35M --batch-size 32   # default PT
    python benchmarks/throughput.py --device cuda                   # GPU: 10M, 110M, 400M, bf16 autocast

Precisions (``--precisions``): every model runs in each, as its own model instance: ``fp32`` (no
autocast) and ``bf16`` (``torch.autocast(device, bfloat16)`` around forward + loss, the trainer's
``precision: bf16``; the models keep softmaxes and the loss in fp32). Default: fp32 and bf16 on a
CPU with bf16 units (AVX512-BF16 / AMX, where the trainer's ``precision: auto`` picks bf16), fp32
on one without, bf16 on CUDA. Entries are keyed ``MODEL@PRECISION`` (``pt-banded@bf16``).

Every model of a budget gets the same random token batch (BERT-style 15% masking, labels -100
elsewhere) and trains with AdamW (ours: per-role groups from ``build_optimizer``; HF:
``torch.optim.AdamW``). One measured step = forward + backward + optimizer step + zero_grad. The
first warmup step runs eagerly under torch's FLOP counter (executed FLOPs, :mod:`flops`); a
``-compile`` model is compiled after it (regional: one layer / MFVI iteration, ``compile_regions``)
and compiles during the other warmup steps, so compile time is never timed. Then the models of a
budget are timed in interleaved rounds: each round runs ``--steps-per-round`` steps of every
(model, precision) entry, in an order rotated every round, so that background load hits every entry
alike; the report gives the median (and min / max) tokens/s over rounds. Tokens = batch x seq_len
input tokens per step.

Peak memory: see :mod:`memory`. Writes ``benchmarks/results/throughput-<device-slug>.json`` after
every budget (``"complete": false`` until the last) and prints markdown tables (benchmarks/README.md,
docs/results/throughput.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from devices import PeakFlops, device_name, peak_flops, resolve_device, slug, sync
from flops import executed_flops, model_flops_per_token
from memory import MemoryProbe, memory_cell
from report import markdown_report
from transformers import BertConfig, BertForMaskedLM

from probformer.data.masking import IGNORE_INDEX, mask_tokens
from probformer.models import architecture, model_classes
from probformer.models.config_utils import replace_config
from probformer.parametrization import build_optimizer
from probformer.sizing.budget import config_for_budget, count_parameters
from probformer.sizing.units import parse_count
from probformer.training.device import autocast_for, cpu_bf16_units

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HF_KEY = "hf-bert"
COMPILE_SUFFIX = "-compile"
CPU_SIZES, CUDA_SIZES = "1M,2.5M,10M", "10M,110M,400M"

# Optimizer settings (probformer's OptimConfig defaults except lr; values do not change the cost).
LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 0.01, (0.9, 0.98), 1e-8


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    arch: str  # sizing arch ("bert" for HF: same family and formula)
    base: dict = field(default_factory=dict)  # family fields for config_for_budget
    overrides: dict = field(default_factory=dict)  # set after sizing: fields that do not change the shape
    compiled: bool = False


_EAGER_SPECS = (
    Spec("pt-reference", "PT (muP), reference kernel", "pt", overrides={"mfvi_kernel": "reference"}),
    Spec("pt-banded", "PT (muP), banded kernel", "pt", overrides={"mfvi_kernel": "banded"}),
    Spec("pt-fast", "PT (muP), fast kernel", "pt", overrides={"mfvi_kernel": "fast"}),
    Spec("bert", "BERT (ours, muP)", "bert"),
    Spec("bert-sp", "BERT (ours, SP)", "bert", {"parametrization": "sp"}),
    Spec("ut", "UT (ours, muP)", "ut"),
    Spec(HF_KEY, "HF BertForMaskedLM", "bert", {"parametrization": "sp"}),
)
SPECS = tuple(s for e in _EAGER_SPECS
              for s in (e, Spec(e.key + COMPILE_SUFFIX, e.label + ", compiled", e.arch, e.base, e.overrides,
                                compiled=True)))
SPEC_BY_KEY = {s.key: s for s in SPECS}
# The CPU trainer's PT kernel (mfvi_kernel auto = banded) and the fast one, our BERT and UT, HF BERT; the
# reference kernel and the -compile models on request (--models): each entry now runs once per precision.
DEFAULT_MODELS = "pt-banded,pt-fast,bert,ut,hf-bert"
PRECISIONS = ("fp32", "bf16")


def entry_key(model: str, precision: str) -> str:
    """A timed entry: one model in one precision, e.g. ``pt-banded@bf16``."""
    return f"{model}@{precision}"


def split_entry(key: str) -> tuple[str, str]:
    model, _, precision = key.partition("@")
    return model, precision


def default_precisions(device: torch.device) -> str:
    """bf16 on CUDA; on CPU fp32, and bf16 beside it where the CPU has bf16 units (the trainer's auto)."""
    if device.type == "cuda":
        return "bf16"
    return "fp32,bf16" if cpu_bf16_units() else "fp32"


# -- models ------------------------------------------------------------------------------------------

def hf_config(sp_config, attn_implementation: str) -> BertConfig:
    """HF BERT with our SP config's shape. type_vocab_size=1 (segment A only, as ours) so the two
    parameter counts are identical; everything else is HF's default (tied decoder, GELU)."""
    return BertConfig(
        attn_implementation=attn_implementation,
        vocab_size=sp_config.vocab_size,
        hidden_size=sp_config.hidden_size,
        num_hidden_layers=sp_config.num_layers,
        num_attention_heads=sp_config.num_heads,
        intermediate_size=sp_config.intermediate_size,
        max_position_embeddings=sp_config.max_position_embeddings,
        type_vocab_size=1,
        hidden_act="gelu",
        hidden_dropout_prob=sp_config.hidden_dropout,
        attention_probs_dropout_prob=sp_config.attention_dropout,
        layer_norm_eps=sp_config.layer_norm_eps,
        initializer_range=sp_config.init_std,
        pad_token_id=sp_config.pad_token_id,
    )


@functools.cache
def _sized(arch: str, base: tuple, params: int, vocab_size: int):
    # The width search takes seconds at 400M parameters; PT's kernel variants share one shape.
    return config_for_budget(arch, params, vocab_size=vocab_size, base=dict(base))


def build(spec: Spec, params: int, args, device: torch.device):
    """(model, optimizer, config) for one spec at a budget, on ``device``, in train mode, not compiled yet."""
    config = replace_config(_sized(spec.arch, tuple(sorted(spec.base.items())), params, args.vocab_size),
                            **spec.overrides)
    torch.manual_seed(args.seed)
    if spec.key.startswith(HF_KEY):
        model = BertForMaskedLM(hf_config(config, args.hf_attn)).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS,
                                      fused=True if device.type == "cuda" else None)
    else:
        _, model_cls = model_classes(spec.arch)
        model = model_cls(config).to(device).train()
        optimizer = build_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS,
                                    fused=device.type == "cuda")  # the model's own lr and eps factors
    return model, optimizer, config


def compile_regions(model, args) -> None:
    """Regional compilation: ours through ``compile_regions`` (one PT iteration / one BERT or UT
    layer module), HF's BertLayer modules the same way. Static shapes: every budget and model gets
    graphs for its own shapes (dynamo is reset between budgets)."""
    kwargs = {"dynamic": False, **({"mode": args.compile_mode} if args.compile_mode else {})}
    if isinstance(model, BertForMaskedLM):
        for layer in model.bert.encoder.layer:
            layer.compile(**kwargs)
        return
    model.compile_regions(**kwargs)


def shape_of(spec: Spec, config) -> dict:
    entry = architecture(spec.arch)
    keys = ("parametrization", *entry.shape_fields, *entry.variant_fields)
    return {k: getattr(config, k) for k in keys}


def short_shape(spec: Spec, config) -> str:
    return architecture(spec.arch).short_shape(config)


def param_counts(spec: Spec, config, model) -> dict:
    actual = sum(p.numel() for p in model.parameters())  # tied weights once
    if isinstance(model, BertForMaskedLM):
        embedding = sum(p.numel() for n, p in model.named_parameters()
                        if re.search(r"(word|position|token_type)_embeddings\.weight$|^cls\.predictions\.bias$", n))
        return {"total": actual, "non_embedding": actual - embedding, "embedding": embedding}
    counts = count_parameters(spec.arch, config)
    if counts["total"] != actual:
        raise RuntimeError(f"{spec.key}: sizing counts {counts['total']} parameters, the model has {actual}")
    return counts


def make_batch(args, device: torch.device) -> dict[str, torch.Tensor]:
    """One fixed batch: uniform random non-special ids, BERT-style masking (80/10/10), no padding."""
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(5, args.vocab_size, (args.batch_size, args.seq_len), generator=gen)
    inputs, labels = mask_tokens(ids, "bert", args.mask_prob, args.vocab_size, gen)
    return {"input_ids": inputs.to(device), "attention_mask": torch.ones_like(inputs).to(device),
            "labels": labels.to(device)}


# -- steps and timing --------------------------------------------------------------------------------

class Marks:
    """Timestamps between phases: CUDA events on the GPU timeline (no sync), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.points: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())

    def seconds(self, i: int, j: int) -> float:
        a, b = self.points[i], self.points[j]
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a


def forward_loss(model, batch, autocast) -> torch.Tensor:
    # Ours read out only at the scored positions, as the trainer does; HF's head runs everywhere.
    readout = {} if isinstance(model, BertForMaskedLM) else {"scored_logits_only": True}
    with autocast():
        return model(**batch, **readout).loss


def train_steps(model, optimizer, batch, autocast, steps: int, marks: Marks | None = None):
    """Run ``steps`` training steps; returns the last loss tensor (reading it syncs: outside timing)."""
    loss = None
    for _ in range(steps):
        if marks is not None:
            marks.mark()
        loss = forward_loss(model, batch, autocast)
        if marks is not None:
            marks.mark()
        loss.backward()
        if marks is not None:
            marks.mark()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if marks is not None:
            marks.mark()
    return loss


def warm_up(spec: Spec, model, optimizer, batch, autocast, args, device) -> tuple[float, int]:
    """The untimed steps: the first one eager under the FLOP counter, then compilation (``-compile``
    models), then the rest. Returns (last loss, executed FLOPs of one forward + backward)."""
    losses: list[torch.Tensor] = []

    def counted_step() -> None:
        losses.append(forward_loss(model, batch, autocast))
        losses[-1].backward()

    flops = executed_flops(counted_step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if spec.compiled:
        compile_regions(model, args)
    if args.warmup > 1:
        losses.append(train_steps(model, optimizer, batch, autocast, args.warmup - 1))
    sync(device)
    loss = float(losses[-1].detach())
    if not math.isfinite(loss):
        raise RuntimeError(f"{spec.key}: non-finite loss {loss} during warmup")
    return loss, flops


def measure(runs: dict, args, device: torch.device, batch, log) -> dict[str, dict]:
    """Interleaved rounds: every round times ``steps_per_round`` steps of each (model, precision) entry
    (``runs``: key -> (model, optimizer, autocast)), order rotated."""
    keys = list(runs)
    tokens_per_step = args.batch_size * args.seq_len
    rates: dict[str, list[float]] = {k: [] for k in keys}
    phases: dict[str, list[tuple[float, ...]]] = {k: [] for k in keys}
    for r in range(args.rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]  # rotate so no entry always runs first / after X
        line = []
        for key in order:
            model, optimizer, autocast = runs[key]
            gc.collect()
            sync(device)
            marks = Marks(device)
            t0 = time.perf_counter()
            train_steps(model, optimizer, batch, autocast, args.steps_per_round, marks)
            sync(device)
            elapsed = time.perf_counter() - t0
            rates[key].append(args.steps_per_round * tokens_per_step / elapsed)
            phases[key].append(tuple(sum(marks.seconds(4 * s + i, 4 * s + i + 1) for s in range(args.steps_per_round))
                                     for i in range(3)))
            line.append(f"{key} {rates[key][-1]:,.0f}")
        log(f"  round {r + 1}/{args.rounds}: " + ", ".join(line) + " tok/s")
    out = {}
    for key in keys:
        total = [sum(p) for p in phases[key]]
        out[key] = {
            "median": statistics.median(rates[key]),
            "min": min(rates[key]),
            "max": max(rates[key]),
            "rounds": rates[key],
            "phase_fraction": {name: statistics.median(p[i] / t for p, t in zip(phases[key], total, strict=True))
                               for i, name in enumerate(("forward", "backward", "optimizer"))},
        }
    return out


# Profile groups: an op's self time goes to the nearest op (itself or an enclosing one) listed here,
# so an autocast cast's copy_ counts as a cast, F.pad's (the banded kernel's shifts) as a pad, an
# einsum's bmm as a matmul and its permute copy as a layout copy, dropout's mul as dropout; a copy_
# under none of them is an in-place copy (``x[...].copy_``); the rest is "other".
PROFILE_GROUPS = {
    **dict.fromkeys(("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm"), "matmuls"),
    **dict.fromkeys(("aten::_to_copy",), "casts (aten::to / _to_copy)"),
    **dict.fromkeys(("aten::clone",), "layout copies (clone / contiguous)"),
    **dict.fromkeys(("aten::cat",), "cat / stack"),
    **dict.fromkeys(("aten::constant_pad_nd",), "pads (banded shifts)"),
    **dict.fromkeys(("aten::gather", "aten::scatter_add", "aten::scatter_add_", "aten::scatter"), "gather / scatter"),
    **dict.fromkeys(("aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax",
                     "aten::_log_softmax_backward_data"), "softmax / log_softmax"),
    **dict.fromkeys(("aten::bernoulli_", "aten::native_dropout"), "dropout"),
}


def profile_groups(events, attr: str) -> dict[str, dict]:
    """Self time by :data:`PROFILE_GROUPS` group (nearest listed op up the profiler's op tree)."""
    totals: dict[str, float] = {}
    for event in events:
        value = getattr(event, attr, 0.0)
        if not value:
            continue
        node, group = event, ("in-place copies (copy_)" if event.name == "aten::copy_"
                              else "other (elementwise, reductions, ...)")
        while node is not None:
            if node.name in PROFILE_GROUPS:
                group = PROFILE_GROUPS[node.name]
                break
            node = node.cpu_parent
        totals[group] = totals.get(group, 0.0) + value
    total = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return {g: {"self_ms": v / 1e3, "self_fraction": v / total} for g, v in ranked}


def profile(runs: dict, key: str, args, device: torch.device, batch, rows: int = 15) -> dict:
    """Top operators by self time over ``--steps-per-round`` steps of one entry (torch.profiler; its
    own overhead inflates small ops, so read shares, not absolute times), and the self time by group
    (matmuls, casts, layout copies, softmax, ...: :data:`PROFILE_GROUPS`)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model, optimizer, autocast = runs[key]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        train_steps(model, optimizer, batch, autocast, args.steps_per_round)
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    total = sum(getattr(e, attr, 0.0) for e in averages) or 1.0
    top = sorted(averages, key=lambda e: getattr(e, attr, 0.0), reverse=True)[:rows]
    groups = profile_groups(prof.events(), attr)
    print(f"profile {key}: {args.steps_per_round} steps, top ops by self time\n"
          + averages.table(sort_by=attr, row_limit=rows) + f"\nprofile {key}: self time by group\n"
          + "\n".join(f"  {g:40s} {v['self_ms']:10.1f} ms  {v['self_fraction']:6.1%}" for g, v in groups.items()),
          file=sys.stderr)
    return {"top_ops": [{"op": e.key, "calls": e.count, "self_ms": getattr(e, attr, 0.0) / 1e3,
                         "self_fraction": getattr(e, attr, 0.0) / total} for e in top],
            "groups": groups, "steps": args.steps_per_round}


# -- memory in a fresh process -------------------------------------------------------------------------

def memory_child(key: str, args) -> dict:
    """--memory subprocess: this entry (MODEL@PRECISION) alone in a fresh process, the same probe
    around build + warmup."""
    device = resolve_device(args.device)
    batch = make_batch(args, device)
    model_key, precision = split_entry(key)
    spec = SPEC_BY_KEY[model_key]
    probe = MemoryProbe(device)
    probe.start()
    model, optimizer, _ = build(spec, args.sizes[0], args, device)
    warm_up(spec, model, optimizer, batch, autocast_for(device, precision == "bf16"), args, device)
    return probe.stop()


def memory_subprocess(key: str, params: int, args) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--memory-child", key, "--params", str(params)]
    for name in ("vocab_size", "batch_size", "seq_len", "mask_prob", "device", "seed", "warmup", "hf_attn", "threads"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"kind": "error", "error": proc.stderr.strip()[-500:]}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": "subprocess"}


# -- one budget --------------------------------------------------------------------------------------

def prepare(spec: Spec, precision: str, params: int, args, device: torch.device, batch, log) -> tuple[dict, tuple]:
    """Build and warm up one model in one precision: its JSON entry so far and (model, optimizer,
    autocast) for timing."""
    tokens = args.batch_size * args.seq_len
    scored = int((batch["labels"] != IGNORE_INDEX).sum())
    t0 = time.perf_counter()
    probe = MemoryProbe(device)
    if args.memory == "inline":
        probe.start()
    model, optimizer, config = build(spec, params, args, device)
    autocast = autocast_for(device, precision == "bf16")  # the trainer's: bf16 autocast around forward + loss
    loss, executed = warm_up(spec, model, optimizer, batch, autocast, args, device)
    key = entry_key(spec.key, precision)
    entry = {"key": key, "model": spec.key, "precision": precision, "label": spec.label, "compiled": spec.compiled,
             "shape": shape_of(spec, config),
             "shape_short": short_shape(spec, config), "params": param_counts(spec, config, model),
             "warmup_loss": loss, "build_and_warmup_s": round(time.perf_counter() - t0, 1),
             "flops_per_token": {"model": model_flops_per_token(spec.arch, config, args.seq_len, scored / tokens),
                                 "executed": executed / tokens}}
    if args.memory == "inline":
        entry["memory"] = {**probe.stop(), "process": "inline"}
    if isinstance(model, BertForMaskedLM):
        entry["hf_attn_implementation"] = model.config._attn_implementation
    log(f"  {key}: {entry['shape_short']}, {entry['params']['total']:,} params; built + {args.warmup} warmup "
        f"steps in {entry['build_and_warmup_s']}s, loss {loss:.3f}, peak mem {memory_cell(entry.get('memory'))}")
    return entry, (model, optimizer, autocast)


def run_budget(params: int, keys: list[str], args, device: torch.device, peaks: dict[str, PeakFlops | None],
               log) -> dict:
    """Build, warm up and time every model in every precision at one parameter budget; its JSON record."""
    if any(SPEC_BY_KEY[k].compiled for k in keys):
        torch._dynamo.reset()  # graphs of the previous budget's shapes would only count against the cache limit
    batch = make_batch(args, device)
    scored = int((batch["labels"] != IGNORE_INDEX).sum())
    log(f"budget {params:,} parameters: batch {args.batch_size} x {args.seq_len}, {scored} scored tokens, "
        f"precisions {', '.join(args.precisions)}")
    runs, models = {}, []
    for model_key in keys:  # build, then warm up (inline peak memory taken here), one entry at a time
        spec = SPEC_BY_KEY[model_key]
        for precision in args.precisions:
            key = entry_key(model_key, precision)
            try:
                entry, runs[key] = prepare(spec, precision, params, args, device, batch, log)
            except Exception as err:
                entry = {"key": key, "model": model_key, "precision": precision, "label": spec.label,
                         "compiled": spec.compiled, "error": f"{type(err).__name__}: {err}"[:800]}
                log(f"  {key}: FAILED during build / warmup: {entry['error'][:300]}")
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            models.append(entry)

    rates = measure(runs, args, device, batch, log) if runs else {}
    load_end = os.getloadavg()[0]
    profiles = {key: profile(runs, key, args, device, batch) for key in args.profile_keys if key in runs}
    del runs
    gc.collect()
    timed = [entry for entry in models if "error" not in entry]
    if args.memory == "subprocess":
        for entry in timed:
            if entry["compiled"]:  # inductor's own memory would dominate the process RSS
                entry["memory"] = {"kind": "not_measured", "reason": "compiled: the compiler's RSS dominates"}
                continue
            entry["memory"] = memory_subprocess(entry["key"], params, args)
            log(f"  memory {entry['key']} (subprocess): {memory_cell(entry['memory'])}")

    for entry in timed:
        rate = rates[entry["key"]]
        hf = rates.get(entry_key(HF_KEY, entry["precision"]))  # HF BERT in the same precision
        peak = peaks.get(entry["precision"])
        entry["tokens_per_s"] = rate
        entry["ratio_to_hf"] = rate["median"] / hf["median"] if hf else None
        entry["gflop_per_s"] = {kind: rate["median"] * f / 1e9 for kind, f in entry["flops_per_token"].items()}
        entry["mfu"] = entry["gflop_per_s"]["model"] * 1e9 / peak.flops if peak else None
        if entry["key"] in profiles:
            entry["profile"] = profiles[entry["key"]]
    # bf16 / fp32 median tokens/s per model (= the ratio of model FLOP/s: the same FLOPs per token).
    bf16_over_fp32 = {}
    for model_key in keys:
        fp32, bf16 = rates.get(entry_key(model_key, "fp32")), rates.get(entry_key(model_key, "bf16"))
        if fp32 and bf16:
            bf16_over_fp32[model_key] = bf16["median"] / fp32["median"]
    return {"params_budget": params, "scored_tokens_in_batch": scored, "load_average_1min_end": load_end,
            "models": models, "bf16_over_fp32_tokens_per_s": bf16_over_fp32}


# -- command line ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default=None,
                   help=f"comma-separated total parameter budgets (default: CPU {CPU_SIZES}, CUDA {CUDA_SIZES})")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: CPU 8, CUDA 32)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per model (>= 2: the first is counted eagerly, compilation happens in the "
                        "others; peak memory is taken over them) (default: CPU 2, CUDA 5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default: CPU 3, CUDA 5)")
    p.add_argument("--steps-per-round", type=int, default=None,
                   help="timed steps per model per round (default: CPU 1, CUDA 10)")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated subset of {', '.join(SPEC_BY_KEY)} (default: {DEFAULT_MODELS})")
    p.add_argument("--precisions", default=None,
                   help="comma-separated subset of fp32,bf16; every model runs in each, interleaved in the same "
                        "rounds (bf16: torch.autocast(device, bfloat16) around forward + loss, as the trainer) "
                        "(default: CUDA bf16; CPU fp32,bf16 where it has bf16 units (AVX512-BF16 / AMX), else fp32)")
    p.add_argument("--hf-attn", choices=("eager", "sdpa"), default="sdpa", help="HF attention implementation")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for -compile models (default: torch's)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="MFU denominator in FLOP/s, for a device the built-in table lacks (devices.py)")
    p.add_argument("--memory", choices=("inline", "subprocess", "none"), default=None,
                   help="peak memory over build + warmup: in a fresh process per eager model (CPU default), in this "
                        "process as each model is built (CUDA default: the allocator's counters are exact), or not")
    p.add_argument("--profile", metavar="MODEL[@PRECISION]", action="append", default=[],
                   help="also profile MODEL after timing (in PRECISION, or in every precision), at every budget "
                        "(repeatable): top ops and self time by group (matmuls, casts, copies, softmax, ...) to "
                        "stderr and JSON; e.g. pt-banded@bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/throughput-<device-name>.json)")
    p.add_argument("--memory-child", metavar="MODEL", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    keys = args.models.split(",")
    unknown = [k for k in keys if k not in SPEC_BY_KEY]
    if unknown:
        p.error(f"--models: unknown {unknown}; allowed: {', '.join(SPEC_BY_KEY)}")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.precisions = (args.precisions or default_precisions(device)).split(",")
    bad = [x for x in args.precisions if x not in PRECISIONS]
    if bad or not args.precisions or len(set(args.precisions)) != len(args.precisions):
        p.error(f"--precisions: {','.join(args.precisions)}; give distinct values among {', '.join(PRECISIONS)}")
    args.profile_keys = []
    for item in args.profile:
        model, _, precision = item.partition("@")
        if model not in keys:
            p.error(f"--profile: {model!r} is not among --models")
        if precision and precision not in args.precisions:
            p.error(f"--profile: precision {precision!r} is not among --precisions ({','.join(args.precisions)})")
        args.profile_keys += [entry_key(model, x) for x in ([precision] if precision else args.precisions)]
    defaults = (("params", CPU_SIZES, CUDA_SIZES), ("batch_size", 8, 32), ("warmup", 2, 5), ("rounds", 3, 5),
                ("steps_per_round", 1, 10), ("memory", "subprocess", "inline"))
    for name, cpu_default, cuda_default in defaults:
        if getattr(args, name) is None:
            setattr(args, name, cuda_default if cuda else cpu_default)
    try:
        args.sizes = [parse_count(s) for s in str(args.params).split(",")]
    except (ValueError, argparse.ArgumentTypeError) as err:
        p.error(f"--params: {err}")
    if min(args.rounds, args.steps_per_round, args.warmup) < 1:
        p.error("--rounds, --steps-per-round and --warmup must be >= 1")
    if args.warmup < 2 and (args.memory != "none" or any(SPEC_BY_KEY[k].compiled for k in keys)):
        p.error("use --warmup >= 2: compilation happens after the first (eager, counted) warmup step, and peak "
                "memory needs the second step, the first with Adam state allocated (or --memory none)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    device = resolve_device(args.device)
    name = device_name(device)
    threads = torch.get_num_threads()
    peaks = {precision: peak_flops(device, threads, args.peak_flops, precision) for precision in args.precisions}
    keys = args.models.split(",")
    load_start = os.getloadavg()
    started = time.perf_counter()
    peak_lines = "; ".join(f"{x} peak {f'{pk.flops / 1e12:.3g} TFLOP/s ({pk.basis})' if pk else 'unknown'}"
                           for x, pk in peaks.items())
    log(f"device: {name} ({device.type}), torch {torch.__version__}, {threads} threads, load average "
        f"{load_start[0]:.2f}; {peak_lines}; warmup {args.warmup}, {args.rounds} rounds x {args.steps_per_round} "
        f"steps; precisions {', '.join(args.precisions)}")
    if device.type == "cpu" and "bf16" in args.precisions and not cpu_bf16_units():
        log("warning: this CPU has no bf16 units (AVX512-BF16 / AMX): bf16 matmuls are emulated, slower than fp32")
    if device.type == "cpu" and threads > 1 and load_start[0] >= (os.cpu_count() or 1) - threads + 1:
        log(f"warning: load average {load_start[0]:.1f} with {threads} threads on {os.cpu_count()} cores: if other "
            "processes keep cores busy, intra-op threads wait for descheduled peers at every op and the numbers "
            "measure that contention (compare --threads 1)")

    out = args.out or RESULTS_DIR / f"throughput-{slug(name)}.json"
    result = {
        "benchmark": "training throughput (forward + backward + AdamW step) at parameter budgets",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "complete": False,
        "device": {"type": device.type, "name": name, "cpu_count": os.cpu_count(), "torch_threads": threads,
                   "cpu_bf16_units": cpu_bf16_units() if device.type == "cpu" else None,
                   "peak_flops": {x: vars(pk) if pk else None for x, pk in peaks.items()},
                   "load_average_1min_start": load_start[0]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "cuda": torch.version.cuda if device.type == "cuda" else None},
        "settings": {"params_budgets": args.sizes, "vocab_size": args.vocab_size, "batch_size": args.batch_size,
                     "seq_len": args.seq_len, "tokens_per_step": args.batch_size * args.seq_len,
                     "mask_prob": args.mask_prob, "precisions": args.precisions,
                     "precision": {"fp32": "fp32, no autocast",
                                   "bf16": f"torch.autocast({device.type!r}, dtype=torch.bfloat16) around forward + "
                                           "loss, as the trainer (models keep softmaxes and the loss in fp32)"},
                     "warmup_steps": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps_per_round,
                     "models": keys, "compile": {"regional": True, "dynamic": False, "mode": args.compile_mode},
                     "optimizer": {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS,
                                   "fused": device.type == "cuda"},
                     "dropout": "config defaults (0.1), train mode", "grad_clip": None, "seed": args.seed,
                     "memory": args.memory, "hf_attn": args.hf_attn,
                     "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
        "notes": [
            "tokens/s counts every input token (batch x seq_len) per optimizer step; median / min / max over "
            "interleaved rounds (order rotated each round). Every (model, precision) entry, key MODEL@PRECISION, "
            "is its own model instance, timed in the same rounds as the others.",
            "bf16_over_fp32_tokens_per_s (per budget): bf16 / fp32 median tokens/s per model (also the ratio of "
            "model FLOP/s). ratio_to_hf: against HF BERT in the same precision.",
            "flops_per_token.model: probformer.sizing.training_flops_per_token (matmuls, 6 x MACs, head at the "
            "batch's scored fraction), the same for every implementation of a model; MFU = median tokens/s x that "
            "/ device.peak_flops. flops_per_token.executed: torch FlopCounterMode over one eager forward + backward "
            "(HF's head at every position and the reference kernel's K full products included; elementwise banded "
            "products not seen). gflop_per_s = median tokens/s x each. MFU uses the peak of the entry's precision "
            "(device.peak_flops[precision]; on CPU both are estimates, bf16 = 2x fp32 with AVX512-BF16).",
            "phase_fraction: median share of forward / backward / optimizer (step + zero_grad) time.",
            "memory: peak over building the model and its warmup steps (compilation included), above the level just "
            "before it was built. CPU: peak RSS in a fresh process per eager model; CUDA: max_memory_allocated.",
        ],
        "sizes": [],
    }
    for params in args.sizes:
        result["sizes"].append(run_budget(params, keys, args, device, peaks, log))
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = len(result["sizes"]) == len(args.sizes)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # after every budget: a killed run keeps the finished ones
    print(markdown_report(result))
    print(f"\n{name}, {threads} threads, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{', '.join(args.precisions)}; batch {args.batch_size} x {args.seq_len}; "
          f"{args.rounds} rounds x {args.steps_per_round} steps; "
          f"{result['seconds']:.0f}s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
