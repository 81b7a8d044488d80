"""probformer.experiments.compare (``probformer compare``): spec loading, sizing plan, a tiny end-to-end
comparison (with an out-of-domain CoNLL-U text and learning curves) that is interrupted, resumed, read back
without retraining, re-rendered and extended with an architecture that diverges; the verdicts along training
against hand-computed noise; hyperparameters read from a sweep; the bundled CPU specs and their sweeps."""

from __future__ import annotations

import csv
import json
import math
import shutil
from importlib import resources
from pathlib import Path

import pytest
import yaml

import probformer.experiments.compare.run as compare_mod
from probformer.cli import main
from probformer.config import ConfigError, read_yaml
from probformer.experiments.compare import compare, load_spec, plan_runs, plot_loss, rerender, spec_from_dict
from probformer.experiments.compare.report import along_training, checkpoint_steps, curve_tables, lead_table, render
from probformer.experiments.compare.run import COLUMNS, CURVE_COLUMNS
from probformer.experiments.sweep import load_sweep_spec
from probformer.sizing import units

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
def tiny_spec(tiny_data_section) -> dict:
    """pt and bert at 20k and 40k parameters, one seed, 12 steps of 8 x 32 tokens on the synthetic corpus."""
    return {
        "budgets": ["20k", "40k"],
        "token_budget": 12 * 8 * 32,
        "archs": ["pt", "bert"],
        "seeds": [0],
        "train": {"data": tiny_data_section, "batch_size": 8, "eval_interval": 4, "eval_batches": 2,
                  "checkpoint_interval": 4, "log_interval": 2, "tensorboard": False, "device": "cpu", "threads": 1},
        "models": {"pt": PT_BASE, "bert": BERT_BASE, "ut": BERT_BASE},
        "hparams": {"pt": {"optim": {"lr": 1e-2}}, "bert": {"optim": {"lr": 1e-3}}},
    }


@pytest.fixture(scope="module")
def ood_conllu(tmp_path_factory) -> Path:
    """A synthetic CoNLL-U treebank: other documents in the training vocabulary, 15-word sentences,
    each word's head the previous word (the heads do not matter here, only the words)."""
    from conftest import synthetic_documents

    sentences = []
    for doc in synthetic_documents(n_docs=6, seed=99):
        words = doc.split()
        for start in range(0, len(words), 15):
            chunk = words[start:start + 15]
            sentences.append("\n".join(f"{i}\t{w}\t{w}\tX\t_\t_\t{i - 1}\tdep\t_\t_"
                                       for i, w in enumerate(chunk, 1)))
    path = tmp_path_factory.mktemp("ood") / "ood.conllu"
    path.write_text("\n\n".join(sentences) + "\n\n")
    return path


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


