"""Training throughput of PT, our BERT (muP and SP), our UT and HF BertForMaskedLM at one parameter budget.

Not part of the package or of CI. Run from the repository root with the project's environment:

    .venv/bin/python benchmarks/throughput.py                       # 2.5M params, auto device
    .venv/bin/python benchmarks/throughput.py --device cuda --params 10M --rounds 10

Every model gets the same random token batch (BERT-style 15% masking, labels -100 elsewhere) and
trains with AdamW (ours: per-role groups from ``probformer.parametrization.build_optimizer``; HF:
``torch.optim.AdamW``). One measured step = forward + backward + optimizer step + zero_grad. After
warmup steps, the models are timed in interleaved rounds: each round runs ``--steps-per-round``
steps of every model, in an order rotated every round, so that background load hits every model
alike; the report gives the median (and min / max) tokens/s over rounds. Tokens = batch x seq_len
input tokens per step, masked or not.

Peak memory is taken over building a model and its warmup steps, above the level just before it
was built: on CUDA (default ``--memory inline``, in this process, models built one at a time)
``torch.cuda.max_memory_allocated``; on CPU (default ``--memory subprocess``: one fresh process per
model, after timing) the peak RSS (VmHWM, reset through /proc/self/clear_refs). See
benchmarks/README.md.

Writes ``benchmarks/results/throughput-<device-slug>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
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
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import BertConfig, BertForMaskedLM

from probformer.data.masking import IGNORE_INDEX, mask_tokens
from probformer.cli import parse_count
from probformer.models import model_classes
from probformer.parametrization import build_optimizer
from probformer.sizing import (
    config_for_budget,
    count_parameters,
    training_flops_per_token,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HF_KEY = "hf-bert"

# Optimizer settings (probformer's OptimConfig defaults except lr; values do not change the cost).
LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 0.01, (0.9, 0.98), 1e-8


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    arch: str  # sizing arch ("bert" for HF: same family and formula)
    base: dict


SPECS = (
    Spec("pt", "PT (muP)", "pt", {}),
    Spec("bert-mup", "BERT (ours, muP)", "bert", {}),
    Spec("bert-sp", "BERT (ours, SP)", "bert", {"parametrization": "sp"}),
    Spec("ut", "UT (ours, muP)", "ut", {}),
    Spec(HF_KEY, "HF BertForMaskedLM", "bert", {"parametrization": "sp"}),
)
SPEC_BY_KEY = {s.key: s for s in SPECS}


# -- settings, device --------------------------------------------------------------------------------



def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext  # fp32 on CPU, as the trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- models ------------------------------------------------------------------------------------------

def config_of(spec: Spec, args):
    return config_for_budget(spec.arch, args.params, vocab_size=args.vocab_size, base=spec.base)


def hf_config(sp_config) -> BertConfig:
    """HF BERT with our SP config's shape. type_vocab_size=1 (segment A only, as ours) so the two
    parameter counts are identical; everything else is HF's default (tied decoder, sdpa attention)."""
    return BertConfig(
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


def build(spec: Spec, args, device: torch.device):
    """(model, optimizer, config) for one spec, on ``device``, in train mode."""
    config = config_of(spec, args)
    torch.manual_seed(args.seed)
    if spec.key == HF_KEY:
        kwargs = {"attn_implementation": args.hf_attn} if args.hf_attn != "default" else {}
        model = BertForMaskedLM(hf_config(config), **kwargs).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS,
                                      fused=True if device.type == "cuda" else None)
    else:
        _, model_cls = model_classes(spec.arch)  # the registry behind build_model
        model = model_cls(config).to(device).train()
        optimizer = build_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS,
                                    fused=device.type == "cuda")  # the model's own lr and eps factors
    return model, optimizer, config


def shape_of(spec: Spec, config) -> dict:
    if spec.arch == "pt":
        keys = ("parametrization", "hidden_size", "num_channels", "rank", "latent_size", "num_iterations", "max_distance")
    else:
        keys = ("parametrization", "hidden_size", "num_layers", "num_heads", "intermediate_size")
    return {k: getattr(config, k) for k in keys}


