"""A run's files: resumable checkpoints and the exported model, written by rank 0 from full weights.

Every process takes part (FSDP gathers its shards); only rank 0 writes. The exported model is one
safetensors file with the architecture's tokenizer files (models/registry.py), so it loads with
``from_pretrained`` and transformers' Auto classes however the run was sharded.
"""

from __future__ import annotations

from pathlib import Path

from probformer.config import TrainConfig
from probformer.data.batches import TrainStream
from probformer.data.prepared import PreparedCorpus
from probformer.models import architecture
from probformer.training import distributed
from probformer.training.build import TrainingSetup
from probformer.training.checkpoint import (
    CheckpointError,
    check_model_state,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class RunExporter:
    def __init__(self, out_dir: Path, setup: TrainingSetup, context: distributed.ProcessContext, config: TrainConfig,
                 corpus: PreparedCorpus):
        self.out_dir, self.setup, self.context, self.config, self.corpus = out_dir, setup, context, config, corpus

    def _gather_rng_states(self) -> list[dict]:
        state = rng_state()
        if not self.context.distributed:
            return [state]
        import torch.distributed as dist

        states = [None] * self.context.world_size if self.context.is_main else None
        dist.gather_object(state, states, dst=0)
        return states  # type: ignore[return-value]

    def checkpoint(self, step: int, tokens_seen: int, stream: TrainStream, last_valid: dict | None) -> None:
        s, context = self.setup, self.context
        model_state = distributed.full_model_state(s.wrapped, context)
        optimizer_state = distributed.optimizer_state(s.wrapped, s.optimizer, context)
        rng_states = self._gather_rng_states()
        if context.is_main:
            save_checkpoint(self.out_dir, s.model, model_state, optimizer_state, s.scheduler.state_dict(), rng_states,
                            {"step": step, "tokens_seen": tokens_seen, "data": stream.state_dict(),
                             "last_valid": last_valid, "tokenizer_sha256": self.corpus.tokenizer_sha256},
                            self.config.to_dict())
        distributed.barrier(context)

    def export_model(self, directory: Path) -> None:
        model_state = distributed.full_model_state(self.setup.wrapped, self.context)
        if self.context.is_main:
            architecture(self.config.model["arch"]).export(self.setup.model, directory,
                                                           self.corpus.root / "tokenizer.json", state_dict=model_state)
        distributed.barrier(self.context)

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
        set_rng_state(contents.rng)
        return contents.trainer_state
