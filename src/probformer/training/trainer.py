"""The training loop: ``train(config) -> metrics``, callable in-process (sweeps) or from the CLI.

AdamW with per-role groups from :mod:`probformer.parametrization`, warmup + decay schedule that
scales each group's own lr, gradient accumulation and clipping, bf16 autocast on CUDA (fp32 on
CPU), periodic evaluation on fixed-mask validation batches, atomic resumable checkpoints. A NaN or
inf loss ends the run with ``status = "diverged"`` in the returned and logged metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from probformer.config import ConfigError, TrainConfig
from probformer.data.batches import Batch, TrainStream, eval_batches
from probformer.data.masking import IGNORE_INDEX
from probformer.data.prepared import CorpusSpec, PreparedCorpus, prepare_corpus
from probformer.data.tokenization import MASK_ID, PAD_ID
from probformer.models import architecture, build_model
from probformer.parametrization import build_optimizer
from probformer.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from probformer.training.metrics_log import MetricsLog
from probformer.training.schedule import build_scheduler

EvalCallback = Callable[[int, dict[str, float]], None]

transformers_logging.disable_progress_bar()  # save_pretrained's per-shard bars would drown ours


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def corpus_for(config: TrainConfig, log=print) -> PreparedCorpus:
    d = config.data
    spec = CorpusSpec(source=d.source, text_field=d.text_field, vocab_size=d.vocab_size,
                      valid_fraction=d.valid_fraction, test_fraction=d.test_fraction, split_seed=d.split_seed,
                      lowercase=d.lowercase)
    return prepare_corpus(spec, Path(d.cache_dir) if d.cache_dir else None, log=log)


def model_from_config(config: TrainConfig, vocab_size: int):
    kwargs = {k: v for k, v in config.model.items() if k != "arch"}
    return build_model(config.model["arch"], vocab_size=vocab_size, pad_token_id=PAD_ID, mask_token_id=MASK_ID, **kwargs)


@torch.no_grad()
def init_bias_from_unigram(model, corpus: PreparedCorpus) -> None:
    """Read-out bias = log unigram probabilities, so step 0 already predicts the unigram baseline and
    no early updates are spent learning token frequencies (the same for every architecture)."""
    bias = model.get_output_embeddings().bias
    logp = torch.from_numpy(corpus.unigram_log_probs()).to(bias.dtype)
    bias.copy_(torch.where(torch.isfinite(logp), logp, torch.full_like(logp, logp[torch.isfinite(logp)].min().item())))


@torch.no_grad()
def evaluate(model, batches: list[Batch], device: torch.device, autocast, unigram_logp: np.ndarray) -> dict[str, float]:
    """Masked-token loss (nats), accuracy and perplexity; ``unigram_loss`` scores the same targets
    with train-split unigram frequencies (the context-free baseline)."""
    was_training = model.training
    model.eval()
    total_loss, correct, count, unigram = 0.0, 0, 0, 0.0
    for batch in batches:
        batch = batch.to(device)
        with autocast():
            out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, scored_logits_only=True)
        targets = batch.labels[batch.labels != IGNORE_INDEX]
        total_loss += float(out.loss) * len(targets)
        correct += int((out.logits.argmax(-1) == targets).sum())
        count += len(targets)
        unigram += float(-unigram_logp[targets.cpu().numpy()].sum())
    model.train(was_training)
    loss = total_loss / max(count, 1)
    return {"loss": loss, "accuracy": correct / max(count, 1), "perplexity": math.exp(min(loss, 50.0)),
            "unigram_loss": unigram / max(count, 1), "tokens": count}


def train(config: TrainConfig, *, resume: bool = False, on_eval: EvalCallback | None = None, log=print) -> dict[str, Any]:
    """Train, evaluate and save; return the final metrics (``status``: completed or diverged).

    ``on_eval(step, valid_metrics)`` is called after each evaluation; it may raise to stop the run
    (a sweep's pruner does this).
    """
    out_dir = Path(config.out_dir)
    checkpoint = find_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None:
        log(f"no checkpoint in {out_dir}: starting from scratch")
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    corpus = corpus_for(config, log)
    d = config.data
    torch.manual_seed(config.seed)
    model = model_from_config(config, corpus.vocab_size)
    if config.unigram_bias_init:
        init_bias_from_unigram(model, corpus)
    model = model.to(device)
    model.train()
    o = config.optim
    # Per-group lr and Adam-eps factors come from the model's own parametrization (build_optimizer).
    optimizer = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                fused=device.type == "cuda")
    if o.ternary_norm_penalty > 0 and not hasattr(model, "ternary_norm"):
        raise ConfigError(f"optim.ternary_norm_penalty: the 2023 regulariser is PT's; arch "
                          f"{config.model['arch']!r} has no ternary factors (set it to 0)")
    total_steps = config.total_steps
    scheduler = build_scheduler(optimizer, total_steps, o.warmup_fraction, o.decay, o.min_lr_ratio)
    stream = TrainStream(corpus.blocks("train", d.seq_len), config.batch_size, d.mask_style, d.resolved_mask_prob,
                         corpus.vocab_size, config.seed)
    valid = eval_batches(corpus.blocks("valid", d.seq_len), config.batch_size, d.mask_style, d.resolved_mask_prob,
                         corpus.vocab_size, seed=1234, max_batches=config.eval_batches)
    unigram_logp = corpus.unigram_log_probs()
    # Other text scored at every evaluation (e.g. out of domain), whole, with masks fixed by one seed
    # so that every model of this tokenizer is scored on the same masked targets.
    other_evals = {name: eval_batches(corpus.text_blocks(path, d.seq_len, d.text_field), config.batch_size, d.mask_style,
                                      d.resolved_mask_prob, corpus.vocab_size, seed=2468)
                   for name, path in config.eval_texts.items()}
    last_other: dict[str, dict[str, float]] = {}

    step, tokens_seen, last_valid = 0, 0, None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        if state.get("tokenizer_sha256") != corpus.tokenizer_sha256:
            # WordPiece training is not bit-reproducible (huggingface/tokenizers#1794): a rebuilt
            # cache may number tokens differently, and the model would silently read other ids.
            raise CheckpointError(f"checkpoint {checkpoint} was trained with a different tokenizer than the corpus cache "
                                  f"{corpus.root} now holds; point data.cache_dir at the original cache")
        step, tokens_seen, last_valid = state["step"], state["tokens_seen"], state.get("last_valid")
        stream.load_state_dict(state["data"])
        log(f"resumed from {checkpoint} at step {step}")
    metrics_log = MetricsLog(out_dir, step if checkpoint is not None else None, config.tensorboard, log)
    (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    n_params = sum(p.numel() for p in model.parameters())
    if checkpoint is None:
        metrics_log.write("info", 0, {"parameters": n_params, "total_steps": total_steps, "device": str(device),
                                      "train_tokens": int(len(corpus.streams["train"])), "bf16": use_bf16})
    log(f"{config.model['arch']} model: {n_params:,} parameters, {config.model.get('parametrization', 'mup')}; "
        f"{total_steps} steps of {config.batch_size * config.grad_accum} x {d.seq_len} tokens on {device}")

    def checkpoint_now() -> None:
        save_checkpoint(out_dir, model, optimizer, scheduler,
                        {"step": step, "tokens_seen": tokens_seen, "data": stream.state_dict(), "last_valid": last_valid,
                         "tokenizer_sha256": corpus.tokenizer_sha256},
                        config.to_dict())

    def export_model(directory: Path) -> None:
        architecture(config.model["arch"]).export(model, directory, corpus.root / "tokenizer.json")

    result: dict[str, Any] = {"status": "completed"}
    bar = tqdm(total=total_steps, initial=step, disable=not config.progress, desc="train", unit="step", dynamic_ncols=True)
    window_start, window_tokens, running = time.perf_counter(), 0, []
    try:
        while step < total_steps:
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(config.grad_accum):
                batch = stream.next().to(device)
                with autocast():
                    out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, scored_logits_only=True)
                    loss = out.loss
                    if o.ternary_norm_penalty > 0:
                        loss = loss + o.ternary_norm_penalty * model.ternary_norm()
                (loss / config.grad_accum).backward()
                step_loss += float(out.loss.detach()) / config.grad_accum
                window_tokens += batch.num_tokens
            if not math.isfinite(step_loss):
                result = {"status": "diverged", "reason": f"non-finite training loss ({step_loss}) at step {step + 1}"}
                break
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip if o.grad_clip > 0 else math.inf)
            if not torch.isfinite(grad_norm):
                result = {"status": "diverged", "reason": f"non-finite gradient norm at step {step + 1}"}
                break
            optimizer.step()
            scheduler.step()
            step += 1
            tokens_seen += config.batch_size * config.grad_accum * d.seq_len
            running.append(step_loss)
            bar.update(1)
            if step % config.log_interval == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / max(elapsed, 1e-9)
                train_loss = float(np.mean(running))
                metrics_log.write("train", step, {"loss": train_loss, "lr": scheduler.get_last_lr()[0],
                                                  "grad_norm": float(grad_norm), "tokens_per_second": tps,
                                                  "tokens_seen": tokens_seen})
                bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tps:,.0f}")
                result["tokens_per_second"] = tps
                window_start, window_tokens, running = time.perf_counter(), 0, []
            if step % config.eval_interval == 0 or step == total_steps:
                last_valid = evaluate(model, valid, device, autocast, unigram_logp)
                metrics_log.write("valid", step, last_valid)
                bar.write(f"step {step}: valid loss {last_valid['loss']:.4f} (unigram {last_valid['unigram_loss']:.4f}), "
                          f"accuracy {last_valid['accuracy']:.3f}, perplexity {last_valid['perplexity']:.1f}")
                for name, batches in other_evals.items():
                    last_other[name] = evaluate(model, batches, device, autocast, unigram_logp)
                    metrics_log.write(f"eval_{name}", step, last_other[name])
                    bar.write(f"step {step}: {name} loss {last_other[name]['loss']:.4f} "
                              f"(unigram {last_other[name]['unigram_loss']:.4f})")
                if not math.isfinite(last_valid["loss"]):
                    result = {"status": "diverged", "reason": f"non-finite validation loss at step {step}"}
                    break
                if on_eval is not None:
                    on_eval(step, last_valid)
            if config.checkpoint_interval and step % config.checkpoint_interval == 0 and step < total_steps:
                checkpoint_now()
            if config.snapshot_interval and step % config.snapshot_interval == 0 and step < total_steps:
                # Models along one run (e.g. to watch its trees form, `probformer parse-eval` per snapshot).
                export_model(out_dir / "snapshots" / f"step-{step:06d}")
    finally:
        bar.close()

    result.update(step=step, tokens_seen=tokens_seen, parameters=n_params, out_dir=str(out_dir))
    if last_valid is not None:
        result.update({f"valid_{k}": v for k, v in last_valid.items()})
    for name, metrics in last_other.items():
        result.update({f"eval_{name}_{k}": v for k, v in metrics.items()})
    if result["status"] == "completed":
        checkpoint_now()
        export_model(out_dir / "model")
        if config.test_eval:
            test = eval_batches(corpus.blocks("test", d.seq_len), config.batch_size, d.mask_style,
                                d.resolved_mask_prob, corpus.vocab_size, seed=4321, max_batches=config.eval_batches)
            test_metrics = evaluate(model, test, device, autocast, unigram_logp)
            metrics_log.write("test", step, test_metrics)
            result.update({f"test_{k}": v for k, v in test_metrics.items()})
    else:
        log(f"run diverged: {result['reason']}")
    metrics_log.write("final", step, {k: v for k, v in result.items() if k != "out_dir"})
    metrics_log.close()
    (out_dir / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result