def test_compare_end_to_end_resume_cache_and_divergence(tiny_spec, ood_conllu, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    tiny = {**tiny_spec, "eval_texts": {"ood": str(ood_conllu)}, "curve_fractions": [0.25, 1.0]}
    spec = spec_from_dict(tiny)

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
    for name in ("results.csv", "curves.csv", "results.md", "loss_vs_params.png", "loss_vs_flops.png",
                 "learning_curves.png", "spec.yaml"):  # command.txt: written by the CLI (step 3)
        assert (out / name).stat().st_size > 0, name
    table = read_csv(out / "results.csv")
    ood = ("eval_ood_loss", "eval_ood_unigram_loss")
    assert len(table) == len(rows) == 4 and list(table[0]) == [*COLUMNS, *ood]
    for row in table:
        assert row["status"] == "completed" and row["steps"] == "12" and row["train_tokens"] == "3072"
        assert all(row[k] != "" for k in table[0] if k != "reason"), row
        assert math.isfinite(float(row["test_loss"])) and float(row["valid_loss"]) < math.log(512)
        assert float(row["train_flops"]) == pytest.approx(float(row["flops_per_token"]) * 3072)
        assert abs(int(row["params"]) - int(row["budget"])) <= 0.02 * int(row["budget"])
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert float(row["eval_ood_loss"]) == summary["eval_ood_loss"] != summary["valid_loss"]
    assert [r["resumed"] for r in table] == ["False", "False", "False", "True"]
    # learning curves: every run evaluated at steps 4, 8, 12 (the resumed one too, once each), 256 tokens a step,
    # the last point the run's final valid loss
    curves = read_csv(out / "curves.csv")
    assert list(curves[0]) == [*CURVE_COLUMNS, *ood] and len(curves) == 4 * 3
    for row in table:
        mine = [c for c in curves if (c["arch"], c["budget"]) == (row["arch"], row["budget"])]
        assert [(c["step"], c["tokens"]) for c in mine] == [("4", "1024"), ("8", "2048"), ("12", "3072")]
        assert mine[-1]["valid_loss"] == row["valid_loss"] and mine[-1]["eval_ood_loss"] == row["eval_ood_loss"]
    md = (out / "results.md").read_text()
    assert "| pt | 20k |" in md and "| bert | 40k |" in md and "| ood loss | ood unigram |" in md
    assert "- 20k:" in md and "- 40k:" in md and "lowest mean valid loss" in md and "lowest mean ood loss" in md
    assert "## Lowest ood loss per budget (out of domain)" in md and "Lowest mean ood loss: 20k " in md
    assert md.count("Along training: at 1,024 tokens (33%)") == 4  # valid and ood, each budget
    assert "## Loss along training: valid" in md and "## Loss along training: ood" in md
    assert "| 33% (1,024 tokens) | 100% (3,072 tokens) |" in md  # the evaluations closest to 25% and 100%
    assert "![learning curves](learning_curves.png)" in md
    # results.md is its re-rendering from the two CSVs
    md_before = md
    (out / "results.md").unlink()
    rerender(spec, out)
    assert (out / "results.md").read_text() == md_before

    # 3. again through the CLI entry point: nothing is retrained (train would raise), same numbers
    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(compare_mod, "train", no_training)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny))
    assert main(["compare", "--config", str(spec_file), "--out-dir", str(out)]) == 0
    assert read_csv(out / "results.csv") == table and read_csv(out / "curves.csv") == curves
    printed = capsys.readouterr().out
    assert "| pt | 20k |" in printed and "Along training" in printed
    assert len((out / "command.txt").read_text().splitlines()) == 2  # a comment + the command, per CLI invocation

    # 4. add an architecture whose runs diverge: only its runs train; reported and plotted as diverged,
    # and left out of the learning curves
    calls.clear()
    monkeypatch.setattr(compare_mod, "train", recording_train(calls))
    spec = spec_from_dict({**tiny, "archs": ["pt", "bert", "ut"], "hparams": {**tiny["hparams"], "ut": DIVERGING}})
    rows = compare(spec, out)
    assert calls == [("ut-20k-s0", False), ("ut-40k-s0", False)]
    diverged = [r for r in read_csv(out / "results.csv") if r["arch"] == "ut"]
    assert [r["status"] for r in diverged] == ["diverged", "diverged"]
    assert all(r["valid_loss"] == "" and r["test_loss"] == "" and r["eval_ood_loss"] == ""
               and "non-finite" in r["reason"] for r in diverged)
    assert read_csv(out / "curves.csv") == curves
    md = (out / "results.md").read_text()
    assert "| ut | 20k |" in md and "**1** (seed 0)" in md and "excluded: ut (all 1 seeds diverged)" in md
    drawn = plot_loss(rows, "params", tmp_path / "p.png", spec)
    assert [k for _, k in drawn["ut"]["diverged"]] == [1, 1] and all(math.isnan(m) for m in drawn["ut"]["mean"])
    assert all(math.isfinite(m) for m in drawn["pt"]["mean"]) and not drawn["pt"]["diverged"]
    drawn = compare_mod.plot_learning_curves([{k: _typed(k, v) for k, v in c.items()} for c in curves],
                                             tmp_path / "lc.png", spec)
    assert set(drawn) == {(t, b, a) for t in ("valid", "ood") for b in (20_000, 40_000) for a in ("pt", "bert")}
    assert drawn[("valid", 40_000, "bert")]["tokens"] == [1024, 2048, 3072]

    # 5. a changed spec does not silently reuse runs trained with other hyperparameters
    changed = spec_from_dict({**tiny, "hparams": {**tiny["hparams"], "pt": {"optim": {"lr": 3e-3}}}})
    with pytest.raises(ConfigError, match="pt-20k-s0 holds a run with a different optim"):
        compare(changed, out)