def short_shape(spec: Spec, config) -> str:
    if spec.arch == "pt":
        return (f"N={config.hidden_size} h={config.num_channels} r={config.rank} M={config.latent_size} "
                f"T={config.num_iterations}")
    name = "T" if spec.arch == "ut" else "L"
    return f"N={config.hidden_size} {name}={config.num_layers} H={config.num_heads} I={config.intermediate_size}"


def param_counts(spec: Spec, config, model) -> dict:
    actual = sum(p.numel() for p in model.parameters())  # tied weights once
    if spec.key == HF_KEY:
        embedding = sum(p.numel() for n, p in model.named_parameters()
                        if re.search(r"(word|position|token_type)_embeddings\.weight$|^cls\.predictions\.bias$", n))
        return {"total": actual, "non_embedding": actual - embedding, "embedding": embedding}
    counts = count_parameters(spec.arch, config)
    if counts["total"] != actual:
        raise RuntimeError(f"{spec.key}: sizing counts {counts['total']} parameters, the model has {actual}")
    return counts


def make_batch(args, device: torch.device) -> dict[str, torch.Tensor]:
    """One fixed batch: uniform random non-special ids, BERT-style 15% masking (80/10/10), no padding."""
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(5, args.vocab_size, (args.batch_size, args.seq_len), generator=gen)
    inputs, labels = mask_tokens(ids, "bert", args.mask_prob, args.vocab_size, gen)
    return {"input_ids": inputs.to(device), "attention_mask": torch.ones_like(inputs).to(device),
            "labels": labels.to(device)}


# -- timing ------------------------------------------------------------------------------------------

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


def train_steps(model, optimizer, batch, autocast, steps: int, marks: Marks | None = None) -> float:
    """Run ``steps`` training steps; returns the last loss (a float: syncs, so call outside timing)."""
    loss = None
    # Ours read out only at the scored positions, as the trainer does; HF's head runs everywhere.
    readout = {} if isinstance(model, BertForMaskedLM) else {"scored_logits_only": True}
    for _ in range(steps):
        if marks is not None:
            marks.mark()
        with autocast():
            loss = model(**batch, **readout).loss
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


def warm_up(model, optimizer, batch, autocast, args, device, key: str) -> float:
    """The untimed steps; returns the last loss and raises if it is not finite."""
    loss = float(train_steps(model, optimizer, batch, autocast, args.warmup).detach()) if args.warmup else 0.0
    sync(device)
    if not math.isfinite(loss):
        raise RuntimeError(f"{key}: non-finite loss {loss} during warmup")
    return loss


def measure(runs: dict, args, device: torch.device, batch, autocast, log) -> dict[str, dict]:
    """Interleaved rounds: every round times ``steps_per_round`` steps of each model, order rotated."""
    keys = list(runs)
    tokens_per_step = args.batch_size * args.seq_len
    rates: dict[str, list[float]] = {k: [] for k in keys}
    phases: dict[str, list[tuple[float, float, float]]] = {k: [] for k in keys}
    for r in range(args.rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]  # rotate so no model always runs first / after X
        line = []
        for key in order:
            model, optimizer = runs[key]
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
            "phase_fraction": {name: statistics.median(p[i] / t for p, t in zip(phases[key], total))
                               for i, name in enumerate(("forward", "backward", "optimizer"))},
        }
    return out


