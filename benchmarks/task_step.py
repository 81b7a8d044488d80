"""A task training step against an MLM step of the same tokens (issue 23: "a task step costs no more
than an MLM step of the same tokens, padding aside"). Not part of CI.

For each architecture (the default PT model, and BERT at PT's size from results/tasks/run.sh): time
one optimizer step (forward, backward, AdamW through the trainer's own objective and optimizer
groups) of the masked LM on a batch of B x n masked blocks, and of the token and text classifiers on
B x n unpadded rows of the same token ids; report median seconds per step, tokens/s and the ratio
task / MLM. The classifiers read out C labels instead of the vocabulary, so a task step should cost
less: the MLM read-out (N x V on the masked positions) is replaced by an N x C one.

    python benchmarks/task_step.py                       # CPU, torch's default threads
    python benchmarks/task_step.py --threads 1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from probformer.data.masking import mask_tokens
from probformer.data.tokenization import MASK_ID, PAD_ID
from probformer.models import architecture
from probformer.parametrization import build_optimizer
from probformer.training.objective import TrainingObjective

RESULTS = Path(__file__).with_name("results")
VOCAB = 4096
MODELS = {
    "pt": {},  # the default PT (hidden 128, 4 channels, rank 32, latent 256, 3 iterations)
    "bert": {"hidden_size": 96, "num_heads": 3, "num_layers": 4, "intermediate_size": 341,
             "max_position_embeddings": 128},
}
NUM_LABELS = {"token-classification": 17, "text-classification": 2}


def build(arch: str, task: str):
    entry = architecture(arch)
    fields = {"vocab_size": VOCAB, "pad_token_id": PAD_ID, "mask_token_id": MASK_ID, **MODELS[arch]}
    if task != "fill-mask":
        fields["num_labels"] = NUM_LABELS[task]
        fields.update(entry.task_model_defaults.get(task, {}))
    torch.manual_seed(0)
    return entry.task_class(task)(entry.config_class(**fields))


def batch_for(task: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones_like(ids)
    if task == "fill-mask":
        inputs, labels = mask_tokens(ids, "bert", 0.15, VOCAB, generator)
        return inputs, mask, labels
    if task == "token-classification":  # a label on ~3 of 4 pieces (words' first pieces), -100 elsewhere
        labels = torch.randint(0, NUM_LABELS[task], ids.shape, generator=generator)
        labels[torch.rand(ids.shape, generator=generator) < 0.25] = -100
        return ids, mask, labels
    return ids, mask, torch.randint(0, NUM_LABELS[task], (ids.shape[0],), generator=generator)


def time_steps(arch: str, task: str, ids: torch.Tensor, steps: int, warmup: int) -> list[float]:
    model = build(arch, task).train()
    objective = TrainingObjective(model, scored_logits_only=task == "fill-mask")
    optimizer = build_optimizer(objective, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8,
                                scales=model.config.scales())
    inputs, mask, labels = batch_for(task, ids)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = objective(inputs, mask, labels)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = torch.randint(5, VOCAB, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))
    tokens = ids.numel()
    results = []
    for arch in MODELS:
        row = {"arch": arch}
        for task in ("fill-mask", "token-classification", "text-classification"):
            seconds = statistics.median(time_steps(arch, task, ids, args.steps, args.warmup))
            row[task] = {"seconds_per_step": seconds, "tokens_per_second": tokens / seconds}
            print(f"{arch:5} {task:21} {seconds * 1e3:8.1f} ms/step {tokens / seconds:10,.0f} tokens/s", flush=True)
        for task in ("token-classification", "text-classification"):
            row[f"{task}_vs_mlm"] = row[task]["seconds_per_step"] / row["fill-mask"]["seconds_per_step"]
            print(f"{arch:5} {task} / MLM step time: {row[f'{task}_vs_mlm']:.3f}")
        results.append(row)
    record = {"benchmark": "task_step", "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "steps": args.steps, "results": results}
    out = args.out or RESULTS / f"task-step-{platform.machine()}-{torch.get_num_threads()}t.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
