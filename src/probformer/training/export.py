"""A run's files: resumable checkpoints and the exported model, written by rank 0 from full weights.

Every process takes part (FSDP gathers its shards); only rank 0 writes. The exported model is one
safetensors file with the architecture's tokenizer files (models/registry.py), so it loads with
``from_pretrained`` and transformers' Auto classes however the run was sharded. Its tokenizer.json is
the one the run trained with (the bytes read when the corpus was opened, checked by sha256), not
whatever the corpus cache holds by the end of the run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from probformer.config import TrainConfig
from probformer.data.batches import TrainStream
from probformer.models import architecture
from probformer.training import distributed
from probformer.training.build import TrainingSetup
from probformer.training.checkpoint import (
    TOKENIZER_FILE,
    CheckpointError,
    check_model_state,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class RunExporter:
    def __init__(self, out_dir: Path, setup: TrainingSetup, context: distributed.ProcessContext, config: TrainConfig,
                 data):
        """``data``: the run's data (training/run.py's RunData): the tokenizer it trains with."""
        self.out_dir, self.setup, self.context, self.config, self.data = out_dir, setup, context, config, data

    def _gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, by rank, on rank 0 (elsewhere: None)."""
        if not self.context.distributed:
            return [value]
        import torch.distributed as dist

        values = [None] * self.context.world_size if self.context.is_main else None
        dist.gather_object(value, values, dst=0)
        return values  # type: ignore[return-value]

    def checkpoint(self, step: int, tokens_seen: int, stream: TrainStream, last_valid: dict | None,
                   loss_window, best: dict | None = None) -> None:
        """A checkpoint of ``step``; ``loss_window`` (the trainer's open LossWindow, or None) is saved with
        each process's partial sum; ``best``: a task run's exported best-on-valid model (its step, metrics)."""
        s, context = self.setup, self.context
        model_state = distributed.full_model_state(s.wrapped, context)
        optimizer_state = distributed.optimizer_state(s.wrapped, s.optimizer, context)
        rng_states = self._gather(rng_state())
        losses = self._gather(loss_window.local_loss()) if loss_window is not None else None
        if context.is_main:
            trainer_state = {"step": step, "tokens_seen": tokens_seen, "data": stream.state_dict(),
                             "last_valid": last_valid, "tokenizer_sha256": self.data.tokenizer_sha256}
            if best is not None:
                trainer_state["best"] = best
            if loss_window is not None:
                trainer_state["loss_window"] = {**loss_window.state(), "loss_by_rank": losses}
            save_checkpoint(self.out_dir, s.model, model_state, optimizer_state, s.scheduler.state_dict(), rng_states,
                            trainer_state, self.config.to_dict(), self.data.tokenizer_json)
        distributed.barrier(context)

    def export_model(self, directory: Path) -> None:
        model_state = distributed.full_model_state(self.setup.wrapped, self.context)
        if self.context.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            tokenizer = directory / TOKENIZER_FILE
            tokenizer.write_bytes(self.data.tokenizer_json)  # the registry keeps a tokenizer already in place
            if hashlib.sha256(tokenizer.read_bytes()).hexdigest() != self.data.tokenizer_sha256:
                raise CheckpointError(f"{tokenizer} does not read back as the run's tokenizer (sha256 "
                                      f"{self.data.tokenizer_sha256[:12]}...); check the disk and export again")
            # (A sentence task's export then adds the [CLS] prefix to it, for BERT and UT: models/registry.py.)
            architecture(self.config.model["arch"]).export(self.setup.model, directory, tokenizer,
                                                           state_dict=model_state)
        distributed.barrier(self.context)

    def load_model(self, directory: Path) -> None:
        """Load the weights of an exported model directory (a task run's best-on-valid ``model/``)
        back into the run's model, on every process."""
        from safetensors.torch import load_file

        file = directory / "model.safetensors"
        try:
            state = load_file(str(file))
        except Exception as err:
            raise CheckpointError(f"{file} does not load ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                                  ) from None
        missing, unexpected = distributed.load_model_state(self.setup.wrapped, state, self.context)
        check_model_state(directory, self.setup.model, state.keys(), missing, unexpected)

    def restore(self, path: Path) -> dict:
        """Load weights, optimizer, schedule and this rank's RNG state; return the trainer state."""
        s, context = self.setup, self.context
        contents = read_checkpoint(path, context.rank)
        try:
            missing, unexpected = distributed.load_model_state(s.wrapped, contents.model_state, context)
        except Exception as err:
            raise CheckpointError(f"checkpoint {path / 'model.safetensors'} does not match the model: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
        check_model_state(path, s.model, contents.model_state.keys(), missing, unexpected)
        try:
            distributed.load_optimizer_state(s.wrapped, s.optimizer, contents.optimizer, context)
            s.scheduler.load_state_dict(contents.scheduler)
        except Exception as err:
            raise CheckpointError(f"checkpoint {path / 'optimizer.pt'} does not match this run: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
        try:
            set_rng_state(contents.rng)
        except Exception as err:
            raise CheckpointError(f"checkpoint file {path / 'rng.pt'} is corrupt: its RNG states do not load "
                                  f"({type(err).__name__})") from None
        return contents.trainer_state
