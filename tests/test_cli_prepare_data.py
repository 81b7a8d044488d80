"""``probformer prepare-data`` (probformer.cli.prepare_data): the flags reach the pipeline, the summary
is printed, and wrong input (a missing source, a tokenizer without [MASK], other settings in a used
directory) is one line on stderr with exit code 2."""

from __future__ import annotations

import json

import pytest
from conftest import synthetic_documents

from probformer.cli import build_parser, main
from probformer.data.shards import PreparedShards
from probformer.data.tokenization import train_wordpiece


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": d}) + "\n" for d in synthetic_documents(40, 60)))
    return path


FLAGS = ["--vocab-size", "300", "--shard-tokens", "1k", "--valid-tokens", "400", "--test-tokens", "400",
         "--text-field", "body", "--seed", "3", "--tokenizer-sample", "0.02", "--workers", "2"]


def test_prepare_data_writes_the_shards_and_prints_a_summary(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare-data", str(source), str(out), *FLAGS]) == 0
    printed = capsys.readouterr().out
    shards = PreparedShards.open(out)
    assert shards.settings | {"source": str(source), "text_field": "body", "split_seed": 3, "vocab_size": 300,
                              "shard_tokens": 1000, "valid_tokens": 400, "test_tokens": 400,
                              "tokenizer_sample_bytes": 20_000, "lowercase": True} == shards.settings
    train = f"train  {shards.num_tokens('train'):>15,} {shards.num_documents('train'):>12,} {1:>7}"
    assert train in printed.splitlines()  # one work unit (4 MB) holds this corpus: one shard
    assert "bytes per token on disk" in printed and str(out) in printed
    # the same command again: nothing to do, the same summary
    assert main(["prepare-data", str(source), str(out), *FLAGS]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_prepare_data_is_listed_and_documented():
    help_text = build_parser().format_help()
    assert "prepare-data" in help_text
    sub = build_parser()._subparsers._group_actions[0].choices["prepare-data"].format_help()
    for flag in ("--tokenizer", "--vocab-size", "--tokenizer-sample", "--workers", "--valid-tokens", "--test-tokens",
                 "--shard-tokens", "--seed", "--text-field", "--no-lowercase"):
        assert flag in sub


def test_wrong_input_is_one_line_and_exit_2(source, tmp_path, capsys):
    assert main(["prepare-data", str(tmp_path / "missing.jsonl"), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data source") and "not found" in err and err.count("\n") == 1

    tokenizer = train_wordpiece(synthetic_documents(10, 30), 200)
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[MASK]"]
    spec["model"]["vocab"].pop("[MASK]")
    (tmp_path / "no-mask.json").write_text(json.dumps(spec))
    assert main(["prepare-data", str(source), str(tmp_path / "b"), "--tokenizer", str(tmp_path / "no-mask.json"),
                 "--text-field", "body"]) == 2
    err = capsys.readouterr().err
    assert "the tokenizer has no [MASK] token" in err and err.count("\n") == 1

    assert main(["prepare-data", str(source), str(tmp_path / "c"), *FLAGS]) == 0
    capsys.readouterr()
    assert main(["prepare-data", str(source), str(tmp_path / "c"), *FLAGS, "--no-lowercase"]) == 2
    err = capsys.readouterr().err
    assert "other settings (lowercase: True there, False now)" in err and err.count("\n") == 1

    with pytest.raises(SystemExit):  # argparse: a count must be positive
        main(["prepare-data", str(source), str(tmp_path / "d"), "--workers", "0"])
    assert "expected a positive count" in capsys.readouterr().err