def profile(runs: dict, key: str, args, device: torch.device, batch, autocast, rows: int = 15) -> list[dict]:
    """Top operators by self time over ``--steps-per-round`` steps of one model (torch.profiler; its
    own overhead inflates small ops, so read shares, not absolute times)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model, optimizer = runs[key]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        train_steps(model, optimizer, batch, autocast, args.steps_per_round)
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    print(averages.table(sort_by=attr, row_limit=rows), file=sys.stderr)
    total = sum(getattr(e, attr, 0.0) for e in averages) or 1.0
    top = sorted(averages, key=lambda e: getattr(e, attr, 0.0), reverse=True)[:rows]
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, attr, 0.0) / 1e3,
             "self_fraction": getattr(e, attr, 0.0) / total} for e in top]


# -- memory ----------------------------------------------------------------------------------------

def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Hand memory freed by earlier models back to the OS, so RSS is live memory (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory of what happens between ``start()`` and ``stop()``, above the level at ``start()``.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes at start (tensors only; the
    caching allocator's reserve is reported beside it). CPU: the kernel's peak RSS (VmHWM, reset at
    start through /proc/self/clear_refs) minus the RSS at start, after freed memory was trimmed back
    to the OS. Other models already built stay resident but idle, so they only shift the baseline.
    ``getrusage``'s ru_maxrss is no use here: it cannot be reset, and a child process inherits its
    parent's value across fork + exec.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            sync(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        self.base = _proc_status_bytes("VmRSS")
        self.reset = _reset_peak_rss()

    def stop(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            return {"kind": "cuda_max_allocated",
                    "peak_mb": (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20,
                    "max_reserved_total_mb": torch.cuda.max_memory_reserved(self.device) / 2**20}
        hwm = _proc_status_bytes("VmHWM")
        if self.base is None or hwm is None:
            return {"kind": "unavailable"}
        return {"kind": "rss_peak_above_start" if self.reset else "rss_peak_above_start_upper_bound",
                "peak_mb": (hwm - self.base) / 2**20, "rss_at_start_mb": self.base / 2**20,
                "process_peak_rss_mb": hwm / 2**20}


def memory_child(key: str, args) -> dict:
    """--memory subprocess: this model alone in a fresh process, the same probe around build + warmup."""
    device = resolve_device(args.device)
    batch = make_batch(args, device)
    probe = MemoryProbe(device)
    probe.start()
    model, optimizer, _ = build(SPEC_BY_KEY[key], args, device)
    train_steps(model, optimizer, batch, autocast_for(device), args.warmup)
    return probe.stop()


def child_argv(args, key: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--memory-child", key]
    for name in ("params", "vocab_size", "batch_size", "seq_len", "mask_prob", "device", "seed", "warmup",
                 "hf_attn", "threads"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def memory_subprocess(key: str, args) -> dict:
    proc = subprocess.run(child_argv(args, key), check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"kind": "error", "error": proc.stderr.strip()[-500:]}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": "subprocess"}


# -- report ------------------------------------------------------------------------------------------

def _memory_cell(mem: dict | None) -> str:
    if not mem or "peak_mb" not in mem:
        return "n/a"
    return f"{'≤' if mem['kind'].endswith('upper_bound') else ''}{mem['peak_mb']:.0f} MiB"


def markdown_table(result: dict) -> str:
    mem_header = "peak mem (alloc)" if result["device"]["type"] == "cuda" else "peak mem (RSS)"
    lines = [
        (f"| model | shape | params total / non-emb | train MFLOP/token | tokens/s median | min – max | vs HF "
         f"| GFLOP/s | fwd / bwd / opt | {mem_header} |"),
        "|---|---|---|---|--:|--:|--:|--:|---|--:|",
    ]
    for m in result["models"]:
        t, p, ph = m["tokens_per_s"], m["params"], m["tokens_per_s"]["phase_fraction"]
        flops = f"{m['flops_per_token'] / 1e6:.1f}"
        if m["flops_per_token_as_run"] != m["flops_per_token"]:
            flops += f" ({m['flops_per_token_as_run'] / 1e6:.1f} as run)"
        lines.append(
            f"| {m['label']} | {m['shape_short']} | {p['total'] / 1e6:.3f}M / {p['non_embedding'] / 1e6:.3f}M | {flops} "
            f"| {t['median']:,.0f} | {t['min']:,.0f} – {t['max']:,.0f} | {m['ratio_to_hf']:.2f}× "
            f"| {m['achieved_gflop_per_s']:.1f} "
            f"| {ph['forward']:.0%} / {ph['backward']:.0%} / {ph['optimizer']:.0%} | {_memory_cell(m.get('memory'))} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=parse_count, default=2_500_000, help="total parameter budget (default 2.5M)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per model, also where peak memory is taken (default: CPU 2, CUDA 10)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved timing rounds, median over them (default: 7)")
    p.add_argument("--steps-per-round", type=int, default=None,
                   help="timed steps per model per round (default: CPU 2, CUDA 20)")
    p.add_argument("--models", default=",".join(s.key for s in SPECS),
                   help=f"comma-separated subset of {', '.join(s.key for s in SPECS)}")
    p.add_argument("--hf-attn", choices=("default", "eager", "sdpa"), default="default",
                   help="HF attention implementation (default: transformers' own choice, sdpa)")
    p.add_argument("--memory", choices=("inline", "subprocess", "none"), default=None,
                   help="peak memory over build + warmup steps: in a fresh process per model (CPU default: RSS "
                        "there does not depend on what ran before), in this process as each model is built "
                        "(CUDA default: the allocator's counters are exact), or not at all")
    p.add_argument("--profile", metavar="MODEL", action="append", default=[],
                   help="also profile MODEL after timing (repeatable): top ops to stderr and into the JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/throughput-<device-name>.json)")
    p.add_argument("--memory-child", metavar="MODEL", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [k for k in args.models.split(",") if k not in SPEC_BY_KEY]
    if unknown:
        p.error(f"--models: unknown {unknown}; allowed: {', '.join(SPEC_BY_KEY)}")
    for key in args.profile:
        if key not in args.models.split(","):
            p.error(f"--profile: {key!r} is not among --models")
    cuda = resolve_device(args.device).type == "cuda"
    defaults = (("warmup", 2, 10), ("rounds", 7, 7), ("steps_per_round", 2, 20), ("memory", "subprocess", "inline"))
    for name, cpu_default, cuda_default in defaults:
        if getattr(args, name) is None:
            setattr(args, name, cuda_default if cuda else cpu_default)
    if min(args.rounds, args.steps_per_round) < 1 or args.warmup < 0:
        p.error("--rounds and --steps-per-round must be >= 1, --warmup >= 0")
    if args.memory != "none" and args.warmup < 2:
        p.error("peak memory is taken over the warmup steps: use --warmup >= 2 (the second step is the first "
                "with Adam state allocated) or --memory none")
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
    autocast = autocast_for(device)
    keys = args.models.split(",")
    load_start = os.getloadavg()
    started = time.perf_counter()
    log(f"device: {name} ({device.type}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load_start[0]:.2f}; warmup {args.warmup}, {args.rounds} rounds x {args.steps_per_round} steps")

    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1 and load_start[0] >= (os.cpu_count() or 1) - threads + 1:
        log(f"warning: load average {load_start[0]:.1f} with {threads} threads on {os.cpu_count()} cores: if other "
            "processes keep cores busy, intra-op threads wait for descheduled peers at every op and the numbers "
            "measure that contention (compare --threads 1)")

    batch = make_batch(args, device)
    scored = int((batch["labels"] != IGNORE_INDEX).sum())
    runs, models = {}, []
    for key in keys:  # build, then warm up (peak memory taken here), one model at a time
        spec = SPEC_BY_KEY[key]
        t0 = time.perf_counter()
        probe = MemoryProbe(device)
        if args.memory == "inline":
            probe.start()
        model, optimizer, config = build(spec, args, device)
        loss = warm_up(model, optimizer, batch, autocast, args, device, key)
        entry = {"key": key, "label": spec.label, "shape": shape_of(spec, config),
                 "shape_short": short_shape(spec, config), "params": param_counts(spec, config, model),
                 "warmup_loss": loss}
        if args.memory == "inline":
            entry["memory"] = {**probe.stop(), "process": "inline"}
        runs[key] = (model, optimizer)
        entry["flops_per_token"] = training_flops_per_token(spec.arch, config, args.seq_len, args.mask_prob)
        # HF's MLM head (transform + decoder) runs at every position, not only at the masked ones.
        entry["flops_per_token_as_run"] = (training_flops_per_token(spec.arch, config, args.seq_len, 1.0)
                                           if key == HF_KEY else entry["flops_per_token"])
        if key == HF_KEY:
            entry["hf_attn_implementation"] = model.config._attn_implementation
            entry["tie_word_embeddings"] = bool(model.config.tie_word_embeddings)
        models.append(entry)
        log(f"  {key}: {entry['shape_short']}, {entry['params']['total']:,} params; built + {args.warmup} warmup "
            f"steps in {time.perf_counter() - t0:.1f}s, loss {loss:.3f}, peak mem {_memory_cell(entry.get('memory'))}")

    rates = measure(runs, args, device, batch, autocast, log)
    timing_done = time.perf_counter()
    load_end = os.getloadavg()
    profiles = {key: profile(runs, key, args, device, batch, autocast) for key in args.profile}
    del runs, model, optimizer
    if args.memory == "subprocess":
        for entry in models:
            entry["memory"] = memory_subprocess(entry["key"], args)
            log(f"  memory {entry['key']} (subprocess): {_memory_cell(entry['memory'])}")

    hf_rate = rates[HF_KEY]["median"] if HF_KEY in rates else None
    for entry in models:
        key = entry["key"]
        entry["tokens_per_s"] = rates[key]
        entry["ratio_to_hf"] = rates[key]["median"] / hf_rate if hf_rate else float("nan")
        entry["achieved_gflop_per_s"] = rates[key]["median"] * entry["flops_per_token_as_run"] / 1e9
        if key in profiles:
            entry["profile_top_ops"] = profiles[key]

    result = {
        "benchmark": "training throughput (forward + backward + AdamW step) at a parameter budget",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": {"type": device.type, "name": name, "cpu_count": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(),
                   "load_average_1min": {"start": load_start[0], "end_of_timing": load_end[0]}},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "cuda": torch.version.cuda if device.type == "cuda" else None},
        "settings": {"params_budget": args.params, "vocab_size": args.vocab_size, "batch_size": args.batch_size,
                     "seq_len": args.seq_len, "tokens_per_step": args.batch_size * args.seq_len,
                     "mask_prob": args.mask_prob, "scored_tokens_in_batch": scored,
                     "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                     "warmup_steps": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps_per_round,
                     "optimizer": {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS,
                                   "fused": device.type == "cuda"},
                     "dropout": "config defaults (0.1), train mode", "grad_clip": None, "seed": args.seed,
                     "memory": args.memory, "hf_attn": args.hf_attn,
                     "seconds_to_end_of_timing": round(timing_done - started, 1),
                     "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
        "notes": [
            ("tokens/s counts every input token (batch x seq_len) per optimizer step; median / min / max over "
             "interleaved rounds (order rotated each round)."),
            ("flops_per_token: probformer.sizing.training_flops_per_token (matmuls only, 6 x MACs, MLM head at the "
             "masked fraction). HF runs its MLM head at every position: flops_per_token_as_run uses mask_fraction=1 "
             "for it; achieved_gflop_per_s = median tokens/s x flops_per_token_as_run."),
            ("phase_fraction: median share of forward / backward / optimizer (step + zero_grad) time "
             "(CPU: perf_counter; CUDA: CUDA events)."),
            ("memory: peak over building the model and its warmup steps, above the level just before it was built "
             "(weights, grads, Adam state, activations). CPU: peak RSS (VmHWM reset via /proc/self/clear_refs) minus "
             "RSS after malloc_trim, so it includes allocator slack; CUDA: torch.cuda.max_memory_allocated minus "
             "memory_allocated. process=subprocess: a fresh process holding only that model; process=inline: the "
             "benchmark process as each model is built (earlier models idle; on CPU the RSS figure then depends on "
             "the allocator's history and came out up to ~25% off the fresh-process one)."),
        ],
        "models": models,
    }
    out = args.out or RESULTS_DIR / f"throughput-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(f"\n{name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; batch {args.batch_size} x {args.seq_len}, "
          f"budget {args.params:,} params; {args.rounds} rounds x {args.steps_per_round} steps; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
