"""Task runs through the trainer (training/task_data.py): token and text classification from scratch
and from an MLM run, the best-on-valid export, exact resume, and the errors a user meets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import synthetic_words, write_text_dir
from safetensors.torch import load_file

from probformer.config import ConfigError, TrainConfig, load_config
from probformer.data.task_files import TaskFormat, most_frequent_tag_baseline
from probformer.training.trainer import train

TAGS = ("A", "B", "C")


def _tag(word: str, previous: str | None) -> str:
    """A tag that depends on the word and, for a third of the words, on the word before it: a tagger
    that reads context beats the most-frequent-tag baseline."""
    kind = sum(map(ord, word)) % 3
    if kind == 2 and previous is not None:
        return "A" if sum(map(ord, previous)) % 2 else "B"
    return TAGS[kind]


def write_tagged(path: Path, sentences: int, seed: int) -> Path:
    """A CoNLL file (token<TAB>tag, blank line between sentences) of synthetic sentences."""
    rng, vocab = random.Random(seed), synthetic_words(60)
    lines = []
    for _ in range(sentences):
        words = rng.choices(vocab, k=rng.randint(3, 12))
        lines += [f"{w}\t{_tag(w, words[i - 1] if i else None)}" for i, w in enumerate(words)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_labelled(path: Path, texts: int, seed: int) -> Path:
    """A TSV file (text<TAB>label): the label is whether 'good' words outnumber 'bad' ones."""
    rng, vocab = random.Random(seed), synthetic_words(60)
    good, bad = set(vocab[:10]), set(vocab[10:20])
    lines = []
    for _ in range(texts):
        words = rng.choices(vocab, k=rng.randint(4, 14))
        label = int(sum(w in good for w in words) > sum(w in bad for w in words))
        lines.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task-files")
    return {"tag_train": write_tagged(root / "train.conll", 400, 0),
            "tag_valid": write_tagged(root / "dev.conll", 80, 1),
            "tag_test": write_tagged(root / "test.conll", 80, 2),
            "cls_train": write_labelled(root / "train.tsv", 400, 3),
            "cls_valid": write_labelled(root / "dev.tsv", 80, 4)}


def task_config(out_dir: Path, files: dict[str, Path], task: str = "token-classification", *overrides: str,
                arch: str = "pt") -> TrainConfig:
    kind = "tag" if task == "token-classification" else "cls"
    model = {"pt": ["model.hidden_size=32", "model.num_channels=2", "model.rank=8", "model.latent_size=32",
                    "model.num_iterations=2", "model.base_hidden_size=32"],
             "bert": ["model.arch=bert", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                      "model.intermediate_size=64", "model.base_hidden_size=32", "model.base_head_dim=16",
                      "model.base_intermediate_size=64"]}[arch]
    return load_config(overrides=[
        f"out_dir={out_dir}", f"task.name={task}", f"task.train={files[kind + '_train']}",
        f"task.valid={files[kind + '_valid']}", "data.vocab_size=128", "data.seq_len=32", "batch_size=16",
        "steps=24", "eval_interval=8", "log_interval=4", "progress=false", "tensorboard=false", "optim.lr=0.03",
        *model, *overrides])


def quiet(*_args) -> None:
    pass


# -- config ------------------------------------------------------------------------------------------
def test_task_section_is_validated_with_one_line_errors(task_files, tmp_path):
    config = task_config(tmp_path, task_files)
    assert config.task.format == "conll" and config.total_steps == 24
    assert load_config(overrides=["task=mlm"]).task.is_mlm  # shorthand
    assert task_config(tmp_path, task_files, "token-classification", "task.epochs=2").total_steps is None
    for overrides, message in (
        (["task.train=x.conll"], "task.train: expected null for task.name=mlm"),
        (["task.name=token-classification", "task.train=x.conll"], "task.valid: expected a labelled file"),
        (["task.name=token-classification", "task.train=x.dat", "task.valid=y.dat"], "suffix '.dat'"),
        (["task.name=text-classification", "task.train=x.conllu", "task.valid=y.conllu"],
         "conllu or conll for token-classification"),
        (["task.name=parsing"], "task.name: expected one of"),
        (["task.name=token-classification", "task.train=a.conll", "task.valid=b.conll", "task.epochs=0"],
         "task.epochs"),
        (["task.nmae=mlm"], "task.nmae: unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=overrides)


# -- token classification ----------------------------------------------------------------------------
def test_a_tagger_learns_context_exports_its_best_valid_model_and_scores_test_with_it(task_files, tmp_path):
    out = tmp_path / "tagger"
    result = train(task_config(out, task_files, "token-classification", f"task.test={task_files['tag_test']}",
                               "steps=48", "eval_interval=16"), log=quiet)
    assert result["status"] == "completed" and result["task"] == "token-classification"
    fmt = TaskFormat("conll")
    baseline = most_frequent_tag_baseline(fmt.read(task_files["tag_train"]), fmt.read(task_files["tag_valid"]))
    assert result["best_valid_accuracy"] > baseline  # reads context the baseline cannot
    valid = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["kind"] == "valid"]
    best = max(valid, key=lambda r: r["accuracy"])
    assert result["best_step"] == best["step"] and result["best_valid_accuracy"] == best["accuracy"]
    assert valid[0]["unigram_loss"] == pytest.approx(result["valid_unigram_loss"])
    # The exported model is the best one, and the test score is that model's.
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["PTForTokenClassification"] and set(config["label2id"]) == set(TAGS)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["best"]["step"] == result["best_step"]
    assert 0 < result["test_accuracy"] <= 1 and result["test_examples"] == 80


def test_best_on_valid_is_the_exported_model_not_the_last(task_files, tmp_path, monkeypatch):
    """When a later evaluation is worse, model/ keeps the earlier weights (and test scores those)."""
    import probformer.training.task_data as task_data

    scores = iter([0.9, 0.5, 0.7])
    real = task_data.TaskData.evaluate

    def scripted(self, *args, **kwargs):
        metrics = real(self, *args, **kwargs)
        return {**metrics, "accuracy": next(scores, metrics["accuracy"])}

    monkeypatch.setattr(task_data.TaskData, "evaluate", scripted)
    out = tmp_path / "best"
    result = train(task_config(out, task_files, "token-classification", "checkpoint_interval=8"), log=quiet)
    assert result["best_step"] == 8 and result["best_valid_accuracy"] == 0.9
    exported = load_file(str(out / "model" / "model.safetensors"))
    final = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert any(not torch.equal(exported[k], final[k]) for k in exported)  # step 8's weights, not step 24's


def test_the_cli_reports_the_metric_that_picked_the_model(task_files, tmp_path, capsys):
    """task.select_by=loss: the run keeps the lowest valid loss, and the final line names that metric."""
    from probformer.cli.main import main

    out = tmp_path / "by-loss"
    args = ["train", "--out-dir", str(out)]
    overrides = ["task.select_by=loss", "task.name=token-classification", f"task.train={task_files['tag_train']}",
                 f"task.valid={task_files['tag_valid']}", f"task.test={task_files['tag_valid']}",
                 "data.vocab_size=128", "data.seq_len=32", "batch_size=16", "steps=16", "eval_interval=8",
                 "progress=false", "tensorboard=false", "model.hidden_size=32", "model.num_channels=2",
                 "model.rank=8", "model.latent_size=32", "model.num_iterations=2", "model.base_hidden_size=32"]
    assert main(args + [x for o in overrides for x in ("--set", o)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    start, end = lines.index("{"), len(lines) - 1 - lines[::-1].index("}")
    result = json.loads("\n".join(lines[start : end + 1]))
    assert result["select_by"] == "loss"
    assert (f"best validation loss {result['best_valid_loss']:.4f} at step {result['best_step']}, "
            f"test loss {result['test_loss']:.4f}; that model saved to") in printed


def test_an_interrupted_task_run_resumes_exactly(task_files, tmp_path):
    common = ("checkpoint_interval=8", "eval_interval=8", "log_interval=3")
    full = train(task_config(tmp_path / "full", task_files, "token-classification", *common), log=quiet)

    class Interrupt(Exception):
        pass

    def stop(step, _metrics):
        if step == 16:
            raise Interrupt

    cut = task_config(tmp_path / "cut", task_files, "token-classification", *common)
    with pytest.raises(Interrupt):
        train(cut, on_eval=stop, log=quiet)
    resumed = train(cut, resume=True, log=quiet)
    for key in ("valid_loss", "valid_accuracy", "best_step", "best_valid_accuracy", "tokens_seen"):
        assert resumed[key] == full[key], key
    a, b = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_count_the_steps_from_the_training_rows(task_files, tmp_path):
    result = train(task_config(tmp_path / "ep", task_files, "token-classification", "task.epochs=0.5",
                               "eval_interval=1000"), log=quiet)
    assert result["step"] == (400 // 16) // 2 + ((400 // 16) % 2 > 0)  # ceil(0.5 x 25 batches)


# -- text classification ------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "pooling"), [("pt", "mean"), ("pt", "root"), ("bert", None)])
def test_a_text_classifier_trains_and_its_export_adds_the_prefix_it_was_trained_with(task_files, tmp_path, arch,
                                                                                     pooling):
    from tokenizers import Tokenizer

    out = tmp_path / arch
    extra = [f"model.classifier_pooling={pooling}"] if pooling else []
    lr = {"pt": 0.03, "bert": 0.003}[arch]  # BERT's classifier diverges at PT's lr
    lines: list[str] = []
    result = train(task_config(out, task_files, "text-classification", "steps=120", "eval_interval=40",
                               f"optim.lr={lr}", *extra, arch=arch), log=lambda *a: lines.append(" ".join(map(str, a))))
    assert result["status"] == "completed" and {"best_valid_accuracy", "valid_macro_f1"} <= set(result)
    labels = [e.label for e in TaskFormat("tsv").read(task_files["cls_valid"])]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    if pooling != "root":  # ROOT's read-out does not leave the label prior this early (docs/tasks.md)
        assert result["best_valid_accuracy"] > majority + 0.1
    # the run says so at its start when its lr is above what ROOT's read-out learns at
    assert any("ROOT read-out at lr 0.03" in line for line in lines) == (pooling == "root")
    config = json.loads((out / "model" / "config.json").read_text())
    if arch == "pt":
        assert config["use_root"] is True  # PT's text classifier has ROOT (the registry's task default)
    ids = Tokenizer.from_file(str(out / "model" / "tokenizer.json")).encode("word").ids
    assert (ids[0] == 2) == (arch == "bert")  # [CLS] before the text for BERT's pooler only


# -- fine-tuning from an MLM run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlm_run(task_files, tmp_path_factory) -> Path:
    """A tiny PT MLM run (with ROOT) on the tagging files' text (a directory of 20 .txt documents)."""
    root = tmp_path_factory.mktemp("mlm")
    text = [" ".join(s.words) for s in TaskFormat("conll").read(task_files["tag_train"])]
    write_text_dir(root / "corpus", [" ".join(text[i::20]) for i in range(20)])
    config = load_config(overrides=[
        f"out_dir={root / 'run'}", f"data.source={root / 'corpus'}", "data.vocab_size=128", "data.seq_len=32",
        f"data.cache_dir={root / 'cache'}", "batch_size=8", "steps=6", "eval_interval=6", "progress=false",
        "tensorboard=false", "model.hidden_size=32", "model.num_channels=2", "model.rank=8", "model.latent_size=32",
        "model.num_iterations=2", "model.base_hidden_size=32", "model.use_root=true"])
    train(config, log=quiet)
    return root / "run"


