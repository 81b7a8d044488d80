"""Two gloo processes under torchrun train exactly like one process with the same global batch.

The MLM loss is normalised by the global number of scored tokens, each process takes its rows of
the global micro-batch by sample index, and the optimizer is built by parameter name after wrapping
with muP's per-group lr / eps: so after a few AdamW steps the weights must equal a one-process
run's (to float32 reduction-order noise). A two-process run stopped and resumed from its checkpoint
must equal an uninterrupted one, its logged training losses included. The same holds on a directory
written by `probformer prepare-data` with sentence rows (the shard loader: each process reads only its
padded rows). Dropout is off so that per-process dropout streams do not matter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from probformer.config import load_config
from probformer.training.build import corpus_for, init_bias_from_unigram, model_from_config
from probformer.training.metrics_log import read_metrics
from probformer.training.trainer import train

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.slow


def run_config(tmp_path: Path, name: str, corpus: Path, cache: Path, **overrides) -> Path:
    values = {
        "model": {"arch": "pt", "hidden_size": 32, "num_channels": 2, "rank": 8, "latent_size": 32,
                  "num_iterations": 2, "max_distance": 3, "head_dropout": 0.0, "label_dropout": 0.0,
                  "parametrization": "mup", "base_hidden_size": 16, "init_std_output": 0.1},
        "data": {"source": str(corpus), "vocab_size": 512, "seq_len": 32, "cache_dir": str(cache)},
        # Adam divides by sqrt(v) + eps: at the default eps a weight whose gradient is ~0 moves by up to
        # lr on float32 reduction noise alone, so the two runs would differ there by chance. eps 1e-4
        # keeps the update proportional to the gradient where it is noise, and AdamW's elsewhere.
        "optim": {"lr": 1e-2, "warmup_fraction": 0.0, "eps": 1e-4},
        "batch_size": 8, "grad_accum": 2, "steps": 3, "eval_interval": 3, "eval_batches": 2,
        "checkpoint_interval": 0, "log_interval": 1, "out_dir": str(tmp_path / name),
        "progress": False, "tensorboard": False, "test_eval": False, "threads": 1,
        "precision": "fp32",  # exactness across process counts is checked to fp32 rounding
    }
    for key, value in overrides.items():
        values[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *args], capture_output=True, text=True, timeout=600, env=env, check=False)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def corpus_and_cache(synthetic_corpus_dir, tmp_path_factory) -> tuple[Path, Path]:
    return synthetic_corpus_dir, tmp_path_factory.mktemp("dist-cache")


BERT_MUP = {"arch": "bert", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
            "hidden_dropout": 0.0, "attention_dropout": 0.0, "parametrization": "mup", "base_hidden_size": 16}


def one_process_run(arch: str, corpus_and_cache, tmp: Path) -> Path:
    extra = {"model": BERT_MUP} if arch == "bert" else {}
    tmp.mkdir(parents=True, exist_ok=True)
    result = train(load_config(run_config(tmp, "one", *corpus_and_cache, **extra)), log=lambda *_: None)
    assert result["status"] == "completed"
    return tmp / "one"


@pytest.mark.parametrize("arch, mode", [("pt", "ddp"), ("pt", "fsdp"), ("bert", "fsdp")])
def test_two_processes_equal_one_process_with_the_same_global_batch(arch, mode, corpus_and_cache, tmp_path):
    # BERT under FSDP: one unit per layer plus the root (PT: the root only).
    one_process = one_process_run(arch, corpus_and_cache, tmp_path / "single")
    extra = {"model": BERT_MUP} if arch == "bert" else {}
    config = run_config(tmp_path, mode, *corpus_and_cache, distributed=mode, **extra)
    proc = torchrun("-m", "probformer", "train", "--config", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ref, got = weights(one_process), weights(tmp_path / mode)
    assert ref.keys() == got.keys()
    initial = initial_weights(one_process)
    assert sum(not torch.equal(ref[k], initial[k]) for k in ref) == len(ref)  # every tensor trained
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6, msg=f"{mode}: {name}")
    # the same losses were logged, and rank 0 alone wrote them
    losses = lambda run: [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]  # noqa: E731
    assert losses(tmp_path / mode) == pytest.approx(losses(one_process), rel=1e-5)
    assert "processes" in proc.stdout and mode in proc.stdout  # the start line names the launch


def initial_weights(run: Path) -> dict[str, torch.Tensor]:
    """The weights that run started from, rebuilt as the trainer builds them (seed, unigram bias)."""
    config = load_config(run.with_suffix(".yaml"))
    corpus = corpus_for(config, log=lambda *_: None)
    torch.manual_seed(config.seed)
    model = model_from_config(config, corpus.vocab_size)
    init_bias_from_unigram(model, corpus)
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_interrupted_two_process_run_resumes_exactly(mode, corpus_and_cache, tmp_path):
    # log_interval 3: the checkpoint of step 2 holds an open training-loss window (steps 1..2), each
    # process's part of it, so the resumed run's record of step 3 is the uninterrupted one's too.
    common = dict(steps=6, eval_interval=2, checkpoint_interval=2, log_interval=3, distributed=mode)
    full = run_config(tmp_path, "full", *corpus_and_cache, **common)
    cut = run_config(tmp_path, "cut", *corpus_and_cache, **common)
    assert torchrun(str(WORKER), str(full)).returncode == 0
    stopped = torchrun(str(WORKER), str(cut), "--stop-at", "4")
    assert stopped.returncode != 0  # every process stopped at step 4's evaluation; the checkpoint is step 2's
    resumed = torchrun("-m", "probformer", "train", "--config", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    ref, got = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for name in ref:
        assert torch.equal(got[name], ref[name]), name
    strip = lambda run: [{k: v for k, v in r.items() if k != "tokens_per_second"}  # noqa: E731
                         for r in read_metrics(run / "metrics.jsonl") if r["kind"] in ("train", "valid")]
    assert strip(tmp_path / "cut") == strip(tmp_path / "full")


def test_two_processes_on_a_prepared_directory_with_sentence_rows_equal_one(prepared_shards_dir, tmp_path):
    # Each process opens the directory itself and reads only its rows of every global batch (padded to
    # the global batch's longest row); the loss is normalised by the global count of scored tokens.
    data = {"source": str(prepared_shards_dir), "seq_len": 32, "rows": "sentences"}
    two = run_config(tmp_path, "two", prepared_shards_dir, tmp_path / "unused-cache", data=data, steps=4,
                     eval_interval=2, checkpoint_interval=2, log_interval=1)
    one = run_config(tmp_path, "one", prepared_shards_dir, tmp_path / "unused-cache", data=data, steps=4,
                     eval_interval=2, checkpoint_interval=2, log_interval=1)
    result = train(load_config(one), log=lambda *_: None)
    assert result["status"] == "completed"
    proc = torchrun("-m", "probformer", "train", "--config", str(two))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"prepared data {prepared_shards_dir}" in proc.stdout and "16 sentences of <= 32 tokens" in proc.stdout
    assert "x 2 processes (ddp)" in proc.stdout
    ref, got = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)
    records = lambda run, kind: [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == kind]  # noqa: E731
    train_one, train_two = records(tmp_path / "one", "train"), records(tmp_path / "two", "train")
    assert [r["tokens_seen"] for r in train_two] == [r["tokens_seen"] for r in train_one]  # real tokens, global
    assert [r["loss"] for r in train_two] == pytest.approx([r["loss"] for r in train_one], rel=1e-5)
    assert [r["loss"] for r in records(tmp_path / "two", "valid")] == pytest.approx(
        [r["loss"] for r in records(tmp_path / "one", "valid")], rel=1e-5)
    assert not (tmp_path / "unused-cache").exists()  # no corpus cache: the directory is read as it is
