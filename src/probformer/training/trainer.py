"""The training loop: ``train(config) -> metrics``, callable in-process (sweeps) or from the CLI,
and under ``torchrun`` (one process per device, DDP or FSDP2; training/distributed.py).

It reads top to bottom: build the :class:`~probformer.training.run.Run` once (run.py: model,
optimizer groups, data, evaluation sets, exporter), resume it if asked, step until done, then
export. Every process runs the same code; what only rank 0 does (print, write metrics and files)
is behind the logger (logger.py), a no-op on the other ranks. One optimizer step is step.py's.

A NaN or inf loss or gradient norm ends the run with ``status = "diverged"`` in the returned and
logged metrics; losses are read to the host only at log, evaluation and checkpoint steps, so that
is when it is seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from probformer.config import TrainConfig
from probformer.data.batches import Batch
from probformer.training import distributed
from probformer.training.build import corpus_for, group_table
from probformer.training.checkpoint import find_checkpoint
from probformer.training.device import resolve_device
from probformer.training.evaluation import evaluate
from probformer.training.logger import Logger, logger_for
from probformer.training.run import VALID, Progress, Run, build_run, resume_from
from probformer.training.step import StepStats, optimizer_step

__all__ = ["corpus_for", "evaluate", "train"]

EvalCallback = Callable[[int, dict[str, float]], None]

transformers_logging.disable_progress_bar()  # save_pretrained's per-shard bars would drown ours


def train(config: TrainConfig, *, resume: bool = False, on_eval: EvalCallback | None = None,
          log=print) -> dict[str, Any]:
    """Train, evaluate and save; return the final metrics (``status``: completed or diverged).

    ``on_eval(step, valid_metrics)`` is called after each evaluation; it may raise to stop the run
    (a sweep's pruner does this). Under torchrun every process calls this; rank 0 logs and writes.
    """
    context = distributed.start(config.distributed, resolve_device(config.device).type)
    try:
        return _train(config, context, resume, on_eval, log)
    finally:
        distributed.stop(context)


def _train(config: TrainConfig, context: distributed.ProcessContext, resume: bool, on_eval: EvalCallback | None,
           log) -> dict[str, Any]:
    out_dir = Path(config.out_dir)
    checkpoint = find_checkpoint(out_dir) if resume else None
    logger = logger_for(context, out_dir, log)
    if resume and checkpoint is None:
        logger.info(f"no checkpoint in {out_dir}: starting from scratch")
    run = build_run(config, context, logger.info)
    progress = resume_from(run, checkpoint, logger.info) if checkpoint is not None else Progress()
    logger.open(config, progress.step if checkpoint is not None else None)
    if checkpoint is None:
        logger.record("info", 0, run.info())
    logger.info(run.describe())
    logger.info(group_table(run.setup.optimizer))
    result = _loop(run, progress, logger, on_eval)
    return _finish(run, progress, result, logger)


def _loop(run: Run, progress: Progress, logger: Logger, on_eval: EvalCallback | None) -> dict[str, Any]:
    """Optimizer steps until ``total_steps`` or divergence; logs, evaluates, checkpoints on schedule."""
    config, context, s = run.config, run.context, run.setup
    result: dict[str, Any] = {"status": "completed"}
    logger.begin(run.total_steps, progress.step, config.progress)
    window = LossWindow(run.device, progress.step)
    try:
        while progress.step < run.total_steps:
            micro_batches = [run.stream.next().shard(context.rank, context.world_size)
                             for _ in range(config.grad_accum)]
            stats = optimizer_step(s.wrapped, s.optimizer, s.scheduler, micro_batches, context, run.device,
                                   run.autocast, config.optim.grad_clip)
            progress.step += 1
            progress.tokens_seen += run.tokens_per_step
            window.add(stats, micro_batches, context.world_size)
            logger.advance()
            step = progress.step
            evaluating = step % config.eval_interval == 0 or step == run.total_steps
            checkpointing = (bool(config.checkpoint_interval) and step % config.checkpoint_interval == 0
                             and step < run.total_steps)
            logging = step % config.log_interval == 0 or step == run.total_steps
            if logging or evaluating or checkpointing:
                loss_sum = window.read(context)
                if loss_sum is None:
                    result = diverged(f"non-finite training loss or gradient norm in steps {window.first_step}..{step}")
                    break
            if logging:
                result["tokens_per_second"] = _log_training(run, progress, window, loss_sum, logger)
            if evaluating:
                _evaluate(run, progress, logger)
                if not math.isfinite(progress.last_valid["loss"]):
                    result = diverged(f"non-finite validation loss at step {step}")
                    break
                if on_eval is not None:
                    on_eval(step, progress.last_valid)
            if checkpointing:
                run.exporter.checkpoint(step, progress.tokens_seen, run.stream, progress.last_valid)
            if config.snapshot_interval and step % config.snapshot_interval == 0 and step < run.total_steps:
                # Models along one run (e.g. to watch its trees form, `probformer parse-eval` per snapshot).
                run.exporter.export_model(run.out_dir / "snapshots" / f"step-{step:06d}")
    finally:
        logger.end()
    return result


def diverged(reason: str) -> dict[str, Any]:
    return {"status": "diverged", "reason": reason}


class LossWindow:
    """The training loss summed on the device since the last log line, read to the host only when
    needed (a read per step would stall the GPU's queue), with the last step's gradient norm."""

    def __init__(self, device: torch.device, step: int):
        self.device = device
        self.grad_norm = torch.zeros((), device=device)
        self.reset(step)

    def reset(self, step: int) -> None:
        self.start, self.tokens, self.steps, self.first_step = time.perf_counter(), 0, 0, step + 1
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)  # float64: sums as exactly as Python's

    def add(self, stats: StepStats, micro_batches: list[Batch], world_size: int) -> None:
        self.loss = self.loss + stats.loss.detach()
        self.grad_norm = stats.grad_norm.detach()
        self.steps += 1
        self.tokens += sum(b.num_tokens for b in micro_batches) * world_size

    def read(self, context: distributed.ProcessContext) -> float | None:
        """The summed loss, the same on every process (one all-reduce); None when it or the
        gradient norm is not finite."""
        loss_sum, norm = distributed.all_reduce_sum(
            torch.stack([self.loss.detach(), self.grad_norm.detach().to(self.loss.dtype)]), context).tolist()
        return loss_sum if math.isfinite(loss_sum) and math.isfinite(norm) else None


def _log_training(run: Run, progress: Progress, window: LossWindow, loss_sum: float, logger: Logger) -> float:
    """Record the window's mean loss and throughput, start a new window; return tokens per second."""
    tps = window.tokens / max(time.perf_counter() - window.start, 1e-9)
    train_loss = loss_sum / window.steps
    logger.record("train", progress.step, {"loss": train_loss, "lr": run.setup.scheduler.get_last_lr()[0],
                                           "grad_norm": float(window.grad_norm), "tokens_per_second": tps,
                                           "tokens_seen": progress.tokens_seen})
    logger.show(loss=f"{train_loss:.3f}", tok_s=f"{tps:,.0f}")
    window.reset(progress.step)
    return tps


def _evaluate(run: Run, progress: Progress, logger: Logger) -> None:
    """Score every evaluation set; each one's metrics become ``progress.last[kind]``."""
    for kind, batches in run.evaluations.items():
        metrics = evaluate(run.setup.wrapped, batches, run.device, run.autocast, run.unigram_logp, run.context)
        progress.last[kind] = metrics
        logger.record(kind, progress.step, metrics)
        logger.note(_evaluation_line(progress.step, kind, metrics))


def _evaluation_line(step: int, kind: str, m: dict[str, float]) -> str:
    if kind == VALID:
        return (f"step {step}: valid loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f}), "
                f"accuracy {m['accuracy']:.3f}, perplexity {m['perplexity']:.1f}")
    return f"step {step}: {kind.removeprefix('eval_')} loss {m['loss']:.4f} (unigram {m['unigram_loss']:.4f})"


def _finish(run: Run, progress: Progress, result: dict[str, Any], logger: Logger) -> dict[str, Any]:
    """The final checkpoint, exported model and test score of a completed run; the summary either way."""
    result.update(step=progress.step, tokens_seen=progress.tokens_seen, parameters=run.parameters,
                  out_dir=str(run.out_dir))
    for kind, metrics in progress.last.items():
        result.update({f"{kind}_{k}": v for k, v in metrics.items()})
    if result["status"] == "completed":
        run.exporter.checkpoint(progress.step, progress.tokens_seen, run.stream, progress.last_valid)
        run.exporter.export_model(run.out_dir / "model")
        if run.config.test_eval:
            test = evaluate(run.setup.wrapped, run.test_batches(), run.device, run.autocast, run.unigram_logp,
                            run.context)
            logger.record("test", progress.step, test)
            result.update({f"test_{k}": v for k, v in test.items()})
    else:
        logger.info(f"run diverged: {result['reason']}")
    logger.finish(progress.step, result)
    return result