def test_init_from_loads_the_encoder_and_tokenizer_and_starts_a_fresh_head(task_files, mlm_run, tmp_path):
    from probformer.training.task_data import TaskData

    config = task_config(tmp_path, task_files, "token-classification", f"task.init_from={mlm_run}",
                         "data.vocab_size=999")
    data = TaskData(config, quiet)
    assert data.tokenizer_json == (mlm_run / "model" / "tokenizer.json").read_bytes()
    model = data.make_model(quiet)
    mlm = load_file(str(mlm_run / "model" / "model.safetensors"))
    own = model.state_dict()
    encoder = [k for k in own if not k.startswith("classifier.")]
    assert encoder and all(torch.equal(own[k], mlm[k]) for k in encoder)  # ROOT included
    assert any(k.startswith("root.") for k in encoder)
    assert torch.count_nonzero(model.classifier.weight) == 0  # the muP output role starts at zero
    assert not any(k.startswith("readout.") for k in own)
    result = train(config, log=quiet)
    assert result["status"] == "completed"


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.hidden_size=64", "model.base_hidden_size=64"], "the run has model.hidden_size=32"),
    (["task.tokenizer=x.json"], "brings its own tokenizer"),
])
def test_an_incompatible_init_from_is_refused_with_the_reason(task_files, mlm_run, tmp_path, overrides, message):
    from probformer.training.task_data import TaskData

    config = task_config(tmp_path, task_files, "token-classification", f"task.init_from={mlm_run}", *overrides)
    with pytest.raises(ConfigError, match=message):
        TaskData(config, quiet)


