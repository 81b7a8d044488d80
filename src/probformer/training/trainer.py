"""The training loop: ``train(config) -> metrics``, callable in-process (sweeps) or from the CLI,
and under ``torchrun`` (one process per device, DDP or FSDP2; training/distributed.py).

It reads top to bottom: take the run directory (rundir.py: its lock, and what may be done with what
it holds), build the :class:`~probformer.training.run.Run` once (run.py: model, optimizer groups,
data, evaluation sets, exporter), resume it if asked, step until done, then export. Every process
runs the same code; what only rank 0 does (print, write metrics and files) is behind the logger
(logger.py), a no-op on the other ranks. One optimizer step is step.py's.

A diverged run (divergence.py: a NaN or inf loss or gradient norm, or a loss far above the unigram
baseline) ends with ``status = "diverged"`` and the reason in the returned and logged metrics; losses
are read to the host only at log, evaluation and checkpoint steps, so that is when it is seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers.utils import logging as transformers_logging

from probformer.config import ConfigError, TrainConfig
from probformer.data.errors import DataError
from probformer.training import distributed
from probformer.training.build import corpus_for, group_table
from probformer.training.checkpoint import CheckpointError, read_json, read_tokenizer
from probformer.training.config_changes import check_resume
from probformer.training.device import describe_precision, resolve_device
from probformer.training.divergence import divergence
from probformer.training.logger import Logger, logger_for
from probformer.training.run import Progress, Run, build_run, resume_from
from probformer.training.rundir import open_run_dir, run_dir_lock
from probformer.training.step import StepStats, optimizer_step

__all__ = ["corpus_for", "train"]

EvalCallback = Callable[[int, dict[str, float]], None]
T = TypeVar("T")

transformers_logging.disable_progress_bar()  # save_pretrained's per-shard bars would drown ours


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, on_eval: EvalCallback | None = None,
          log=print) -> dict[str, Any]:
    """Train, evaluate and save; return the final metrics (``status``: completed or diverged).

    ``config.out_dir`` must be empty unless ``resume`` (continue its checkpoint) or ``overwrite``
    (clear it first); one train at a time holds it (rundir.py). ``on_eval(step, valid_metrics)`` is
    called after each evaluation; it may raise to stop the run (a sweep's pruner does this). Under
    torchrun every process calls this; rank 0 logs and writes.
    """
    device = resolve_device(config.device)
    context = distributed.start(config.distributed, device.type)
    try:
        if context.distributed and device.type == "cuda":  # before any collective: NCCL works on the current device
            torch.cuda.set_device(resolve_device(config.device, context.local_rank))
        return _train(config, context, resume, overwrite, on_eval, log)
    finally:
        distributed.stop(context)


@dataclass
class Start:
    """How a train begins, decided by rank 0 holding the run directory's lock."""

    checkpoint: Path | None = None  # to resume from; None: from scratch
    finished: dict[str, Any] | None = None  # the summary of a run that has nothing left to do
    notes: list[str] = field(default_factory=list)  # allowed config changes since the checkpoint


def _train(config: TrainConfig, context: distributed.ProcessContext, resume: bool, overwrite: bool,
           on_eval: EvalCallback | None, log) -> dict[str, Any]:
    out_dir = Path(config.out_dir)
    with ExitStack() as held:  # rank 0 holds the run directory's lock until the run ends, however it ends
        def start() -> Start:
            held.enter_context(run_dir_lock(out_dir))
            return _start(config, resume, overwrite, log)

        begin = _decided_by_rank_0(context, start)
        if begin.finished is not None:
            return begin.finished
        tokenizer = read_tokenizer(begin.checkpoint) if begin.checkpoint is not None else None
        logger = logger_for(context, out_dir, log)
        for note in begin.notes:
            logger.info(f"--resume: {note}")
        run = build_run(config, context, logger.info, tokenizer)
        held.callback(run.stream.close)  # a prefetching stream's thread stops with the run, however it ends
        if begin.checkpoint is not None and config.total_steps is None:  # counted by the data: known only now
            finished = _decided_by_rank_0(context, lambda: _finished_or_past(out_dir, begin.checkpoint,
                                                                             run.total_steps, log))
            if finished is not None:
                return finished
        progress = resume_from(run, begin.checkpoint, logger.info) if begin.checkpoint is not None else Progress()
        logger.open(config, progress.step if begin.checkpoint is not None else None)
        if begin.checkpoint is None:
            logger.record("info", 0, run.info())
        logger.info(run.describe())
        logger.info(describe_precision(config.precision, run.device))
        logger.info(group_table(run.setup.optimizer))
        result = _loop(run, progress, logger, on_eval)
        return _finish(run, progress, result, logger)


def _decided_by_rank_0(context: distributed.ProcessContext, decide: Callable[[], T]) -> T:
    """Rank 0's ``decide()``, on every rank. An error it raises is raised on every rank: the others
    would otherwise wait for rank 0 at their next collective until the timeout."""
    if not context.distributed:
        return decide()
    outcome: tuple = ("error", ConfigError, "rank 0 did not decide")
    if context.is_main:
        try:
            outcome = ("value", decide())
        except (ConfigError, CheckpointError, DataError) as err:
            outcome = ("error", type(err), str(err))
    outcome = distributed.broadcast_object(outcome, context)
    if outcome[0] == "error":
        raise outcome[1](outcome[2])
    return outcome[1]


def _start(config: TrainConfig, resume: bool, overwrite: bool, log) -> Start:
    """Ready the run directory; for a resume, check the config against the checkpoint's (config_changes.py)."""
    out_dir = Path(config.out_dir)
    checkpoint = open_run_dir(out_dir, resume=resume, overwrite=overwrite, log=log)
    if checkpoint is None:
        return Start()
    refused, allowed = check_resume(read_json(checkpoint / "train_config.json"), config.to_dict())
    if refused:
        raise ConfigError(f"--resume: {checkpoint} was trained with another configuration, and a resumed run "
                          f"cannot change {'; '.join(refused)}. Resume with the checkpoint's values "
                          "(its train_config.json), or train into another --out-dir")
    if config.total_steps is not None:  # else the data counts them: checked once the run is built
        finished = _finished_or_past(out_dir, checkpoint, config.total_steps, log)
        if finished is not None:
            return Start(checkpoint, finished)
    return Start(checkpoint, None, allowed)


def _finished_or_past(out_dir: Path, checkpoint: Path, total_steps: int, log) -> dict[str, Any] | None:
    """The summary of the finished run ``checkpoint`` ends, if it does; a ConfigError if it is past
    ``total_steps``; None if it has steps left (its old summary.json is then removed: the run goes on,
    so how it ended before is no longer how it ends)."""
    step = int(read_json(checkpoint / "trainer_state.json").get("step", 0))
    if step > total_steps:
        raise ConfigError(f"--resume: {checkpoint} is at step {step}, past the {total_steps} steps this "
                          "config trains; raise steps (or token_budget, or task.epochs) to continue it")
    finished = _read_summary(out_dir / "summary.json")
    if step == total_steps and finished is not None and finished.get("status") == "completed":
        log(f"{out_dir} holds a finished run (completed at step {step}): nothing to resume; raise steps "
            "(or token_budget, or task.epochs) to train it further")
        return finished
    (out_dir / "summary.json").unlink(missing_ok=True)
    return None


def _read_summary(path: Path) -> dict[str, Any] | None:
    """A run's summary.json, or None if it has none or it is torn (the run is then not finished)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _loop(run: Run, progress: Progress, logger: Logger, on_eval: EvalCallback | None) -> dict[str, Any]:
    """Optimizer steps until ``total_steps`` or divergence; logs, evaluates, checkpoints on schedule."""
    config, context, s = run.config, run.context, run.setup
    result: dict[str, Any] = {"status": "completed"}
    logger.begin(run.total_steps, progress.step, config.progress)
    window = LossWindow(run.device, progress.step)
    if progress.loss_window is not None:
        window.restore(progress.loss_window, context)
    try:
        while progress.step < run.total_steps:
            micro_batches = [run.stream.next() for _ in range(config.grad_accum)]  # this process's rows
            step_tokens = sum(b.global_num_tokens for b in micro_batches)  # real tokens of every process (no padding)
            stats = optimizer_step(s.wrapped, s.optimizer, s.scheduler, micro_batches, context, run.device,
                                   run.autocast, config.optim.grad_clip)
            progress.step += 1
            progress.tokens_seen += step_tokens
            window.add(stats, step_tokens)
            logger.advance()
            step = progress.step
            evaluating = step % config.eval_interval == 0 or step == run.total_steps
            checkpointing = (bool(config.checkpoint_interval) and step % config.checkpoint_interval == 0
                             and step < run.total_steps)
            logging = step % config.log_interval == 0 or step == run.total_steps
            if logging or evaluating or checkpointing:
                loss_sum = window.read(context)
                reason = _training_divergence(run, window, loss_sum, step)
                if reason is not None:
                    result = diverged(reason)
                    break
            if logging:
                result["tokens_per_second"] = _log_training(run, progress, window, loss_sum, logger)
            if evaluating:
                _evaluate(run, progress, logger)
                valid = progress.last_valid
                reason = divergence(valid["loss"], valid["unigram_loss"], "validation loss", step)
                if reason is not None:
                    result = diverged(reason)
                    break
                _keep_best(run, progress, logger)
                if on_eval is not None:
                    on_eval(step, progress.last_valid)
            if checkpointing:
                run.exporter.checkpoint(step, progress.tokens_seen, run.stream, progress.last_valid, window,
                                        progress.best)
            if config.snapshot_interval and step % config.snapshot_interval == 0 and step < run.total_steps:
                # Models along one run (e.g. to watch its trees form, `probformer parse-eval` per snapshot).
                run.exporter.export_model(run.out_dir / "snapshots" / f"step-{step:06d}")
    finally:
        logger.end()
    return result


def diverged(reason: str) -> dict[str, Any]:
    return {"status": "diverged", "reason": reason}


def _training_divergence(run: Run, window: LossWindow, loss_sum: float | None, step: int) -> str | None:
    """Why the window's training loss means the run has diverged (divergence.py), or None."""
    if loss_sum is None:
        return f"non-finite training loss or gradient norm in steps {window.first_step}..{step}"
    mean = window.mean(loss_sum)
    if mean is None:  # no step of the window scored a token
        return None
    return divergence(mean, run.train_unigram_loss, f"training loss (mean of steps {window.first_step}..{step})",
                      step)


class LossWindow:
    """The training loss summed on the device since the last log line, read to the host only when
    needed (a read per step would stall the GPU's queue), with the last step's gradient norm.

    A checkpoint saves it (:meth:`state`, each process's sum), so that a resumed run logs the same
    training losses as an uninterrupted one even when it resumes between two log steps."""

    def __init__(self, device: torch.device, step: int):
        self.device = device
        self.grad_norm = torch.zeros((), device=device)
        self.reset(step)

    def reset(self, step: int) -> None:
        self.start, self.tokens, self.first_step = time.perf_counter(), 0, step + 1
        self.scored_steps: float | torch.Tensor = 0.0  # steps that scored any token (the mean's divisor)
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)  # float64: sums as exactly as Python's

    def add(self, stats: StepStats, tokens: int) -> None:
        """One step's statistics and its real (unpadded) tokens over every process."""
        self.loss = self.loss + stats.loss.detach()
        self.grad_norm = stats.grad_norm.detach()
        self.scored_steps = self.scored_steps + stats.scored
        self.tokens += tokens

    def read(self, context: distributed.ProcessContext) -> float | None:
        """The summed loss, the same on every process (one all-reduce); None when it or the
        gradient norm is not finite."""
        loss_sum, norm = distributed.all_reduce_sum(
            torch.stack([self.loss.detach(), self.grad_norm.detach().to(self.loss.dtype)]), context).tolist()
        return loss_sum if math.isfinite(loss_sum) and math.isfinite(norm) else None

    def mean(self, loss_sum: float) -> float | None:
        """The mean training loss of the window's steps that scored a token (None: none did)."""
        scored = float(self.scored_steps)
        return loss_sum / scored if scored else None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (with each process's :meth:`local_loss`); not the time and tokens
        of the throughput, which a resumed run measures afresh."""
        return {"first_step": self.first_step, "scored_steps": float(self.scored_steps)}

    def local_loss(self) -> float:
        return float(self.loss)

    def restore(self, state: dict[str, Any], context: distributed.ProcessContext) -> None:
        """Continue the window a checkpoint saved. With another number of processes than it was saved
        by, rank 0 takes the whole sum (the logged mean is then equal up to float rounding)."""
        losses = [float(x) for x in state.get("loss_by_rank", [])]
        if len(losses) == context.world_size:
            mine = losses[context.rank]
        else:
            mine = sum(losses) if context.is_main else 0.0
        self.loss = torch.tensor(mine, dtype=torch.float64, device=self.device)
        self.first_step = int(state["first_step"])
        self.scored_steps = float(state["scored_steps"])


def _log_training(run: Run, progress: Progress, window: LossWindow, loss_sum: float, logger: Logger) -> float:
    """Record the window's mean loss and throughput, start a new window; return tokens per second."""
    tps = window.tokens / max(time.perf_counter() - window.start, 1e-9)
    train_loss = window.mean(loss_sum)
    logger.record("train", progress.step, {"loss": train_loss, "lr": run.setup.scheduler.get_last_lr()[0],
                                           "grad_norm": float(window.grad_norm), "tokens_per_second": tps,
                                           "tokens_seen": progress.tokens_seen})
    logger.show(loss="-" if train_loss is None else f"{train_loss:.3f}", tok_s=f"{tps:,.0f}")
    window.reset(progress.step)
    return tps


def _evaluate(run: Run, progress: Progress, logger: Logger) -> None:
    """Score every evaluation set; each one's metrics become ``progress.last[kind]``."""
    for kind, eval_set in run.evaluations.items():
        metrics = run.evaluate(eval_set)
        progress.last[kind] = metrics
        logger.record(kind, progress.step, {**metrics, "tokens_seen": progress.tokens_seen})
        logger.note(run.data.evaluation_line(progress.step, kind, metrics))


def better(metric: str, value: float, than: float) -> bool:
    """Whether ``value`` of ``metric`` beats ``than``: losses fall, every other metric rises."""
    return value < than if metric.endswith("loss") else value > than


def _keep_best(run: Run, progress: Progress, logger: Logger) -> None:
    """A task run (the 2023 protocol): export the model to ``model/`` whenever its valid score beats
    every earlier evaluation's; the run's result is that model, not the last one."""
    metric = run.data.select_by
    if metric is None:
        return
    valid = progress.last_valid
    if metric not in valid:
        raise ConfigError(f"task.select_by: the valid metrics have no {metric!r}; they are {', '.join(valid)}")
    if progress.best is not None and not better(metric, valid[metric], progress.best["valid"][metric]):
        return
    run.exporter.export_model(run.out_dir / "model")
    progress.best = {"step": progress.step, "metric": metric, "valid": dict(valid)}
    logger.note(f"step {progress.step}: best valid {metric} so far ({valid[metric]:.4f}): model/ exported")


def _finish(run: Run, progress: Progress, result: dict[str, Any], logger: Logger) -> dict[str, Any]:
    """The final checkpoint, exported model and test score of a completed run; the summary either way."""
    result.update(task=run.data.task, step=progress.step, tokens_seen=progress.tokens_seen,
                  parameters=run.parameters, out_dir=str(run.out_dir))
    for kind, metrics in progress.last.items():
        result.update({f"{kind}_{k}": v for k, v in metrics.items()})
    if progress.best is not None:
        result.update(best_step=progress.best["step"], select_by=run.data.select_by,
                      **{f"best_valid_{k}": v for k, v in progress.best["valid"].items()})
    if result["status"] == "completed":
        run.exporter.checkpoint(progress.step, progress.tokens_seen, run.stream, progress.last_valid, None,
                                progress.best)
        if run.data.select_by is None:
            run.exporter.export_model(run.out_dir / "model")
        test_set = run.data.test_set()
        if test_set is not None:
            if run.data.select_by is not None:  # score the exported best-on-valid model, not the last one
                run.exporter.load_model(run.out_dir / "model")
            test = run.evaluate(test_set)
            logger.record("test", progress.step, test)
            result.update({f"test_{k}": v for k, v in test.items()})
    else:
        logger.info(f"run diverged: {result['reason']}")
    logger.finish(progress.step, result)
    return result
