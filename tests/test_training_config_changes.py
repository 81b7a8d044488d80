"""probformer.training.config_changes: what a resumed run may change, key by key, with the reason; and
the same table behind the experiments' check that a run directory holds the spec's run."""

from __future__ import annotations

import pytest

from probformer.config import ConfigError, load_config
from probformer.training.config_changes import changed_keys, check_resume
from probformer.training.trainer import train


def quiet(*_args, **_kwargs) -> None:
    pass


def changed(*overrides: str) -> tuple[list[str], list[str]]:
    base = load_config(preset="tiny").to_dict()
    return check_resume(base, load_config(preset="tiny", overrides=list(overrides)).to_dict())


@pytest.mark.parametrize("override, key, why", [
    ("batch_size=8", "batch_size", "the saved data position counts batches of this size"),
    ("grad_accum=2", "grad_accum", "micro-batches per step"),
    ("data.seq_len=16", "data.seq_len", "blocks"),
    ("seed=3", "seed", "order of the batches"),
    ("data.mask_style=pt2023", "data.mask_style", "masked otherwise"),
    ("data.mask_prob=0.2", "data.mask_prob", "masked otherwise"),
    ("model.hidden_size=64", "model.hidden_size", "the checkpoint holds this model's weights"),
    ("data.vocab_size=600", "data.vocab_size", "the corpus"),
    ("data.source=elsewhere", "data.source", "the corpus"),
    ("data.rows=sentences", "data.rows", "counts rows of this kind (blocks, sentences or documents)"),
])
def test_keys_that_change_the_data_position_or_the_model_are_refused(override, key, why):
    refused, allowed = changed(override)
    assert len(refused) == 1 and refused[0].startswith(f"{key} ") and why in refused[0] and not allowed


@pytest.mark.parametrize("override, note", [
    ("steps=120", "the lr schedule (warmup, decay) is recomputed"),
    ("token_budget=100000", "the lr schedule (warmup, decay) is recomputed"),
    ("optim.lr=0.001", "applies from the checkpoint's step on"),
    ("eval_interval=7", ""),
    ("log_interval=1", ""),
    ("progress=false", ""),
    ("threads=1", ""),
    ("eval_batches=2", "other batches"),
])
def test_keys_safe_to_change_are_allowed_and_named(override, note):
    refused, allowed = changed(override)
    key = override.split("=")[0]
    assert not refused and len(allowed) == 1 and allowed[0].startswith(f"{key} ") and note in allowed[0]


def test_where_a_run_is_written_is_not_a_change():
    assert changed("out_dir=elsewhere", "data.cache_dir=/tmp/other") == ([], [])
    assert changed_keys({"model": {"arch": "pt"}, "eval_texts": {}}, {"model": {"arch": "pt"}, "eval_texts": {}}) == []


def test_resume_refuses_a_changed_batch_size_and_logs_an_allowed_change(tiny_run_config, tmp_path):
    out = tmp_path / "run"
    common = ("eval_interval=5", "checkpoint_interval=5", "test_eval=false")
    train(tiny_run_config(out, "steps=5", *common), log=quiet)
    with pytest.raises(ConfigError) as caught:
        train(tiny_run_config(out, "steps=10", "batch_size=8", "seed=1", *common), resume=True, log=quiet)
    message = str(caught.value)
    assert message.startswith(f"--resume: {out / 'checkpoint'} was trained with another configuration")
    assert "seed 0 -> 1 (" in message and "batch_size 16 -> 8 (the saved data position counts" in message
    assert "steps" not in message.split("cannot change")[1].split(". Resume")[0]  # allowed, so not listed
    logs: list[str] = []
    result = train(tiny_run_config(out, "steps=10", "log_interval=2", *common), resume=True, log=logs.append)
    assert result["status"] == "completed" and result["step"] == 10
    assert any(line.startswith("--resume: steps 5 -> 10: the run now ends at the new total") for line in logs), logs
    assert any(line.startswith("--resume: log_interval 5 -> 2") for line in logs), logs


def test_a_model_field_added_since_a_run_was_written_is_its_default_not_a_change():
    """train_config.json of a run written before PT had ``use_root`` lacks the key: resuming it (or an
    experiment reusing it) must read that as the default, and only a real change as a change."""
    old = load_config(preset="tiny").to_dict()
    assert "use_root" not in old["model"]  # as a run written before the field existed
    planned = load_config(preset="tiny", overrides=["model.use_root=false", "model.classifier_pooling=root"]).to_dict()
    assert changed_keys(old, planned) == []  # what an experiment's plan spells out in full
    refused, _ = check_resume(old, load_config(preset="tiny", overrides=["model.use_root=true"]).to_dict())
    assert [line.split(" ")[0] for line in refused] == ["model.use_root"]


TASK = ["task.name=token-classification", "task.train=train.conllu", "task.valid=dev.conllu"]


@pytest.mark.parametrize("override, key, allowed_note", [
    ("task.train=other.conllu", "task.train", None),
    ("task.tag_column=xpos", "task.tag_column", None),
    ("task.tokenizer=tok.json", "task.tokenizer", None),
    ("task.init_from=runs/mlm", "task.init_from", None),
    ("task.epochs=3", "task.epochs", "recomputed"),
    ("task.valid=dev2.conllu", "task.valid", "chosen on the old one"),
    ("task.test=test.conllu", "task.test", ""),
    ("task.select_by=loss", "task.select_by", "by the new metric"),
])
def test_a_task_runs_files_and_start_are_fixed_its_budget_and_evaluation_may_change(override, key, allowed_note):
    base = load_config(overrides=TASK).to_dict()
    refused, allowed = check_resume(base, load_config(overrides=[*TASK, override]).to_dict())
    if allowed_note is None:
        assert len(refused) == 1 and refused[0].startswith(f"{key} ") and not allowed
    else:
        assert not refused and len(allowed) == 1 and allowed[0].startswith(f"{key} ") and allowed_note in allowed[0]


def test_a_data_field_added_since_a_run_was_written_is_its_default_not_a_change(tmp_path):
    """``data.rows`` is absent from the train_config.json of every run written before it existed, the
    committed experiment records among them: absent means blocks, so they still count as their runs."""
    import json
    from pathlib import Path

    from probformer.config import config_from_dict
    from probformer.experiments.runs import check_run_dir

    old = load_config(preset="tiny").to_dict()
    del old["data"]["rows"]
    assert changed_keys(old, load_config(preset="tiny").to_dict()) == []
    refused, _ = check_resume(old, load_config(preset="tiny", overrides=["data.rows=documents"]).to_dict())
    assert [line.split(" ")[0] for line in refused] == ["data.rows"]
    records = sorted(Path(__file__).parents[1].glob("results/**/train_config.json"))
    assert records
    for i, record in enumerate(records):
        stored = json.loads(record.read_text())
        assert stored["data"].get("rows", "blocks") == "blocks"  # absent in records older than data.rows
        config = config_from_dict(stored)
        assert config.data.rows == "blocks" and changed_keys(stored, config.to_dict()) == [], record
        run = tmp_path / f"{i}-{record.parent.name}"  # records of several studies share run names
        run.mkdir()
        (run / "train_config.json").write_text(record.read_text())
        config.out_dir = str(run)
        check_run_dir(config)  # the experiment commands reuse the record: no "different data" error