def _typed(key: str, value: str):
    return value if key == "arch" else int(value) if key in ("budget", "seed", "step", "tokens") else float(value)


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
    assert units.count_label(1_500_000) == "1.5M" and units.count_label(1_234_567) == "1234567"
    assert units.count_label(40_000) == "40k"


def test_dry_run_prints_the_plan(tiny_spec, tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    assert main(["compare", "--config", str(spec_file), "--budgets", "20k", "--archs", "bert", "--seeds", "0,1",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "bert-20k-s0" in printed and "bert-20k-s1" in printed and "pt-" not in printed


# -- verdicts along training -------------------------------------------------------------------------
def curve_row(arch: str, seed: int, step: int, valid: float, ood: float = math.nan) -> dict:
    return {"arch": arch, "budget": 1_000_000, "seed": seed, "step": step, "tokens": step * 4096,
            "valid_loss": valid, "valid_unigram_loss": 6.0, "eval_ood_loss": ood, "eval_ood_unigram_loss": 6.5}


def test_ranking_at_half_and_full_budget_against_hand_computed_noise():
    # step 250 (half): pt 5.50, 5.52 and bert 5.60, 5.64 -> pt ahead by 0.11, noise sqrt(0.01414^2/2 + 0.02828^2/2)
    # step 500 (end): pt 5.10, 5.12 and bert 5.05, 5.07 -> bert below pt by 0.05, noise sqrt(2 x 0.01414^2 / 2)
    rows = [curve_row("pt", 0, 250, 5.50), curve_row("pt", 1, 250, 5.52), curve_row("bert", 0, 250, 5.60),
            curve_row("bert", 1, 250, 5.64), curve_row("pt", 0, 500, 5.10), curve_row("pt", 1, 500, 5.12),
            curve_row("bert", 0, 500, 5.05), curve_row("bert", 1, 500, 5.07),
            curve_row("pt", 0, 50, 6.05), curve_row("pt", 1, 50, 5.85), curve_row("bert", 0, 50, 6.0),
            curve_row("bert", 1, 50, 6.0)]
    half_noise, full_noise = math.sqrt(0.0002 / 2 + 0.0008 / 2), math.sqrt(0.0002)
    assert checkpoint_steps(rows, [0.1, 0.5, 1.0]) == [(0.1, 50, 204_800), (0.5, 250, 1_024_000), (1.0, 500, 2_048_000)]
    assert checkpoint_steps(rows, [0.35, 0.45]) == [(0.5, 250, 1_024_000)]  # steps 175 and 225: both nearest 250
    assert checkpoint_steps(rows, [0.3]) == [(0.1, 50, 204_800)]  # step 150: as near 50 as 250, the earlier
    line = along_training(rows, ["pt", "bert"])[1_000_000]
    assert line == (f"Along training: at 1,024,000 tokens (50%) pt < bert (pt ahead by 0.1100, "
                    f"{0.11 / half_noise:.2f}x noise: real); at 2,048,000 tokens bert < pt; ranking changed: "
                    f"bert now below pt (by 0.0500, {0.05 / full_noise:.2f}x noise: real).")
    assert f"{0.05 / full_noise:.2f}" == "3.54" and f"{0.11 / half_noise:.2f}" == "4.92"
    # the table: loss at each fraction, and per seed the first evaluation 0.1 below the unigram loss (6.0)
    table = curve_tables(rows, ["pt", "bert"], [0.1, 0.5, 1.0])
    assert table[0] == ("| arch | budget | 10% (204,800 tokens) | 50% (1,024,000 tokens) | 100% (2,048,000 tokens) "
                        "| first 0.1 below unigram (tokens, per seed) |")
    assert table[2] == ("| pt | 1M | 5.9500 ± 0.1414 | 5.5100 ± 0.0141 | 5.1100 ± 0.0141 "
                        "| s0: 1,024,000, s1: 204,800 |")
    assert table[3].startswith("| bert | 1M | 6.0000 ± 0.0000 | 5.6200 ± 0.0283 |")
    # a ranking that holds; an eval text's own ranking (pt ahead only at the end, within the noise)
    same = [r for r in rows if r["step"] != 500] + [curve_row("pt", s, 500, 5.0 + s / 100) for s in (0, 1)] \
        + [curve_row("bert", s, 500, 5.2) for s in (0, 1)]
    assert along_training(same, ["pt", "bert"])[1_000_000].endswith("at 2,048,000 tokens pt < bert; ranking unchanged.")
    ood = [{**r, "eval_ood_loss": {250: 6.4, 500: 6.3}.get(r["step"], 6.45) + (0.001 if r["arch"] == "pt" else 0)
            + r["seed"] * 0.01} for r in rows]
    assert "pt ahead by" not in along_training(ood, ["pt", "bert"], "ood")[1_000_000]
    assert along_training([r for r in rows if r["step"] == 500], ["pt", "bert"]) == {}  # one evaluation: no curve

    # the gap behind the final leader (bert) at each checkpoint: pt - bert = -0.05, -0.11, +0.05 (noise as above)
    lead = lead_table(rows, ["pt", "bert"], [0.1, 0.5, 1.0])
    assert lead[0] == ("| budget | gap | 10% (204,800 tokens) | 50% (1,024,000 tokens) | 100% (2,048,000 tokens) "
                       "| trend |")
    noise_10 = math.sqrt(0.1414214**2 / 2)
    assert lead[2] == (f"| 1M | pt - bert | -0.050, {0.05 / noise_10:.1f}x | -0.110, {0.11 / half_noise:.1f}x "
                       f"| +0.050, {0.05 / full_noise:.1f}x | widens overall (-0.050 -> +0.050), not monotone |")
    assert lead[-1] == "- 1M: leader at each checkpoint: 10% pt, 50% pt, 100% bert."
    gaps = {50: 0.3, 250: 0.2, 500: 0.05}
    steady = [curve_row(arch, seed, step, 5.0 + seed / 50 + (arch == "pt") * gap)
              for step, gap in gaps.items() for arch in ("pt", "bert") for seed in (0, 1)]
    assert lead_table(steady, ["pt", "bert"], [0.1, 0.5, 1.0])[2].endswith("| narrows at every checkpoint |")


def test_out_of_domain_verdict_per_budget(tiny_spec):
    spec = spec_from_dict({**tiny_spec, "eval_texts": {"ood": "unused.conllu"}, "seeds": [0, 1]})

    def row(arch, seed, valid, ood):
        return {"arch": arch, "budget": 20_000, "seed": seed, "status": "completed", "params": 20_000,
                "non_embedding_params": 5_000, "train_flops": 1e9, "valid_loss": valid, "test_loss": valid,
                "valid_unigram_loss": 6.0, "eval_ood_loss": ood, "eval_ood_unigram_loss": 6.5}

    rows = [row("pt", 0, 5.00, 6.40), row("pt", 1, 5.02, 6.44), row("bert", 0, 5.10, 6.30), row("bert", 1, 5.12, 6.30)]
    md = render(rows, [], spec, "sources")
    # in domain pt by 0.10 = 7.07x its noise sqrt(0.0002); out of domain bert by 0.12 = 6.00x sqrt(0.0008 / 2 + 0)
    assert "- 20k: pt has the lowest mean valid loss (5.0100), 0.1000 nats below bert (5.1100) = 7.07x" in md
    assert ("- 20k: bert has the lowest mean ood loss (6.3000), 0.1200 nats below pt (6.4200) = 6.00x the seed noise "
            "(0.0200)") in md
    assert "Lowest mean ood loss: 20k bert (in domain pt: different)." in md
    assert ("| pt | 20k | 20,000 | 5,000 | 1e+09 | 5.0100 ± 0.0141 | 5.0100 ± 0.0141 | 6.0000 | 6.4200 ± 0.0283 "
            "| 6.5000 |") in md
    assert "Along training" not in md and "## Loss along training" not in md  # no curves given


# -- spec checks -------------------------------------------------------------------------------------
def test_missing_eval_text_fails_before_any_training(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_mod, "train", lambda *a, **k: pytest.fail("trained before checking eval_texts"))
    spec = spec_from_dict({**tiny_spec, "eval_texts": {"ewt": str(tmp_path / "en_ewt-ud-dev.conllu")}})
    with pytest.raises(ConfigError, match=r"eval_texts.ewt: .* not found \(UD treebanks: universaldependencies.org"):
        compare(spec, tmp_path / "out")
    with pytest.raises(ConfigError, match="train.eval_texts: set by compare per run; use .* eval_texts"):
        spec_from_dict({**tiny_spec, "train": {**tiny_spec["train"], "eval_texts": {"ewt": "x"}}})
    with pytest.raises(ConfigError, match="eval_texts"):
        spec_from_dict({**tiny_spec, "eval_texts": {"bad name": "x"}})
    with pytest.raises(ConfigError, match="curve_fractions"):
        spec_from_dict({**tiny_spec, "curve_fractions": [0.5, 1.5]})


def test_hparams_from_must_be_tuned_on_the_spec_base_model(tiny_spec, tmp_path):
    best = tmp_path / "best.json"
    tuned = {"optim": {"lr": 3e-3}, "model": {"arch": "pt", "head_dropout": 0.0}}
    best.write_text(json.dumps({**tuned, "base_model": {"arch": "pt", **PT_BASE, "head_dropout": 0.0}}))
    spec = spec_from_dict({**tiny_spec, "hparams_from": {"pt": str(best)}})
    pt = {r.name: r for r in plan_runs(spec, 495, tmp_path)}["pt-20k-s0"].config
    assert pt.optim.lr == 3e-3 and pt.model["head_dropout"] == 0.0
    best.write_text(json.dumps({**tuned, "base_model": {"arch": "pt", **PT_BASE, "hidden_size": 32}}))
    with pytest.raises(ConfigError, match=r"tuned on another base model: head_dropout 0.1 \(models.pt: 0.0\), "
                                          r"hidden_size 32 \(models.pt: 16\)"):
        plan_runs(spec_from_dict({**tiny_spec, "hparams_from": {"pt": str(best)}}), 495, tmp_path)
    # a spec is checked without reading the files it names; planning reads them
    missing = spec_from_dict({**tiny_spec, "hparams_from": {"bert": str(tmp_path / "missing.json")}})
    with pytest.raises(ConfigError, match="hparams_from.bert: .*missing.json not found .* run the sweep first"):
        plan_runs(missing, 495, tmp_path)


def test_cpu_2m_preset_and_its_sweeps():
    """compare-cpu-2m: 4 budgets x 3 archs within 2%, one epoch of 500 steps, evaluated every 50; each
    arch's point read from its sweep-<arch>-2m, which trains the compare's base model on its data."""
    spec = load_spec(preset="compare-cpu-2m", overrides=["seeds=[0]", "hparams_from={}"])
    runs = plan_runs(spec, 4096, "unused")
    assert len(runs) == 12 and sorted({r.budget for r in runs}) == [500_000, 1_000_000, 2_000_000, 4_000_000]
    assert all(abs(r.counts["total"] - r.budget) <= 0.02 * r.budget for r in runs)
    assert {(r.train_tokens, r.config.total_steps, r.config.eval_interval) for r in runs} == {(2_048_000, 500, 50)}
    assert all(r.config.eval_texts == {"ewt": "data/ud-english-ewt/en_ewt-ud-dev.conllu"} for r in runs)
    assert all(r.config.checkpoint_interval == 50 for r in runs)
    raw = read_yaml(resources.files("probformer.experiments.specs") / "compare-cpu-2m.yaml")  # before the sweeps
    for arch in spec.archs:
        sweep = load_sweep_spec(preset=f"sweep-{arch}-2m")
        assert raw["hparams_from"][arch] == f"{sweep.out_dir}/best.json"
        assert sweep.train["model"] == {"arch": arch, **spec.models[arch]}
        for key in ("data", "batch_size", "eval_batches"):
            assert sweep.train[key] == spec.train[key], (arch, key)
        assert sweep.train["token_budget"] == spec.token_budget
        assert {"optim.lr", "optim.warmup_fraction"} <= set(sweep.search_space)
        if arch != "pt":
            dropouts = {"model.pre_layer_norm", "model.hidden_dropout", "model.attention_dropout"}
            assert dropouts <= set(sweep.search_space)


def test_gpu_20m_preset_is_cpu_2m_at_ten_times_the_tokens():
    """compare-gpu-20m: compare-cpu-2m's models, data and batch (so its sweeps' points apply) for 10 epochs,
    reading those points from the committed sweep results."""
    cpu = load_spec(preset="compare-cpu-2m", overrides=["hparams_from={}"])
    gpu = load_spec(preset="compare-gpu-20m", overrides=["hparams_from={}"])
    assert gpu.token_budget == 10 * cpu.token_budget
    assert (gpu.budgets, gpu.archs, gpu.seeds, gpu.models) == (cpu.budgets, cpu.archs, cpu.seeds, cpu.models)
    for key in ("data", "batch_size", "eval_batches"):
        assert gpu.train[key] == cpu.train[key], key
    assert {r.config.total_steps for r in plan_runs(gpu, 4096, "unused")} == {5000}
    raw = read_yaml(resources.files("probformer.experiments.specs") / "compare-gpu-20m.yaml")
    assert raw["hparams_from"] == {a: f"results/sweeps/{a}-2m/best.json" for a in ("pt", "bert", "ut")}


def test_compare_reads_the_point_a_sweep_chose(tiny_spec, tmp_path, monkeypatch):
    """A BERT sweep over lr, warmup, pre-LN and dropout at the compare's base model writes best.json;
    compare reuses that point at every budget (trials scored by a stand-in: pre-LN without dropout wins)."""
    pytest.importorskip("optuna")
    from probformer.experiments.sweep import SweepSpec, run_sweep

    sweep = SweepSpec(search_space={"optim.lr": [1e-3, 4e-3], "optim.warmup_fraction": [0.05],
                                    "model.pre_layer_norm": [False, True], "model.hidden_dropout": [0.0, 0.1]},
                      train={**tiny_spec["train"], "model": {"arch": "bert", **BERT_BASE},
                             "token_budget": tiny_spec["token_budget"]},
                      sampler="grid", n_trials=None, out_dir=str(tmp_path / "sweep"), study_name="bert")

    def scored(config, **_kwargs):
        m = config.model
        loss = 5.0 - 0.2 * m["pre_layer_norm"] + m["hidden_dropout"] + abs(config.optim.lr - 4e-3)
        return {"status": "completed", "valid_loss": loss, "step": config.total_steps}

    run_sweep(sweep, train_fn=scored, log=lambda *_: None)
    spec = spec_from_dict({**tiny_spec, "hparams_from": {"bert": str(tmp_path / "sweep" / "best.json")}})
    for run in (r for r in plan_runs(spec, 495, tmp_path) if r.arch == "bert"):
        m = run.config.model
        assert (run.config.optim.lr, run.config.optim.warmup_fraction) == (4e-3, 0.05)
        assert m["pre_layer_norm"] is True and m["hidden_dropout"] == 0.0 and m["base_hidden_size"] == 16
    assert "bert lr 0.004 (hparams_from " in compare_mod.markdown([], spec)

    # the result directory's spec.yaml holds the chosen point itself: it re-renders without the sweep
    def stand_in(config, **_kwargs):
        return {"status": "completed", "valid_loss": 4.0 + config.model["hidden_size"] / 1e3, "test_loss": 4.1,
                "valid_unigram_loss": 4.7, "step": config.total_steps}

    monkeypatch.setattr(compare_mod, "train", stand_in)
    out = tmp_path / "cmp"
    compare(spec, out)
    written = yaml.safe_load((out / "spec.yaml").read_text())
    assert written["hparams_from"] == {} and written["hparams_source"] == spec.hparams_from
    assert written["hparams"]["bert"]["model"] == {"pre_layer_norm": True, "hidden_dropout": 0.0}
    md, planned = (out / "results.md").read_text(), [r.config for r in plan_runs(spec, 495, out)]
    shutil.rmtree(tmp_path / "sweep")
    (out / "results.md").unlink()
    assert main(["compare", "--config", str(out / "spec.yaml"), "--out-dir", str(out), "--rerender"]) == 0
    assert (out / "results.md").read_text() == md
    assert [r.config for r in plan_runs(load_spec(out / "spec.yaml"), 495, out)] == planned  # the same runs


def test_lr_scale_multiplies_the_tuned_lr_of_one_arch(tiny_spec, tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"optim": {"lr": 3e-3}, "model": {}}))
    spec = spec_from_dict({**tiny_spec, "hparams_from": {"pt": str(best)}, "lr_scale": {"pt": 0.5}})
    runs = {r.name: r.config for r in plan_runs(spec, 495, tmp_path)}
    assert runs["pt-20k-s0"].optim.lr == 1.5e-3 and runs["bert-20k-s0"].optim.lr == 1e-3
    assert "pt lr 0.0015 (0.5x the lr of hparams_from " in compare_mod.markdown([], spec)
    for bad in (0, -2, True, "half", float("inf")):
        with pytest.raises(ConfigError, match="lr_scale.pt: expected a positive number"):
            spec_from_dict({**tiny_spec, "lr_scale": {"pt": bad}})
    with pytest.raises(ConfigError, match="lr_scale: expected a mapping keyed by architecture"):
        spec_from_dict({**tiny_spec, "lr_scale": {"gpt": 2}})


def test_lr_check_picks_the_lowest_loss_and_the_comparison_reuses_its_run(tiny_spec, tmp_path, monkeypatch):
    """Three lr_scale runs of pt and bert (bert's x2 diverges; losses from a stand-in with pt's optimum at
    x0.5 and bert's at x1): the check writes each arch's point with the winning lr, and a comparison that
    adopts the winners finds them trained under its own configuration and reads them back."""
    from probformer.experiments.compare import lr_check

    tuned = {"pt": tmp_path / "pt.json", "bert": tmp_path / "bert.json"}
    tuned["pt"].write_text(json.dumps({"optim": {"lr": 1e-2, "warmup_fraction": 0.1}, "model": {"arch": "pt"}}))
    tuned["bert"].write_text(json.dumps({"optim": {"lr": 1e-3}, "model": {"hidden_dropout": 0.1}}))
    calls = []

    def stand_in(config, **_kwargs):
        calls.append(config.out_dir)
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(config.to_dict()))
        best_lr = {"pt": 5e-3, "bert": 1e-3}[config.model["arch"]]
        if config.optim.lr > 1.5e-3 and config.model["arch"] == "bert":
            return {"status": "diverged", "step": 3}
        return {"status": "completed", "valid_loss": 4.0 + abs(math.log(config.optim.lr / best_lr)), "step": 12}

    monkeypatch.setattr(compare_mod, "train", stand_in)
    base = {**tiny_spec, "budgets": ["20k"], "hparams_from": {k: str(v) for k, v in tuned.items()}}
    dirs = {scale: tmp_path / f"x{scale}" for scale in (0.5, 1, 2)}
    for scale, out in dirs.items():
        compare(spec_from_dict({**base, "lr_scale": {"pt": scale, "bert": scale}}), out)
    (dirs[2] / "runs" / "pt-20k-s1").mkdir()  # another seed's unfinished run: not a point of the check
    check = tmp_path / "check"
    best = lr_check.write_check(list(dirs.values()), 20_000, 0, {k: str(v) for k, v in tuned.items()}, check)
    assert {a: p.lr for a, p in best.items()} == {"pt": 5e-3, "bert": 1e-3}
    pt = json.loads((check / "pt.json").read_text())
    assert pt["optim"] == {"lr": 5e-3, "warmup_fraction": 0.1} and pt["model"] == {"arch": "pt"}
    assert [p["lr"] for p in pt["lr_check"]["points"]] == [5e-3, 1e-2, 2e-2]
    bert_points = json.loads((check / "bert.json").read_text())["lr_check"]["points"]
    assert [p["status"] for p in bert_points] == ["completed", "completed", "diverged"]
    md = (check / "lr-check.md").read_text()
    assert ("- pt: lr 0.005 (0.5x the sweep's lr), 0.6931 nats below the next lr; the grid's lowest lr, so its "
            "optimum may lie lower.") in md  # a winner at the grid's edge says so
    assert "- bert: lr 0.001 (the sweep's lr kept), 0.6931 nats below the next lr.\n" in md
    assert (check / "lr-check.png").stat().st_size > 0
    assert len(read_csv(check / "lr-check.csv")) == 6

    calls.clear()
    chosen = spec_from_dict({**base, "hparams_from": {a: str(check / f"{a}.json") for a in ("pt", "bert")}})
    assert lr_check.main(["--runs", *map(str, dirs.values()), "--budget", "20k", "--tuned",
                          f"pt={tuned['pt']},bert={tuned['bert']}", "--out", str(check),
                          "--adopt", str(tmp_path / "main")]) == 0
    assert sorted(p.name for p in (tmp_path / "main" / "runs").iterdir()) == ["bert-20k-s0", "pt-20k-s0"]
    rows = compare(chosen, tmp_path / "main")
    assert calls == [] and [(r["arch"], r["valid_loss"]) for r in rows] == [("pt", 4.0), ("bert", 4.0)]
    with pytest.raises(ConfigError, match="holds a run with a different optim"):
        compare(chosen, dirs[1])  # the x1 check's pt run is not the chosen point
    with pytest.raises(SystemExit):
        lr_check.main(["--runs", str(tmp_path / "nothing"), "--budget", "20k", "--tuned", f"pt={tuned['pt']}",
                       "--out", str(check)])


