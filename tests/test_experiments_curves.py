"""probformer.experiments.curves (``probformer curves``): evaluations read from a run's metrics log as loss
against tokens seen, the point where a run leaves the unigram plateau, and the command on real tiny runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from probformer.cli import main
from probformer.config import ConfigError
from probformer.experiments.curves import Curve, plateau_exit, plot_curves, read_evaluations, table

PT_TINY = {"arch": "pt", "hidden_size": 16, "num_channels": 2, "rank": 8, "latent_size": 32, "num_iterations": 2,
           "max_distance": 2}
BERT_TINY = {"arch": "bert", "hidden_size": 16, "num_heads": 2, "intermediate_size": 32, "num_layers": 1}


def write_run(run: Path, records: list[dict]) -> Path:
    """A run directory by hand: 4 x 2 (grad_accum) sequences of 8 tokens per step = 64 tokens per step."""
    run.mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"batch_size": 4, "grad_accum": 2, "data": {"seq_len": 8}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_evaluations_by_step_in_tokens_seen_and_the_plateau_exit(tmp_path):
    run = write_run(tmp_path / "run", [
        {"kind": "info", "step": 0, "parameters": 10},
        {"kind": "train", "step": 10, "loss": 6.5, "tokens_seen": 640},
        {"kind": "valid", "step": 10, "loss": 6.30, "unigram_loss": 6.34, "tokens": 51},
        {"kind": "eval_ood", "step": 10, "loss": 6.90, "unigram_loss": 6.95, "tokens": 40},
        {"kind": "valid", "step": 20, "loss": 6.25, "unigram_loss": 6.34, "tokens": 51},
        {"kind": "valid", "step": 20, "loss": 6.21, "unigram_loss": 6.34, "tokens": 51},  # replayed after a resume
        {"kind": "eval_ood", "step": 20, "loss": 6.70, "unigram_loss": 6.95, "tokens": 40},
        {"kind": "valid", "step": 30, "loss": "nan", "unigram_loss": 6.34, "tokens": 51},  # diverged
        {"kind": "test", "step": 30, "loss": 6.0, "unigram_loss": 6.4},
    ])
    evaluations = read_evaluations(run)
    assert [(e["step"], e["tokens"]) for e in evaluations] == [(10, 640), (20, 1280), (30, 1920)]
    assert evaluations[1]["valid_loss"] == 6.21 and evaluations[1]["eval_ood_loss"] == 6.70
    assert math.isnan(evaluations[2]["valid_loss"]) and "eval_ood_loss" not in evaluations[2]

    valid = Curve.of("run", evaluations)
    assert valid.steps == (10, 20) and valid.tokens == (640, 1280) and valid.loss == (6.30, 6.21)
    assert plateau_exit(valid, 0.1) == 1  # 6.21 < 6.34 - 0.1; 6.30 is not
    assert plateau_exit(valid, 0.0) == 0 and plateau_exit(valid, 0.2) is None
    ood = Curve.of("run", evaluations, "ood")
    assert ood.loss == (6.90, 6.70) and ood.unigram == (6.95, 6.95) and plateau_exit(ood, 0.1) == 1
    assert Curve.of("run", evaluations, "other").tokens == ()
    printed = table([valid], ["diverged"], "valid", 0.1)
    assert "after 1,280 tokens (step 20)" in printed and "6.2100" in printed
    assert "not within 1,280 tokens" in table([valid], ["diverged"], "valid", 0.2)
    drawn = plot_curves([valid, ood], tmp_path / "c.png", margin=0.1)
    assert drawn["run"]["exit"] == 1280 and (tmp_path / "c.png").stat().st_size > 0

    with pytest.raises(ConfigError, match="not a training run directory"):
        read_evaluations(tmp_path / "missing")


def test_padded_rows_count_the_tokens_seen_and_task_runs_say_what_loss(tmp_path):
    # Evaluation records carry the real tokens seen (padded rows hold fewer than batch x seq_len); a task
    # run's plot is labelled by its task, not as a masked-LM loss.
    from probformer.experiments.curves import baseline_label, loss_label, run_task

    run = write_run(tmp_path / "tagger", [
        {"kind": "info", "step": 0, "task": "token-classification"},
        {"kind": "valid", "step": 10, "loss": 1.2, "unigram_loss": 2.0, "tokens": 51, "tokens_seen": 300},
        {"kind": "valid", "step": 20, "loss": 0.9, "unigram_loss": 2.0, "tokens": 51, "tokens_seen": 620},
    ])
    assert [e["tokens"] for e in read_evaluations(run)] == [300, 620]  # not 640 and 1280
    old = write_run(tmp_path / "mlm", [{"kind": "info", "step": 0},
                                       {"kind": "valid", "step": 10, "loss": 6.3, "unigram_loss": 6.3, "tokens": 5}])
    assert (run_task(run), run_task(old)) == ("token-classification", "fill-mask")
    assert loss_label(["fill-mask"]) == "MLM loss (nats)"
    assert loss_label(["token-classification", "text-classification"]) == "label cross-entropy (nats)"
    assert loss_label(["fill-mask", "text-classification"]) == "loss (nats)"
    # the dashed line is the label prior's loss for a task run (same record key), not a unigram loss
    assert baseline_label(["fill-mask"]) == "unigram baseline"
    assert baseline_label(["token-classification"]) == "label-prior baseline"
    assert "label prior" in baseline_label(["fill-mask", "token-classification"])


@pytest.fixture(scope="module")
def tiny_runs(tiny_run_config, tmp_path_factory) -> list[Path]:
    """A PT and a BERT run of 12 steps of 8 x 32 tokens, evaluated every 4 steps, with an eval text."""
    import torch

    from probformer.training.trainer import train

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("curves")
    other = root / "other.txt"
    other.write_text("\n\n".join(synthetic_documents_for_eval()))
    runs = []
    for model in (PT_TINY, BERT_TINY):
        config = tiny_run_config(root / model["arch"], model=model, steps=12, batch_size=8, optim={"lr": 1e-2},
                                 eval_interval=4, eval_batches=2, checkpoint_interval=0, log_interval=4,
                                 test_eval=False, device="cpu", threads=1, eval_texts={"other": str(other)})
        train(config, log=lambda *_: None)
        runs.append(Path(config.out_dir))
    torch.set_num_threads(threads)
    return runs


def synthetic_documents_for_eval() -> list[str]:
    from conftest import synthetic_documents

    return synthetic_documents(n_docs=6, seed=99)  # the training vocabulary, other documents


def test_curves_command_plots_runs_and_reports_the_plateau_exit(tiny_runs, tmp_path, capsys):
    out = tmp_path / "plot.png"
    assert main(["curves", *map(str, tiny_runs), "--out", str(out), "--labels", "PT,BERT", "--margin", "0"]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 0 and f"plot: {out}" in printed
    lines = {line.split()[0]: line for line in printed.splitlines()[1:3]}
    for label, run in zip(("PT", "BERT"), tiny_runs, strict=True):
        curve = Curve.of(label, read_evaluations(run))
        summary = json.loads((run / "summary.json").read_text())
        assert curve.steps == (4, 8, 12) and curve.tokens == (1024, 2048, 3072)  # 8 x 32 tokens per step
        assert curve.loss[-1] == summary["valid_loss"] and curve.unigram[-1] == summary["valid_unigram_loss"]
        i = plateau_exit(curve, 0.0)
        expected = "not within 3,072 tokens" if i is None else f"after {curve.tokens[i]:,} tokens"
        assert expected in lines[label] and "completed" in lines[label]
    # the eval text's curve: the same tokens, its own loss and baseline
    assert main(["curves", str(tiny_runs[0]), "--text", "other", "--out", str(tmp_path / "o.png")]) == 0
    other = Curve.of("pt", read_evaluations(tiny_runs[0]), "other")
    assert other.tokens == (1024, 2048, 3072) and f"{other.loss[-1]:.4f}" in capsys.readouterr().out


def test_curves_command_errors(tiny_runs, tmp_path, capsys):
    assert main(["curves", str(tiny_runs[0]), "--text", "ewt", "--out", str(tmp_path / "x.png")]) == 2
    assert "no finite 'ewt' evaluation" in capsys.readouterr().err
    assert main(["curves", *map(str, tiny_runs), "--labels", "one", "--out", str(tmp_path / "x.png")]) == 2
    assert "1 labels for 2 run directories" in capsys.readouterr().err
    assert main(["curves", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_curves_tolerates_a_torn_last_record_and_makes_the_plot_directory(tiny_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "torn"
    shutil.copytree(tiny_runs[0], run)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "valid", "step": 16, "lo')  # a kill while appending
    with pytest.warns(UserWarning, match="torn last line"):
        assert [e["step"] for e in read_evaluations(run)] == [4, 8, 12]
    out = tmp_path / "new" / "dir" / "plot.png"
    assert main(["curves", str(run), "--out", str(out)]) == 0 and out.stat().st_size > 0
    assert main(["curves", str(run), "--out", str(tmp_path / "plot.jpg")]) == 2
    assert "the plot is a PNG file" in capsys.readouterr().err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{torn", *lines[1:]]) + "\n")
    assert main(["curves", str(run), "--out", str(out)]) == 2
    assert "metrics.jsonl:2: not a JSON record" in capsys.readouterr().err
