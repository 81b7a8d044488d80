"""The training loop: ``train(config) -> metrics``, callable in-process (sweeps) or from the CLI,
and under ``torchrun`` (one process per device, DDP or FSDP2; training/distributed.py).

The parts live beside it: build.py (corpus, model, wrapped objective, optimizer by name, schedule),
step.py (one optimizer step, gradients normalised over the global batch), evaluation.py,
export.py (checkpoints and the exported model, gathered to full weights), device.py. A NaN or inf
loss or gradient norm ends the run with ``status = "diverged"`` in the returned and logged metrics;
losses are read to the host only at log, evaluation and checkpoint steps, so that is when it is seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from probformer.config import TrainConfig
from probformer.data.batches import TrainStream, eval_batches
from probformer.training import distributed
from probformer.training.build import build_training, corpus_for, group_table, reapply_group_hyperparameters
from probformer.training.checkpoint import CheckpointError, find_checkpoint
from probformer.training.device import autocast_for, resolve_device, uses_bf16
from probformer.training.evaluation import evaluate
from probformer.training.export import RunExporter
from probformer.training.metrics_log import MetricsLog
from probformer.training.step import optimizer_step

__all__ = ["train", "corpus_for", "evaluate"]

EvalCallback = Callable[[int, dict[str, float]], None]

transformers_logging.disable_progress_bar()  # save_pretrained's per-shard bars would drown ours


def train(config: TrainConfig, *, resume: bool = False, on_eval: EvalCallback | None = None, log=print) -> dict[str, Any]:
    """Train, evaluate and save; return the final metrics (``status``: completed or diverged).

    ``on_eval(step, valid_metrics)`` is called after each evaluation; it may raise to stop the run
    (a sweep's pruner does this). Under torchrun every process calls this; rank 0 logs and writes.
    """
    context = distributed.start(config.distributed, resolve_device(config.device).type)
    try:
        return _train(config, context, resume, on_eval, log if context.is_main else (lambda *a, **k: None))
    finally:
        distributed.stop(context)


def _train(config: TrainConfig, context: distributed.ProcessContext, resume: bool, on_eval: EvalCallback | None,
           log) -> dict[str, Any]:
    out_dir = Path(config.out_dir)
    checkpoint = find_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None:
        log(f"no checkpoint in {out_dir}: starting from scratch")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, context.local_rank if context.distributed else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bf16 = uses_bf16(config.precision, device)
    autocast = autocast_for(device, bf16)
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size={config.batch_size} does not split over {context.world_size} processes; "
                         f"make it a multiple of {context.world_size}")

    if context.is_main:
        corpus = corpus_for(config, log)  # rank 0 builds the cache; the others then read it
    distributed.barrier(context)
    if not context.is_main:
        corpus = corpus_for(config, log)
    d, o = config.data, config.optim
    setup = build_training(config, corpus, context, device)
    total_steps = config.total_steps
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
    exporter = RunExporter(out_dir, setup, context, config, corpus)

    step, tokens_seen, last_valid = 0, 0, None
    if checkpoint is not None:
        state = exporter.restore(checkpoint)
        if state.get("tokenizer_sha256") != corpus.tokenizer_sha256:
            # WordPiece training is not bit-reproducible (huggingface/tokenizers#1794): a rebuilt
            # cache may number tokens differently, and the model would silently read other ids.
            raise CheckpointError(f"checkpoint {checkpoint} was trained with a different tokenizer than the corpus cache "
                                  f"{corpus.root} now holds; point data.cache_dir at the original cache")
        reapply_group_hyperparameters(setup)
        step, tokens_seen, last_valid = state["step"], state["tokens_seen"], state.get("last_valid")
        stream.load_state_dict(state["data"])
        log(f"resumed from {checkpoint} at step {step}")
    metrics_log = MetricsLog(out_dir, step if checkpoint is not None else None, config.tensorboard, log) if context.is_main else None
    n_params = sum(p.numel() for p in setup.model.parameters())  # FSDP2's DTensor shards report the full numel
    if context.is_main:
        (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
        if checkpoint is None:
            metrics_log.write("info", 0, {"parameters": n_params, "total_steps": total_steps, "device": str(device),
                                          "train_tokens": int(len(corpus.streams["train"])), "bf16": bf16,
                                          "processes": context.world_size, "distributed": context.mode})
    log(f"{config.model['arch']} model: {n_params:,} parameters, {config.model.get('parametrization', 'mup')}; "
        f"{total_steps} steps of {config.batch_size * config.grad_accum} x {d.seq_len} tokens on {device}"
        + (f" x {context.world_size} processes ({context.mode})" if context.distributed else ""))
    log(group_table(setup.optimizer))

    def write(kind: str, values: dict[str, Any]) -> None:
        if metrics_log is not None:
            metrics_log.write(kind, step, values)

    result: dict[str, Any] = {"status": "completed"}
    bar = tqdm(total=total_steps, initial=step, disable=not (config.progress and context.is_main), desc="train",
               unit="step", dynamic_ncols=True)
    window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
    window_loss = torch.zeros((), dtype=torch.float64, device=device)  # float64: sums as exactly as Python's
    window_first_step = step + 1
    grad_norm = torch.zeros((), device=device)

    def read_window() -> float | None:
        """The window's summed training loss, read to the host (one all-reduce; every process gets
        the same value); None, with ``result`` set to diverged, when it or the gradient norm is not finite."""
        nonlocal result
        loss_sum, norm = distributed.all_reduce_sum(
            torch.stack([window_loss.detach(), grad_norm.detach().to(window_loss.dtype)]), context).tolist()
        if not (math.isfinite(loss_sum) and math.isfinite(norm)):
            result = {"status": "diverged", "reason": f"non-finite training loss or gradient norm in steps "
                                                      f"{window_first_step}..{step}"}
            return None
        return loss_sum

    try:
        while step < total_steps:
            micro_batches = [stream.next().shard(context.rank, context.world_size) for _ in range(config.grad_accum)]
            stats = optimizer_step(setup.wrapped, setup.optimizer, setup.scheduler, micro_batches, context, device,
                                   autocast, o.grad_clip)
            step += 1
            window_loss = window_loss + stats.loss.detach()
            grad_norm = stats.grad_norm.detach()
            window_steps += 1
            window_tokens += sum(b.num_tokens for b in micro_batches) * context.world_size
            tokens_seen += config.batch_size * config.grad_accum * d.seq_len
            bar.update(1)
            evaluating = step % config.eval_interval == 0 or step == total_steps
            checkpointing = bool(config.checkpoint_interval) and step % config.checkpoint_interval == 0 and step < total_steps
            logging = step % config.log_interval == 0 or step == total_steps
            if logging or evaluating or checkpointing:
                window_loss_sum = read_window()
                if window_loss_sum is None:
                    break
            if logging:
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / max(elapsed, 1e-9)
                train_loss = window_loss_sum / window_steps
                write("train", {"loss": train_loss, "lr": setup.scheduler.get_last_lr()[0],
                                "grad_norm": float(grad_norm), "tokens_per_second": tps, "tokens_seen": tokens_seen})
                bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tps:,.0f}")
                result["tokens_per_second"] = tps
                window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
                window_loss = torch.zeros((), dtype=torch.float64, device=device)
                window_first_step = step + 1
            if evaluating:
                last_valid = evaluate(setup.wrapped, valid, device, autocast, unigram_logp, context)
                write("valid", last_valid)
                if context.is_main:
                    bar.write(f"step {step}: valid loss {last_valid['loss']:.4f} (unigram {last_valid['unigram_loss']:.4f}), "
                              f"accuracy {last_valid['accuracy']:.3f}, perplexity {last_valid['perplexity']:.1f}")
                for name, batches in other_evals.items():
                    last_other[name] = evaluate(setup.wrapped, batches, device, autocast, unigram_logp, context)
                    write(f"eval_{name}", last_other[name])
                    if context.is_main:
                        bar.write(f"step {step}: {name} loss {last_other[name]['loss']:.4f} "
                                  f"(unigram {last_other[name]['unigram_loss']:.4f})")
                if not math.isfinite(last_valid["loss"]):
                    result = {"status": "diverged", "reason": f"non-finite validation loss at step {step}"}
                    break
                if on_eval is not None:
                    on_eval(step, last_valid)
            if checkpointing:
                exporter.checkpoint(step, tokens_seen, stream, last_valid)
            if config.snapshot_interval and step % config.snapshot_interval == 0 and step < total_steps:
                # Models along one run (e.g. to watch its trees form, `probformer parse-eval` per snapshot).
                exporter.export_model(out_dir / "snapshots" / f"step-{step:06d}")
    finally:
        bar.close()

    result.update(step=step, tokens_seen=tokens_seen, parameters=n_params, out_dir=str(out_dir))
    if last_valid is not None:
        result.update({f"valid_{k}": v for k, v in last_valid.items()})
    for name, metrics in last_other.items():
        result.update({f"eval_{name}_{k}": v for k, v in metrics.items()})
    if result["status"] == "completed":
        exporter.checkpoint(step, tokens_seen, stream, last_valid)
        exporter.export_model(out_dir / "model")
        if config.test_eval:
            test = eval_batches(corpus.blocks("test", d.seq_len), config.batch_size, d.mask_style,
                                d.resolved_mask_prob, corpus.vocab_size, seed=4321, max_batches=config.eval_batches)
            test_metrics = evaluate(setup.wrapped, test, device, autocast, unigram_logp, context)
            write("test", test_metrics)
            result.update({f"test_{k}": v for k, v in test_metrics.items()})
    else:
        log(f"run diverged: {result['reason']}")
    if metrics_log is not None:
        metrics_log.write("final", step, {k: v for k, v in result.items() if k != "out_dir"})
        metrics_log.close()
        (out_dir / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result
