"""probformer.cli.predict: `probformer predict` prints the library's predictions (word/LABEL lines, or
LABEL (p=..) text), --json and --file, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json

import pytest
from task_models import LABELS, TEXTS, export_task_model

from probformer.cli import main
from probformer.inspection.predict import predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-runs")
    return {task: export_task_model("pt", task, root / task / "model").parent
            for task in ("token-classification", "text-classification")}


def test_token_task_prints_word_slash_label_per_text(runs, capsys):
    run = runs["token-classification"]
    assert main(["predict", str(run), *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = predict(run, TEXTS[:2])
    assert lines == [" ".join(f"{w.word}/{w.label}" for w in p.words) for p in want]
    assert lines[0].startswith("The/") and " ,/" in lines[0]  # as typed; punctuation is a word

    assert main(["predict", str(run / "model"), TEXTS[0], "--json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert set(got) == {"text", "words"} and got["text"] == TEXTS[0]
    assert [set(w) for w in got["words"]] == [{"word", "start", "end", "label", "probability"}] * len(want[0].words)
    assert [w["label"] for w in got["words"]] == [w.label for w in want[0].words]
    assert all(0 < w["probability"] <= 1 for w in got["words"])


def test_text_task_prints_label_probability_and_text(runs, tmp_path, capsys, monkeypatch):
    run = runs["text-classification"]
    file = tmp_path / "texts.txt"
    file.write_text(f"{TEXTS[0]}\n\n  \n{TEXTS[1]}\n", encoding="utf-8")  # blank lines skipped
    assert main(["predict", str(run), TEXTS[2], "--file", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = predict(run, [TEXTS[2], TEXTS[0], TEXTS[1]])
    width = max(len(p.label) for p in want)
    assert lines == [f"{p.label:<{width}} (p={p.probability:.2f})  {p.text}" for p in want]

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TEXTS[3]}\n"))
    assert main(["predict", str(run), "--file", "-", "--json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert set(got) == {"text", "label", "probability", "probabilities"} and got["text"] == TEXTS[3]
    assert list(got["probabilities"]) == list(LABELS) and sum(got["probabilities"].values()) == pytest.approx(1)
    assert got["probability"] == got["probabilities"][got["label"]]

    # options may come between the run and the texts, and between texts
    assert main(["predict", str(run), "--json", TEXTS[0], "--batch-size", "1", TEXTS[1]]) == 0
    assert [g["text"] for g in json.loads(capsys.readouterr().out)] == TEXTS[:2]


def test_errors_exit_2_with_one_line(runs, tmp_path, capsys):
    from task_models import tokenizer_file
    from tokenizers import Tokenizer

    from probformer.models import architecture

    mlm = tmp_path / "mlm"
    tokenizer = tokenizer_file(tmp_path / "tok")
    entry = architecture("pt")
    entry.export(entry.build(**entry.coord_check_base(32, Tokenizer.from_file(str(tokenizer)).get_vocab_size(), 16)),
                 mlm / "model", tokenizer)
    cases = [
        ([str(tmp_path / "nope"), "the cat"], "not found"),
        ([str(tmp_path), "the cat"], "no config.json"),
        ([str(mlm), "the cat"], "this is a fill-mask model; use `probformer fill-mask`"),
        ([str(runs["text-classification"])], "no text to label"),
        ([str(runs["text-classification"]), "--file", str(tmp_path / "missing.txt")], "not found"),
        ([str(runs["token-classification"]), "the cat", "  "], "text 2 has no words"),
    ]
    for args, message in cases:
        assert main(["predict", *args]) == 2, args
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    # and fill-mask refuses a task model the same way
    assert main(["fill-mask", str(runs["token-classification"]), "the [MASK]"]) == 2
    assert "this is a token-classification model; use `probformer predict`" in capsys.readouterr().err