def test_init_from_another_architecture_or_nothing_is_refused(task_files, mlm_run, tmp_path):
    from probformer.training.task_data import TaskData

    with pytest.raises(ConfigError, match="is a 'pt' model, this config trains model.arch='bert'"):
        TaskData(task_config(tmp_path, task_files, "token-classification", f"task.init_from={mlm_run}",
                             arch="bert"), quiet)
    with pytest.raises(ConfigError, match="holds no model"):
        TaskData(task_config(tmp_path, task_files, "token-classification", f"task.init_from={tmp_path}"), quiet)


# -- bad files through the CLI ---------------------------------------------------------------------------
def test_bad_task_files_are_one_line_errors_from_the_cli(task_files, tmp_path, capsys):
    from probformer.cli.main import main

    unseen = tmp_path / "dev.conll"
    unseen.write_text("a\tA\nb\tZZZ\n", encoding="utf-8")
    malformed = tmp_path / "bad.tsv"
    malformed.write_text("only one column\n", encoding="utf-8")
    base = [f"task.train={task_files['tag_train']}", f"task.valid={task_files['tag_valid']}"]
    cases = [
        (["task.name=token-classification", *base, f"task.valid={unseen}"],
         f"{unseen}:2: label 'ZZZ' does not occur in the training file"),
        (["task.name=token-classification", *base, f"task.train={tmp_path / 'missing.conll'}"], "missing.conll"),
        (["task.name=text-classification", f"task.train={malformed}", f"task.valid={malformed}"], f"{malformed}:1"),
    ]
    for overrides, message in cases:
        args = ["train", "--out-dir", str(tmp_path / "out"), "--overwrite", "--set", "progress=false"]
        for item in overrides:
            args += ["--set", item]
        assert main(args) == 2, overrides
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


# -- several processes ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ddp_processes_train_a_task_exactly_like_one(task_files, tmp_path):
    """Rows of a padded, length-bucketed batch split over processes by global index; the loss is
    normalised over the step's scored words on every process: the same weights as one process."""
    import os
    import subprocess
    import sys

    import yaml

    def config_file(name: str) -> Path:
        config = task_config(tmp_path / name, task_files, "token-classification", "steps=4", "eval_interval=4",
                             "threads=1", "optim.warmup_fraction=0", "optim.eps=1e-4", "grad_accum=2",
                             "model.head_dropout=0", "model.label_dropout=0",  # dropout streams differ by rank
                             "precision=fp32")  # exactness to fp32 rounding
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config.to_dict()))
        return path

    assert train(load_config(config_file("one")), log=quiet)["status"] == "completed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "probformer", "train", "--config", str(config_file("two"))],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    one, two = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    metrics = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    valid = lambda run: [r["accuracy"] for r in metrics(run) if r["kind"] == "valid"]  # noqa: E731
    assert valid("two") == valid("one")
