"""A :class:`Run`: everything the training loop reads, built once before its first step.

The run's data (:class:`RunData`: the masked LM's corpus, training/mlm_data.py, or a task's labelled
files, training/task_data.py) says what is trained and how it is scored; the model side (model,
parallelized objective, optimizer groups, schedule) comes from build.py; the exporter writes
checkpoints and the model. The order of construction is the order of RNG use, so it must not
change: the model's initial weights are drawn first, from ``config.seed``, on every process alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel

from probformer.config import ConfigError, TrainConfig
from probformer.data.batches import RankBatch
from probformer.training import distributed
from probformer.training.build import TrainingSetup, build_training, reapply_group_hyperparameters
from probformer.training.checkpoint import CheckpointError
from probformer.training.device import autocast_for, resolve_device, uses_bf16
from probformer.training.export import RunExporter
from probformer.training.mlm_data import VALID, MaskedLMData, open_source

__all__ = ["VALID", "Progress", "Run", "RunData", "build_run", "resume_from"]


class TrainingStream(Protocol):
    """This process's micro-batches (each with its global batch's real-token count), resumable."""

    def next(self) -> RankBatch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def close(self) -> None: ...


class RunData(Protocol):
    """What a run trains on and how it is scored: the seam between the trainer and a kind of run."""

    task: str  # fill-mask, token-classification, text-classification
    select_by: str | None  # the valid metric whose best value picks the exported model; None: the final one
    tokenizer_json: bytes
    tokenizer_sha256: str
    train_tokens: int
    train_unigram_loss: float  # the context-free baseline of a training target (divergence.py)

    def total_steps(self) -> int: ...
    def batch_shape(self) -> str: ...
    def make_model(self, log: Callable[[str], None]) -> PreTrainedModel: ...
    def objective(self, model: nn.Module) -> nn.Module: ...
    def stream(self, context: distributed.ProcessContext) -> TrainingStream: ...
    def evaluation_sets(self) -> dict[str, Any]: ...
    def test_set(self) -> Any | None: ...
    def evaluate(self, wrapped: nn.Module, eval_set: Any, device: torch.device,
                 autocast: Callable[[], AbstractContextManager], context: distributed.ProcessContext
                 ) -> dict[str, float]: ...
    def evaluation_line(self, step: int, kind: str, metrics: dict[str, float]) -> str: ...


@dataclass
class Run:
    """What every step reads; built once by :func:`build_run`, then changed only by training."""

    config: TrainConfig
    context: distributed.ProcessContext
    device: torch.device
    bf16: bool
    autocast: Callable[[], AbstractContextManager]
    data: RunData
    total_steps: int
    setup: TrainingSetup  # model, wrapped objective, optimizer with its groups, schedule
    stream: TrainingStream
    evaluations: dict[str, Any]  # metrics kind -> evaluation set, scored at every evaluation
    exporter: RunExporter

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def train_unigram_loss(self) -> float:
        return self.data.train_unigram_loss

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.setup.model.parameters())  # FSDP2's DTensor shards report the full numel

    def evaluate(self, eval_set: Any) -> dict[str, float]:
        return self.data.evaluate(self.setup.wrapped, eval_set, self.device, self.autocast, self.context)

    def info(self) -> dict[str, Any]:
        """The first metrics record of a fresh run."""
        return {"parameters": self.parameters, "total_steps": self.total_steps, "device": str(self.device),
                "train_tokens": self.data.train_tokens, "bf16": self.bf16, "task": self.data.task,
                "processes": self.context.world_size, "distributed": self.context.mode}

    def describe(self) -> str:
        """One line: architecture, size, parametrization, steps and where they run."""
        c, context = self.config, self.context
        what = "" if self.data.task == "fill-mask" else f" {self.data.task}"
        return (f"{c.model['arch']}{what} model: {self.parameters:,} parameters, "
                f"{self.setup.model.config.parametrization}; {self.total_steps} steps of {self.data.batch_shape()} "
                f"on {self.device}"
                + (f" x {context.world_size} processes ({context.mode})" if context.distributed else ""))


@dataclass
class Progress:
    """Where the loop stands; a checkpoint saves it (with ``last_valid``) beside the modules' states."""

    step: int = 0
    tokens_seen: int = 0
    last: dict[str, dict[str, float]] = field(default_factory=dict)  # metrics kind -> its latest evaluation
    loss_window: dict[str, Any] | None = None  # the training-loss window a checkpoint saved (trainer.LossWindow)
    best: dict[str, Any] | None = None  # a task run: the step and valid metrics of the exported model

    @property
    def last_valid(self) -> dict[str, float] | None:
        return self.last.get(VALID)


def run_data(config: TrainConfig, context: distributed.ProcessContext, log: Callable[[str], None],
             tokenizer_json: bytes | None) -> RunData:
    """The masked LM's tokens (a prepared directory every rank opens, or the cache rank 0 builds first:
    mlm_data.py's open_source) or the task's files."""
    if config.task.is_mlm:
        return MaskedLMData(config, open_source(config, context, log, tokenizer_json), context, log)
    from probformer.training.task_data import TaskData

    return TaskData(config, log, tokenizer_json)


def build_run(config: TrainConfig, context: distributed.ProcessContext, log: Callable[[str], None],
              tokenizer_json: bytes | None = None) -> Run:
    """Device, data, model side, training stream, evaluation sets, exporter.

    ``tokenizer_json``: the tokenizer to train with (a resumed checkpoint's); default: the data's own."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, context.local_rank if context.distributed else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bf16 = uses_bf16(config.precision, device)
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} sequences do not split over {context.world_size} "
                          f"processes; make it a multiple of {context.world_size}")
    data = run_data(config, context, log, tokenizer_json)
    total_steps = data.total_steps()
    setup = build_training(config, context, device, data, total_steps, log)
    evaluations = data.evaluation_sets()
    return Run(config, context, device, bf16, autocast_for(device, bf16), data, total_steps, setup,
               data.stream(context), evaluations, RunExporter(Path(config.out_dir), setup, context, config, data))


def resume_from(run: Run, checkpoint: Path, log: Callable[[str], None]) -> Progress:
    """Load ``checkpoint`` into the run (weights, optimizer, schedule, RNG, data position, loss window)."""
    state = run.exporter.restore(checkpoint)
    if state.get("tokenizer_sha256") != run.data.tokenizer_sha256:
        # Only a checkpoint of an older version, which holds no copy of its tokenizer, can get here (the
        # run is built on the checkpoint's own tokenizer otherwise): the model would read other ids.
        raise CheckpointError(f"checkpoint {checkpoint} was trained with a different tokenizer than the corpus cache "
                              "now holds, and holds no copy of it; point data.cache_dir at the original cache")
    reapply_group_hyperparameters(run.setup)
    try:
        progress = Progress(int(state["step"]), int(state["tokens_seen"]), loss_window=state.get("loss_window"),
                            best=state.get("best"))
        if state.get("last_valid") is not None:
            progress.last[VALID] = state["last_valid"]
        run.stream.load_state_dict(state["data"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {checkpoint / 'trainer_state.json'} is corrupt "
                              f"({type(err).__name__}: {err})") from None
    log(f"resumed from {checkpoint} at step {progress.step}")
    return progress