def test_cpu_20m_preset_is_cpu_2m_at_ten_times_the_tokens_in_bf16():
    """compare-cpu-20m: compare-cpu-2m's models, data and batch at its two smallest budgets for 10 epochs,
    pinned to bf16 (never mixed inside one table), reading each arch's point from the lr check."""
    cpu = load_spec(preset="compare-cpu-2m", overrides=["hparams_from={}"])
    long = load_spec(preset="compare-cpu-20m", overrides=["hparams_from={}"])
    assert long.token_budget == 10 * cpu.token_budget and long.budgets == cpu.budgets[:2]
    assert (long.archs, long.seeds, long.models, long.eval_texts) == (cpu.archs, cpu.seeds, cpu.models, cpu.eval_texts)
    for key in ("data", "batch_size", "eval_batches"):
        assert long.train[key] == cpu.train[key], key
    assert long.train["precision"] == "bf16" and cpu.train["precision"] == "fp32"
    runs = plan_runs(long, 4096, "unused")
    assert {(r.config.total_steps, r.config.eval_interval, r.config.precision) for r in runs} == {(5000, 250, "bf16")}
    raw = read_yaml(resources.files("probformer.experiments.specs") / "compare-cpu-20m.yaml")
    assert raw["hparams_from"] == {a: f"results/compare/cpu-20m/lr-check/{a}.json" for a in ("pt", "bert", "ut")}
