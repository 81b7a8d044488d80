"""End-to-end training: CLI run, exact resume, divergence and failure paths (tiny configs, real corpus)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probformer.config import ConfigError, load_config
from probformer.data.errors import DataError
from probformer.training.checkpoint import CheckpointError
from probformer.training.metrics_log import read_metrics
from probformer.training.trainer import train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus-cache")


def tiny(cache_dir: Path, out_dir: Path, *overrides: str):
    return load_config(preset="tiny", overrides=[f"data.cache_dir={cache_dir}", f"out_dir={out_dir}", "progress=false",
                                                 "tensorboard=false", *overrides])


def quiet(*_args, **_kwargs) -> None:
    pass


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probformer", *args], capture_output=True, text=True, timeout=600)


def test_cli_tiny_run_lowers_validation_loss(cache_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "eval_interval=20", "--set", "progress=false")
    assert proc.returncode == 0, proc.stderr
    assert "unigram baseline" in proc.stdout
    valid = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [20, 40, 60]
    # the read-out bias starts at log unigram frequencies: training must beat the context-free baseline
    assert valid[-1]["loss"] < valid[0]["loss"] < math.log(512)
    assert valid[-1]["loss"] < valid[-1]["unigram_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 60
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    assert (out / "checkpoint" / "optimizer.pt").exists()
    assert any((out / "tensorboard").iterdir())  # TensorBoard events next to metrics.jsonl


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(cache_dir, tmp_path):
    # log_interval 3: the checkpoint of step 20 falls inside a training-loss window (steps 19..21),
    # which the checkpoint keeps, so the resumed run logs every train record as the uninterrupted one.
    common = ("steps=40", "eval_interval=10", "checkpoint_interval=20", "test_eval=false", "log_interval=3")
    full = train(tiny(cache_dir, tmp_path / "full", *common))

    def stop_at_30(step, _metrics):
        if step == 30:
            raise Interrupt

    cut = tiny(cache_dir, tmp_path / "cut", *common)
    with pytest.raises(Interrupt):
        train(cut, on_eval=stop_at_30)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())["step"] == 20
    resumed = train(cut, resume=True)

    keys = ("valid_loss", "valid_accuracy", "step", "tokens_seen")
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_second", "parameters")}  # noqa: E731
                          for r in rows if r["kind"] in ("train", "valid")]
    metrics = lambda run: strip(read_metrics(tmp_path / run / "metrics.jsonl"))  # noqa: E731
    assert metrics("cut") == metrics("full")


def test_diverging_run_reports_status_not_traceback(cache_dir, tmp_path):
    result = train(tiny(cache_dir, tmp_path / "div", "optim.lr=1e12", "optim.grad_clip=0", "model.init_std_input=1e30"))
    assert result["status"] == "diverged" and "non-finite" in result["reason"]
    final = [r for r in read_metrics(tmp_path / "div" / "metrics.jsonl") if r["kind"] == "final"]
    assert final and final[0]["status"] == "diverged"
    # A finite loss far above the unigram baseline is a divergence too (training/divergence.py): lr 1e3
    # blows the tiny model up to ~1e12 nats within 5 steps, and the run used to end "completed".
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}",
                   "--out-dir", str(tmp_path / "d2"), "--set", "optim.lr=1e3", "--set", "progress=false",
                   "--set", "precision=fp32")  # in bf16 the blow-up overflows to inf instead
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "d2" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "far above the unigram baseline" in summary["reason"]
    assert '"status": "diverged"' in proc.stdout


def test_missing_data_path_is_a_clear_error(tmp_path):
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.source={tmp_path / 'nope.txt'}",
                   "--out-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: data source") and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny(cache_dir, out, "steps=10", "eval_interval=10", "test_eval=false"))
    (out / "checkpoint" / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "steps=20", "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "checkpoint" in proc.stderr and "corrupt" in proc.stderr


def test_resume_of_an_older_checkpoint_with_another_tokenizer_is_refused(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny(cache_dir, out, "steps=10", "eval_interval=10", "test_eval=false"))
    (out / "checkpoint" / "tokenizer.json").unlink()  # as written by an older version: no copy of its tokenizer
    state_file = out / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["tokenizer_sha256"] = "0" * 64  # as if the corpus cache had been rebuilt with other token ids
    state_file.write_text(json.dumps(state))
    proc = run_cli("train", "--preset", "tiny", "--set", f"data.cache_dir={cache_dir}", "--out-dir", str(out),
                   "--set", "steps=20", "--resume")
    assert proc.returncode == 2 and "different tokenizer" in proc.stderr and "holds no copy of it" in proc.stderr
    (out / "checkpoint" / "tokenizer.json").write_text("{}")  # a copy that is not the one it trained with
    with pytest.raises(CheckpointError, match="tokenizer.json does not match the tokenizer sha256"):
        train(tiny(cache_dir, out, "steps=20"), resume=True)


def test_eval_texts_score_other_text_at_every_evaluation(synthetic_corpus_dir, tmp_path):
    from conftest import synthetic_documents

    # Out-of-domain text as a treebank: one sentence per document, its "# text =" line.
    lines = []
    for k, doc in enumerate(synthetic_documents(n_docs=12, words_per_doc=20, seed=7)):
        words = doc.split()
        lines += [f"# sent_id = {k}", f"# text = {doc}"]
        lines += [f"{i}\t{w}\t_\tX\t_\t_\t{0 if i == 1 else 1}\tdep\t_\t_" for i, w in enumerate(words, start=1)]
        lines.append("")
    treebank = tmp_path / "ood.conllu"
    treebank.write_text("\n".join(lines) + "\n")
    common = [f"data.source={synthetic_corpus_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.valid_fraction=0.1",
              "data.test_fraction=0.1", "steps=10", "eval_interval=5", "test_eval=false", "progress=false",
              "tensorboard=false", f"eval_texts.ood={treebank}"]
    result = train(load_config(preset="tiny", overrides=[*common, f"out_dir={tmp_path / 'run'}"]), log=lambda *_: None)
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval_ood"]
    assert [r["step"] for r in records] == [5, 10]
    assert records[1]["loss"] < records[1]["unigram_loss"] + 1.0 and records[1]["tokens"] > 0
    assert result["eval_ood_loss"] == records[1]["loss"] and math.isfinite(result["eval_ood_loss"])
    # The same masked targets every evaluation: the token count does not change.
    assert records[0]["tokens"] == records[1]["tokens"]

    (tmp_path / "short.conllu").write_text("1\tword\t_\tX\t_\t_\t0\troot\t_\t_\n\n")
    with pytest.raises(DataError, match="fewer than one block"):
        short = [*common, f"out_dir={tmp_path / 'short'}", f"eval_texts.ood={tmp_path / 'short.conllu'}"]
        train(load_config(preset="tiny", overrides=short), log=lambda *_: None)
    with pytest.raises(ConfigError, match="eval_texts"):
        load_config(preset="tiny", overrides=["eval_texts.a b=x"])


def test_ternary_norm_penalty_on_a_model_without_ternary_factors_is_an_error(cache_dir, tmp_path):
    config = tiny(cache_dir, tmp_path, "optim.ternary_norm_penalty=0.01", "model={arch: bert, hidden_size: 32, "
                  "num_layers: 1, num_heads: 2, intermediate_size: 64}")
    with pytest.raises(ConfigError, match="ternary_norm_penalty"):
        train(config, log=lambda *_: None)


def test_resume_recomputes_group_learning_rates_from_the_config(cache_dir, tmp_path):
    # A changed lr (or muP multiplier) applies after --resume: groups are not restored from the checkpoint.
    common = ("steps=20", "eval_interval=5", "checkpoint_interval=10", "test_eval=false", "log_interval=1",
              "optim.decay=constant", "optim.warmup_fraction=0")
    out = tmp_path / "run"

    def stop_at_15(step, _metrics):
        if step == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny(cache_dir, out, *common, "optim.lr=1e-2"), on_eval=stop_at_15)
    train(tiny(cache_dir, out, *common, "optim.lr=2e-3"), resume=True)
    lrs = {r["step"]: r["lr"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(1e-2) and lrs[15] == pytest.approx(2e-3)
    state = torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    hidden = next(g for g in groups if g["role"] == "hidden")
    assert hidden["initial_lr"] == pytest.approx(2e-3 * hidden["lr_mult"])


def test_objective_includes_the_ternary_norm_penalty():
    from probformer.models.pt.configuration_pt import PTConfig
    from probformer.models.pt.modeling_pt import PTForMaskedLM
    from probformer.training.objective import TrainingObjective

    torch.manual_seed(0)
    model = PTForMaskedLM(PTConfig(vocab_size=30, hidden_size=8, num_channels=2, rank=4, latent_size=8,
                                   num_iterations=1, head_dropout=0.0, label_dropout=0.0)).eval()
    ids = torch.randint(5, 30, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    mask = torch.ones_like(ids)
    plain, ce, _ = TrainingObjective(model)(ids, mask, labels)
    penalised, _, _ = TrainingObjective(model, 0.5)(ids, mask, labels, penalty_share=0.5)
    torch.testing.assert_close(plain, ce)
    torch.testing.assert_close(penalised - plain, 0.25 * model.ternary_norm())
    # The loss share: a micro-batch holding 1/4 of the step's scored tokens, one of 2 processes.
    shared, _, _ = TrainingObjective(model)(ids, mask, labels, token_share=0.25 * 2)
    torch.testing.assert_close(shared, 0.5 * ce)


def test_a_global_micro_batch_splits_by_sample_index():
    from probformer.data.batches import Batch

    ids = torch.arange(24).view(6, 4)
    batch = Batch(ids, torch.ones_like(ids), torch.where(ids % 3 == 0, ids, -100))
    parts = [batch.shard(r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p.input_ids for p in parts]), ids)
    assert sum(p.num_scored for p in parts) == batch.num_scored == 8
    with pytest.raises(ValueError, match="multiple of 4"):
        batch.shard(0, 4)


def test_corpus_spec_from_the_data_config_keeps_the_cache_key():
    # Existing caches and committed results name corpora by this key: the derived spec must hash
    # exactly as the field-by-field one the trainer used to build.
    from probformer.config import DataConfig
    from probformer.data.prepared import CorpusSpec, cache_key

    data = DataConfig(source="sotu", text_field="body", vocab_size=777, seq_len=64, valid_fraction=0.07,
                      test_fraction=0.03, split_seed=5, lowercase=False, mask_style="pt2023", cache_dir="/x")
    spec = CorpusSpec.from_data_config(data)
    assert spec == CorpusSpec(source="sotu", text_field="body", vocab_size=777, valid_fraction=0.07,
                              test_fraction=0.03, split_seed=5, lowercase=False)
    assert cache_key(CorpusSpec.from_data_config(DataConfig())) == cache_key(CorpusSpec())


def test_parallelize_applies_checkpointing_then_compile_then_the_wrapper():
    from torch import nn

    from probformer.config import TrainConfig
    from probformer.training.distributed import ProcessContext
    from probformer.training.objective import TrainingObjective
    from probformer.training.parallelize import parallelize

    class Hooked(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls: list[str] = []

        def enable_activation_checkpointing(self):
            self.calls.append("checkpointing")

        def compile_regions(self):
            self.calls.append("compile")

    model = Hooked()
    objective = TrainingObjective(model)
    config = TrainConfig(compile=True, activation_checkpointing=True)
    assert parallelize(objective, config, ProcessContext(), torch.device("cpu")) is objective  # one process: no wrapper
    assert model.calls == ["checkpointing", "compile"]
    with pytest.raises(ConfigError, match="compile"):
        parallelize(TrainingObjective(nn.Linear(2, 2)), TrainConfig(compile=True), ProcessContext(),
                    torch.device("cpu"))


def test_the_logger_off_rank_0_writes_and_prints_nothing(tmp_path):
    from probformer.training.distributed import ProcessContext
    from probformer.training.logger import NullLogger, RunLogger, logger_for

    printed = []
    out = tmp_path / "run"
    logger = logger_for(ProcessContext(rank=1, world_size=2), out, printed.append)
    assert type(logger) is NullLogger
    logger.info("hello")
    logger.open(load_config(preset="tiny"), None)
    logger.begin(10, 0, show_bar=True)
    logger.record("train", 1, {"loss": 1.0})
    logger.note("step 1")
    logger.advance()
    logger.end()
    logger.finish(1, {"status": "completed"})
    assert not printed and not out.exists()
    assert isinstance(logger_for(ProcessContext(), out, printed.append), RunLogger) and out.is_dir()


# -- the run's tokenizer ---------------------------------------------------------------------------
def with_two_ids_swapped(tokenizer_json: bytes) -> bytes:
    """The same tokenizer numbering two ordinary tokens the other way round (what a cache entry of an
    older version, whose WordPiece ids were not reproducible, can hold)."""
    spec = json.loads(tokenizer_json)
    vocab = spec["model"]["vocab"]
    a, b = (token for token, index in vocab.items() if index in (10, 11))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return json.dumps(spec).encode()


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_run_exports_the_tokenizer_it_trained_with(tiny_run_config, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"

    def cache_rebuilt_meanwhile(step, _metrics):  # e.g. by another process, with other ids
        if step == 5:
            tokenizer = next(cache.glob("corpus-*")) / "tokenizer.json"
            tokenizer.write_bytes(with_two_ids_swapped(tokenizer.read_bytes()))

    train(tiny_run_config(out, f"data.cache_dir={cache}", "steps=10", "eval_interval=5", "test_eval=false"),
          on_eval=cache_rebuilt_meanwhile, log=quiet)
    trained_with = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["tokenizer_sha256"]
    assert sha256_of(out / "model" / "tokenizer.json") == trained_with
    assert sha256_of(next(cache.glob("corpus-*")) / "tokenizer.json") != trained_with
    assert sha256_of(out / "checkpoint" / "tokenizer.json") == trained_with  # resuming needs no cache


def test_resume_uses_the_checkpoints_tokenizer_when_the_cache_holds_another(tiny_run_config, tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    from probformer.data import prepare_stream as prepare_stream_module

    cache = tmp_path / "cache"
    common = (f"data.cache_dir={cache}", "steps=20", "eval_interval=5", "checkpoint_interval=10", "test_eval=false")
    full = train(tiny_run_config(tmp_path / "full", *common), log=quiet)

    def stop_at_15(step, _metrics):
        if step == 15:
            raise Interrupt

    cut = tiny_run_config(tmp_path / "cut", *common)
    with pytest.raises(Interrupt):
        train(cut, on_eval=stop_at_15, log=quiet)
    # The cache entry is gone and is rebuilt numbering tokens otherwise, as an older version could.
    shutil.rmtree(next(cache.glob("corpus-*")))
    real = prepare_stream_module.train_wordpiece
    monkeypatch.setattr(prepare_stream_module, "train_wordpiece", lambda *args, **kwargs: Tokenizer.from_str(
        with_two_ids_swapped(real(*args, **kwargs).to_str().encode()).decode()))
    logs: list[str] = []
    resumed = train(cut, resume=True, log=logs.append)
    assert any("holds another tokenizer than the checkpoint's" in line for line in logs), logs
    keys = ("valid_loss", "valid_accuracy", "step", "tokens_seen")
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    exported = [sha256_of(tmp_path / run / "model" / "tokenizer.json") for run in ("cut", "full")]
    assert exported[0] == exported[1]


# -- degenerate data and settings --------------------------------------------------------------------
def test_a_micro_batch_with_nothing_to_predict_adds_nothing():
    import contextlib

    from probformer.data.batches import Batch
    from probformer.models.pt.configuration_pt import PTConfig
    from probformer.models.pt.modeling_pt import PTForMaskedLM
    from probformer.training.distributed import ProcessContext
    from probformer.training.objective import TrainingObjective
    from probformer.training.step import optimizer_step

    ids = torch.randint(5, 30, (2, 6), generator=torch.Generator().manual_seed(1))
    scored = Batch(ids, torch.ones_like(ids), torch.where(ids % 2 == 0, ids, -100))
    nothing = Batch(ids, torch.ones_like(ids), torch.full_like(ids, -100))  # e.g. every token [UNK]

    def step(batches: list[Batch]):
        torch.manual_seed(0)
        objective = TrainingObjective(PTForMaskedLM(PTConfig(vocab_size=30, hidden_size=8, num_channels=2, rank=4,
                                                             latent_size=8, num_iterations=1, head_dropout=0.0,
                                                             label_dropout=0.0)))
        optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        stats = optimizer_step(objective, optimizer, scheduler, batches, ProcessContext(), torch.device("cpu"),
                               contextlib.nullcontext, 1.0)
        return stats, objective.state_dict()

    with_nothing, alone = step([nothing, scored]), step([scored])
    assert torch.equal(with_nothing[0].loss, alone[0].loss) and with_nothing[0].scored == 1.0
    assert all(torch.equal(with_nothing[1][k], alone[1][k]) for k in alone[1])
    stats, _ = step([nothing])  # a whole step with nothing to predict: no update, no 0 / 0
    assert stats.scored == 0.0 and float(stats.loss) == 0.0 and float(stats.grad_norm) == 0.0


def test_a_corpus_with_nothing_to_predict_is_a_clear_error(tiny_run_config, tmp_path):
    from conftest import write_text_dir

    from probformer.data.errors import DataWarning

    thai = "ภาษาไทยเขียนติดกันโดยไม่มีช่องว่างระหว่างคำ" * 4  # no spaces: one 170-letter "word", [UNK]
    source = write_text_dir(tmp_path / "thai", [f"{thai} {thai}"] * 12)
    config = tiny_run_config(tmp_path / "run", f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.warns(DataWarning, match=r"100\.0% of the tokens of .* \(training split\) are \[UNK\]"), \
            pytest.raises(DataError, match=r"holds no token to predict: 100\.0% of its tokens are \[UNK\]"):
        train(config, log=quiet)


def test_fewer_training_blocks_than_a_batch_is_a_clear_error(tiny_run_config, tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size: the training split has \d+ blocks of data.seq_len=32 tokens "
                                          r"\([\d,]+ tokens\), fewer than batch_size=10000; lower batch_size"):
        train(tiny_run_config(tmp_path / "run", "batch_size=10000"), log=quiet)


def test_an_unavailable_device_is_a_clear_error(tiny_run_config, tmp_path, monkeypatch):
    from probformer.training.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda' asked for, but CUDA is not available here"):
        train(tiny_run_config(tmp_path / "run", "device=cuda"), log=quiet)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"'cuda:3' asked for, but this machine has 1 CUDA device\(s\)"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


# -- resuming ------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_returns_its_summary_and_writes_nothing(tiny_run_config, tmp_path):
    out = tmp_path / "run"
    train(tiny_run_config(out, "steps=6", "eval_interval=3", "checkpoint_interval=3"), log=quiet)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    logs: list[str] = []
    again = train(tiny_run_config(out, "steps=6", "eval_interval=3", "checkpoint_interval=3"), resume=True,
                  log=logs.append)
    assert again == json.loads((out / "summary.json").read_text()) and again["step"] == 6
    assert any("holds a finished run (completed at step 6): nothing to resume" in line for line in logs)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # no second test / final record
    # Trained further, it ends once, at its new end.
    train(tiny_run_config(out, "steps=9", "eval_interval=3", "checkpoint_interval=3"), resume=True, log=quiet)
    records = read_metrics(out / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records if r["kind"] in ("test", "final")] == [("test", 9), ("final", 9)]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [3, 6, 9]


def test_a_torn_last_metrics_line_is_reported_not_fatal(tmp_path):
    from probformer.training.metrics_log import MetricsLog

    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "step": step, "loss": 1.0} for step in (5, 10, 15)]
    lines = [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + '\n{"kind": "tra')  # a run killed while appending
    logs: list[str] = []
    MetricsLog(tmp_path, resume_step=10, tensorboard=False, log=logs.append)  # what --resume does
    assert logs == [f"resume: {path}: ignored its torn last line 4"]
    assert read_metrics(path) == records[:2]
    path.write_text("\n".join(lines) + '\n{"kind": "tra')
    with pytest.warns(UserWarning, match="ignored its torn last line 4"):
        assert read_metrics(path) == records
    path.write_text("\n".join([lines[0], "{torn", *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2: not a JSON record; the file is damaged"):
        read_metrics(path)


def test_ctrl_c_says_whether_a_checkpoint_is_kept(tmp_path, monkeypatch, capsys):
    from probformer.cli.main import main
    from probformer.training import trainer

    def interrupted(_config, **_kwargs):
        raise KeyboardInterrupt  # e.g. while the corpus is prepared, before any checkpoint

    monkeypatch.setattr(trainer, "train", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out-dir", str(out)]) == 130
    assert "no checkpoint was written to" in capsys.readouterr().err
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "trainer_state.json").write_text('{"step": 40}')
    assert main(["train", "--preset", "tiny", "--out-dir", str(out), "--resume"]) == 130
    assert "the last checkpoint (step 40) is kept" in capsys.readouterr().err
