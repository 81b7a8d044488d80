"""``probformer compare``: spec loading, sizing plan, and a tiny end-to-end comparison that is interrupted,
resumed, read back without retraining, and extended with an architecture that diverges."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
import yaml

import probformer.experiments.compare as compare_mod
from probformer.experiments.compare import (
    COLUMNS,
    add_parser,
    compare,
    count_label,
    load_spec,
    plan_runs,
    plot_loss,
    spec_from_dict,
)
from probformer.config import ConfigError

PT_BASE = {"hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2, "max_distance": 2}
BERT_BASE = {"hidden_size": 16, "num_heads": 2, "intermediate_size": 32, "num_layers": 1}
REAL_TRAIN = compare_mod.train
DIVERGING = {"optim": {"lr": 1e12, "grad_clip": 0}, "model": {"init_std": 1e30}}


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The tiny runs use one thread (much faster on a busy CPU); put torch's setting back afterwards."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_spec(prepared_synthetic, synthetic_corpus_dir) -> dict:
    """pt and bert at 20k and 40k parameters, one seed, 12 steps of 8 x 32 tokens on the synthetic corpus."""
    return {
        "budgets": ["20k", "40k"],
        "token_budget": 12 * 8 * 32,
        "archs": ["pt", "bert"],
        "seeds": [0],
        "train": {"data": {"source": str(synthetic_corpus_dir), "vocab_size": 512, "seq_len": 32,
                           "valid_fraction": 0.1, "test_fraction": 0.1,
                           "cache_dir": str(prepared_synthetic.root.parent)},
                  "batch_size": 8, "eval_interval": 4, "eval_batches": 2, "checkpoint_interval": 4,
                  "log_interval": 2, "tensorboard": False, "device": "cpu", "threads": 1},
        "models": {"pt": PT_BASE, "bert": BERT_BASE, "ut": BERT_BASE},
        "hparams": {"pt": {"optim": {"lr": 1e-2}}, "bert": {"optim": {"lr": 1e-3}}},
    }


class Interrupt(Exception):
    pass


def recording_train(calls: list, interrupt: str | None = None):
    real = REAL_TRAIN

    def wrapped(config, **kwargs):
        name = Path(config.out_dir).name
        calls.append((name, kwargs.get("resume")))
        if name == interrupt:
            def stop(step, _metrics):
                if step == 8:  # after the step-4 checkpoint, before the step-8 one
                    raise Interrupt
            kwargs["on_eval"] = stop
        return real(config, **kwargs)

    return wrapped


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_compare_end_to_end_resume_cache_and_divergence(tiny_spec, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    spec = spec_from_dict(tiny_spec)

    # 1. interrupted inside the last run: the finished runs are tabulated, the last one keeps its checkpoint
    calls: list = []
    monkeypatch.setattr(compare_mod, "train", recording_train(calls, interrupt="bert-40k-s0"))
    with pytest.raises(Interrupt):
        compare(spec, out)
    assert [name for name, _ in calls] == ["pt-20k-s0", "bert-20k-s0", "pt-40k-s0", "bert-40k-s0"]
    cut = out / "runs" / "bert-40k-s0"
    assert (cut / "checkpoint").is_dir() and not (cut / "summary.json").exists()
    assert len(read_csv(out / "results.csv")) == 3

    # 2. the same call again: only the interrupted run trains, resumed from its checkpoint
    calls.clear()
    monkeypatch.setattr(compare_mod, "train", recording_train(calls))
    rows = compare(spec, out)
    assert calls == [("bert-40k-s0", True)]
    for name in ("results.csv", "results.md", "loss_vs_params.png", "loss_vs_flops.png", "command.txt", "spec.yaml"):
        assert (out / name).stat().st_size > 0, name
    table = read_csv(out / "results.csv")
    assert len(table) == len(rows) == 4 and list(table[0]) == list(COLUMNS)
    for row in table:
        assert row["status"] == "completed" and row["steps"] == "12" and row["train_tokens"] == "3072"
        assert all(row[k] != "" for k in COLUMNS if k != "reason"), row
        assert math.isfinite(float(row["test_loss"])) and float(row["valid_loss"]) < math.log(512)
        assert float(row["train_flops"]) == pytest.approx(float(row["flops_per_token"]) * 3072)
        assert abs(int(row["params"]) - int(row["budget"])) <= 0.02 * int(row["budget"])
    assert [r["resumed"] for r in table] == ["False", "False", "False", "True"]
    md = (out / "results.md").read_text()
    assert "| pt | 20k |" in md and "| bert | 40k |" in md
    assert "- 20k:" in md and "- 40k:" in md and "lowest mean valid loss" in md

    # 3. again through the CLI entry point: nothing is retrained (train would raise), same numbers
    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(compare_mod, "train", no_training)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", "--config", str(spec_file), "--out-dir", str(out)])
    assert args.func(args) == 0
    assert read_csv(out / "results.csv") == table
    assert "| pt | 20k |" in capsys.readouterr().out
    assert len((out / "command.txt").read_text().splitlines()) == 6  # a comment + a command per invocation

    # 4. add an architecture whose runs diverge: only its runs train; reported and plotted as diverged
    calls.clear()
    monkeypatch.setattr(compare_mod, "train", recording_train(calls))
    spec = spec_from_dict({**tiny_spec, "archs": ["pt", "bert", "ut"],
                           "hparams": {**tiny_spec["hparams"], "ut": DIVERGING}})
    rows = compare(spec, out)
    assert calls == [("ut-20k-s0", False), ("ut-40k-s0", False)]
    diverged = [r for r in read_csv(out / "results.csv") if r["arch"] == "ut"]
    assert [r["status"] for r in diverged] == ["diverged", "diverged"]
    assert all(r["valid_loss"] == "" and r["test_loss"] == "" and "non-finite" in r["reason"] for r in diverged)
    md = (out / "results.md").read_text()
    assert "| ut | 20k |" in md and "**1** (seed 0)" in md and "excluded: ut (all 1 seeds diverged)" in md
    drawn = plot_loss(rows, "params", tmp_path / "p.png", spec)
    assert [k for _, k in drawn["ut"]["diverged"]] == [1, 1] and all(math.isnan(m) for m in drawn["ut"]["mean"])
    assert all(math.isfinite(m) for m in drawn["pt"]["mean"]) and not drawn["pt"]["diverged"]

    # 5. a changed spec does not silently reuse runs trained with other hyperparameters
    changed = spec_from_dict({**tiny_spec, "hparams": {**tiny_spec["hparams"], "pt": {"optim": {"lr": 3e-3}}}})
    with pytest.raises(ConfigError, match="pt-20k-s0 holds a run with a different optim"):
        compare(changed, out)


def test_hparams_from_json_applies_per_arch(tiny_spec, tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"optim": {"lr": 3e-3}, "model": {"output_mult": 2.0}, "value": 5.1}))
    spec = spec_from_dict({**tiny_spec, "hparams_from": {"pt": str(best)}})
    runs = {r.name: r for r in plan_runs(spec, 495, tmp_path)}
    pt, bert = runs["pt-40k-s0"].config, runs["bert-40k-s0"].config
    assert pt.optim.lr == 3e-3 and pt.model["output_mult"] == 2.0 and pt.model["base_hidden_size"] == 16
    assert bert.optim.lr == 1e-3 and bert.model["output_mult"] == 1.0 and bert.model["base_hidden_size"] == 16
    assert pt.out_dir == str(tmp_path / "runs" / "pt-40k-s0") and not pt.progress and pt.test_eval


@pytest.mark.parametrize("change, match", [
    ({"train": {"seed": 3}}, "train.seed: set by compare"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"budgets": ["lots"]}, "budgets"),
    ({"archs": ["gpt"]}, "archs"),
    ({"hparams": {"pt": {"model": {"hiden_size": 8}}}}, "model.hiden_size"),
    ({"hparams": {"pt": {"optim": {"lr": -1}}}}, "optim.lr"),
    ({"budget": [1]}, "budget: unknown compare key"),
])
def test_bad_spec_is_a_one_line_config_error(tiny_spec, change, match):
    with pytest.raises(ConfigError, match=match):
        spec_from_dict({**tiny_spec, **change})


def test_cpu_preset_sizes_every_run_within_two_percent():
    spec = load_spec(preset="compare-cpu", overrides=["seeds=[0]"])
    runs = plan_runs(spec, 4096, "unused")
    assert [r.name for r in runs[:3]] == ["pt-1M-s0", "bert-1M-s0", "ut-1M-s0"] and len(runs) == 9
    assert all(abs(r.counts["total"] - r.budget) <= 0.02 * r.budget for r in runs)
    assert {r.train_tokens for r in runs} == {spec.token_budget}
    assert count_label(1_500_000) == "1.5M" and count_label(1_234_567) == "1234567" and count_label(40_000) == "40k"


def test_dry_run_prints_the_plan(tiny_spec, tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", "--config", str(spec_file), "--budgets", "20k", "--archs", "bert",
                              "--seeds", "0,1", "--dry-run"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "bert-20k-s0" in printed and "bert-20k-s1" in printed and "pt-" not in printed
