"""probformer.training.mlm_data: which loader a masked-LM run trains with, and training on a directory
written by `probformer prepare-data` (data.source=DIR) and on sentence / document rows (data.rows):
end to end through the CLI, exact resume through the prefetching shard loader, the one-line errors of
an unfinished directory, padding never scored nor counted, a tokenizer whose special ids are not
probformer's, and the default run's loader unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from probformer.config import ConfigError
from probformer.data.batches import RankShards, TrainStream
from probformer.data.errors import DataError
from probformer.data.masking import IGNORE_INDEX
from probformer.data.shard_loader import Prefetcher, ShardBlockStream
from probformer.data.shards import PreparedShards
from probformer.training.distributed import ProcessContext
from probformer.training.metrics_log import read_metrics
from probformer.training.mlm_data import MaskedLMData, open_source
from probformer.training.trainer import train


def quiet(*_args, **_kwargs) -> None:
    pass


class Interrupt(Exception):
    pass


def on_prepared(tiny_run_config, directory: Path, out_dir: Path, *overrides: str):
    return tiny_run_config(out_dir, f"data.source={directory}", *overrides)


def strip(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("tokens_per_second", "parameters")}
            for r in read_metrics(run / "metrics.jsonl") if r["kind"] in ("train", "valid", "test")]


def test_the_default_run_keeps_the_classic_stream(tiny_run_config, tmp_path):
    # A cache corpus with rows=blocks (every committed number) trains on TrainStream, wrapped to hand out
    # this process's rows; everything else reads the shards through the prefetching shard loader.
    config = tiny_run_config(tmp_path / "run")
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet))
    stream = data.stream(ProcessContext())
    assert data.classic and isinstance(stream, RankShards) and isinstance(stream.stream, TrainStream)
    reference = TrainStream(data.corpus.blocks("train", 32), 16, "bert", 0.15, data.vocab_size, config.seed)
    for _ in range(3):
        ours, theirs = stream.next(), reference.next()
        assert torch.equal(ours.input_ids, theirs.input_ids) and torch.equal(ours.labels, theirs.labels)
        assert ours.global_num_tokens == 16 * 32
    sentences = tiny_run_config(tmp_path / "s", "data.rows=sentences")
    data = MaskedLMData(sentences, open_source(sentences, ProcessContext(), quiet))
    stream = data.stream(ProcessContext())
    try:
        assert not data.classic and isinstance(stream, Prefetcher) and stream.stream.rows == "sentences"
    finally:
        stream.close()


@pytest.mark.slow
def test_prepare_data_then_train_on_the_directory_through_the_cli(tmp_path):
    from conftest import sentence_documents

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in sentence_documents(300)), encoding="utf-8")
    prepared, run = tmp_path / "prepared", tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "probformer", *args], capture_output=True, text=True,
                              timeout=600, check=False)

    made = cli("prepare-data", str(source), str(prepared), "--vocab-size", "512", "--shard-tokens", "2000",
               "--valid-tokens", "1500", "--test-tokens", "1500")
    assert made.returncode == 0, made.stderr
    proc = cli("train", "--preset", "tiny", "--set", f"data.source={prepared}", "--set", "data.rows=sentences",
               "--out-dir", str(run), "--set", "steps=20", "--set", "eval_interval=10", "--set", "progress=false",
               "--set", "tensorboard=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"prepared data {prepared}" in proc.stdout and "16 sentences of <= 32 tokens" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 20
    assert summary["valid_loss"] < summary["valid_unigram_loss"] + 0.5 and summary["test_tokens"] > 0
    shards = PreparedShards.open(prepared)
    assert (run / "model" / "tokenizer.json").read_bytes() == shards.tokenizer_json  # the directory's own
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["vocab_size"] == shards.vocab_size and config["pad_token_id"] == 0 and config["mask_token_id"] == 4


@pytest.mark.parametrize("rows", ["blocks", "sentences"])
def test_a_run_on_the_shard_loader_resumes_exactly(rows, prepared_shards_dir, tiny_run_config, tmp_path):
    # The checkpoint of step 10 is taken while the prefetch thread has the next batch ready: the data
    # position saved is the batches handed out, so the resumed run trains on exactly the same batches.
    common = ("steps=30", "eval_interval=5", "checkpoint_interval=10", "log_interval=3", f"data.rows={rows}",
              "grad_accum=2")
    full = train(on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "full", *common), log=quiet)

    def stop_at_15(step, _metrics):
        if step == 15:
            raise Interrupt

    cut = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "cut", *common)
    with pytest.raises(Interrupt):
        train(cut, on_eval=stop_at_15, log=quiet)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())["step"] == 10
    resumed = train(cut, resume=True, log=quiet)
    keys = ("valid_loss", "valid_accuracy", "test_loss", "step", "tokens_seen")
    assert {k: resumed[k] for k in keys} == {k: full[k] for k in keys}
    assert strip(tmp_path / "cut") == strip(tmp_path / "full")
    ref, got = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("full", "cut"))
    assert all(torch.equal(got[name], ref[name]) for name in ref)
    if rows == "sentences":  # padded rows: tokens seen are real tokens, fewer than the rows' capacity
        assert 0 < full["tokens_seen"] < 30 * 2 * 16 * 32


def test_an_unfinished_or_missing_prepared_directory_is_a_one_line_error(prepared_shards_dir, tiny_run_config,
                                                                         tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(prepared_shards_dir, unfinished)
    index = json.loads((unfinished / "index.json").read_text())
    (unfinished / "index.json").write_text(json.dumps({**index, "finished": False}))
    with pytest.raises(DataError, match=r"was not finished; run `probformer prepare-data .*docs.jsonl .*unfinished` "
                                        r"again to resume it") as err:
        train(on_prepared(tiny_run_config, unfinished, tmp_path / "run"), log=quiet)
    assert "\n" not in str(err.value)
    (unfinished / "index.json").unlink()  # killed before its first commit: shards and no index
    proc = subprocess.run([sys.executable, "-m", "probformer", "train", "--preset", "tiny", "--set",
                           f"data.source={unfinished}", "--out-dir", str(tmp_path / "run2")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"make it with `probformer prepare-data SOURCE {unfinished}`" in proc.stderr
    with pytest.raises(DataError, match=r"or a directory made by `probformer prepare-data SOURCE DIR`"):
        train(on_prepared(tiny_run_config, tmp_path / "missing", tmp_path / "run3"), log=quiet)


def test_padding_is_never_scored_nor_counted(prepared_shards_dir, tiny_run_config, tmp_path):
    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run", "data.rows=sentences")
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet))
    stream = data.stream(ProcessContext())
    try:
        batches = [stream.next() for _ in range(10)]
    finally:
        stream.close()
    valid = data.evaluation_sets()["valid"]
    assert any((b.attention_mask == 0).any() for b in batches) and any((b.attention_mask == 0).any() for b in valid)
    for batch in [*batches, *valid]:
        padding = batch.attention_mask == 0
        assert (batch.labels[padding] == IGNORE_INDEX).all() and (batch.input_ids[padding] == 0).all()
    assert all(b.global_num_tokens == b.num_tokens == int(b.attention_mask.sum()) for b in batches)
    # what sits in the padding changes no loss: the model never reads it, the objective never scores it
    model = data.make_model(quiet).eval()
    objective = data.objective(model)
    for batch in valid[:2]:
        other = batch.input_ids.masked_fill(batch.attention_mask == 0, 17)
        with torch.no_grad():
            a = objective(batch.input_ids, batch.attention_mask, batch.labels)[1]
            b = objective(other, batch.attention_mask, batch.labels)[1]
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_a_tokenizer_with_other_special_ids_trains(tmp_path, tiny_run_config):
    # A pretrained tokenizer's layout ([PAD] [UNK] [CLS] [SEP] [MASK] at 7..11): masking, the model's
    # pad / mask ids, the read-out bias and the unigram baseline follow the directory's special ids.
    from conftest import sentence_documents
    from test_data_prepare_stream import permuted_tokenizer

    from probformer.data.prepare_stream import prepare_shards

    docs = sentence_documents(300)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    permuted_tokenizer(docs).save(str(tmp_path / "tokenizer.json"))
    prepared = prepare_shards(str(source), tmp_path / "prepared", tokenizer=tmp_path / "tokenizer.json",
                              valid_fraction=0.1, test_fraction=0.1, progress=False, log=quiet)
    assert prepared.special_ids == {"pad": 7, "unk": 8, "cls": 9, "sep": 10, "mask": 11}
    config = on_prepared(tiny_run_config, tmp_path / "prepared", tmp_path / "run", "data.rows=documents",
                         "steps=10", "eval_interval=5")
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet))
    special = [7, 8, 9, 10, 11]
    assert np.isneginf(data.unigram_logp[special]).all() and np.isfinite(np.delete(data.unigram_logp, special)).all()
    model = data.make_model(quiet)
    assert (model.config.pad_token_id, model.config.mask_token_id) == (7, 11)
    bias = model.get_output_embeddings().bias.detach().numpy()
    assert np.allclose(bias[special], bias.min())  # the special ids start where no target is
    stream = data.stream(ProcessContext())
    try:
        batch = stream.next()
    finally:
        stream.close()
    chosen = batch.labels != IGNORE_INDEX
    assert not torch.isin(batch.labels[chosen], torch.tensor(special)).any()
    assert (batch.input_ids[chosen] == 11).float().mean() > 0.5
    assert (batch.input_ids[batch.attention_mask == 0] == 7).all()
    result = train(config, log=quiet)
    assert result["status"] == "completed"
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["mask_token_id"] == 11


def test_too_few_rows_for_a_batch_is_a_clear_error(prepared_shards_dir, tiny_run_config, tmp_path):
    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run", "batch_size=4096")
    with pytest.raises(ConfigError, match=r"batch_size: the training split of .* gives only \d+ training rows "
                                          r"\(blocks, seq_len=32\), fewer than batch_size=4096"):
        MaskedLMData(config, open_source(config, ProcessContext(), quiet))


def test_the_shard_streams_state_is_the_classic_streams(prepared_shards_dir, tiny_run_config, tmp_path):
    # The checkpoint's data position has the same keys whichever loader wrote it (epoch, index, seed).
    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run")
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet))
    assert isinstance(data.shard_stream, ShardBlockStream)
    assert set(data.shard_stream.state_dict()) == {"epoch", "index", "seed"}


def test_processes_that_read_different_tokenizers_stop_with_one_line(prepared_shards_dir, tiny_run_config, tmp_path,
                                                                      monkeypatch):
    # Under torchrun every process opens the directory itself; their tokenizers' sha256 are gathered
    # (rank 0's is the reference) and every process stops with the same line if one differs.
    from probformer.training import distributed

    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run")
    sha = PreparedShards.open(prepared_shards_dir).tokenizer_sha256
    monkeypatch.setattr(distributed, "all_gather_object", lambda value, context: [value, ("ok", "f" * 64)])
    context = ProcessContext(rank=0, world_size=2, mode="ddp")
    with pytest.raises(DataError, match=rf"the processes read different tokenizers \(sha256 {sha[:12]}\.\.\. on rank "
                                        r"0, ffffffffffff\.\.\. on rank 1\); every process must see the same prepared"):
        open_source(config, context, quiet)
    monkeypatch.setattr(distributed, "all_gather_object",
                        lambda value, context: [value, ("error", "data.source: /x was not finished; run ...")])
    with pytest.raises(DataError, match=r"/x was not finished; run \.\.\. \(on rank 1\)"):
        open_source(config, context, quiet)


def test_a_resume_with_another_tokenizer_than_the_directorys_is_refused(prepared_shards_dir, tiny_run_config,
                                                                        tmp_path):
    from probformer.training.checkpoint import CheckpointError

    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run")
    own = PreparedShards.open(prepared_shards_dir).tokenizer_json
    assert open_source(config, ProcessContext(), quiet, tokenizer_json=own).tokenizer_json == own
    with pytest.raises(CheckpointError, match="trained with another tokenizer than .* holds"):
        open_source(config, ProcessContext(), quiet, tokenizer_json=own + b" ")


def test_eval_texts_go_through_the_streaming_preparation_in_the_run_row_mode(tiny_run_config, tmp_path):
    # An eval text becomes a cache entry in the run's tokenizer (prepared once, then opened): in the
    # classic block mode its blocks are the text's documents each followed by [SEP], cut into seq_len
    # (what scored it before, so committed out-of-domain numbers stay); with rows=documents each row is
    # one of its documents (a treebank's sentence), padded, or a seq_len piece of a longer one, never two.
    from conftest import sentence_documents

    docs = [d.replace("\n", " ") for d in sentence_documents(40, seed=5)]
    text = tmp_path / "ood.jsonl"
    text.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    config = tiny_run_config(tmp_path / "run", f"eval_texts.ood={text}")
    logged: list[str] = []
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet), ProcessContext(), logged.append)
    blocks = data.evaluation_sets()["eval_ood"]
    assert sum("preparing text" in line for line in logged) == 1
    tokenizer = data.corpus.tokenizer
    stream = [t for e in tokenizer.encode_batch(docs, add_special_tokens=False)
              for t in (*e.ids, data.special_ids["sep"])]
    seq_len = config.data.seq_len
    expected = torch.tensor(stream[: len(stream) // seq_len * seq_len]).reshape(-1, seq_len)
    seen = torch.cat([torch.where(b.labels == IGNORE_INDEX, b.input_ids, b.labels) for b in blocks])
    assert torch.equal(seen, expected)
    data.evaluation_sets()
    assert sum("preparing text" in line for line in logged) == 1  # the entry is reused, not prepared again

    per_doc = tiny_run_config(tmp_path / "docs", f"eval_texts.ood={text}", "data.rows=documents")
    data = MaskedLMData(per_doc, open_source(per_doc, ProcessContext(), quiet), ProcessContext(), quiet)
    rows = data.evaluation_sets()["eval_ood"]
    lengths = [int(n) for b in rows for n in b.attention_mask.sum(dim=1)]
    encoded = [e.ids for e in tokenizer.encode_batch(docs, add_special_tokens=False)]
    pieces = [[seq_len] * ((len(ids) + 1) // seq_len) + [(len(ids) + 1) % seq_len] for ids in encoded]
    assert lengths == [n for p in pieces for n in p if n]  # one document (+ [SEP]) per row, or a piece
    first = torch.where(rows[0].labels == IGNORE_INDEX, rows[0].input_ids, rows[0].labels)[0]
    assert first[: lengths[0]].tolist() == (encoded[0] + [data.special_ids["sep"]])[:seq_len]


def test_a_token_budget_over_sentence_rows_counts_real_tokens(prepared_shards_dir, tiny_run_config, tmp_path):
    # Sentence rows are mostly padding at seq_len 32: a budget counted in row capacity would train on a
    # fraction of it. The steps come from the split's mean real tokens per row, so the tokens seen (real
    # tokens, padding excluded) land near the budget; blocks keep the plain formula.
    budget = 16 * 32 * 40
    config = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "run", "data.rows=sentences",
                         f"token_budget={budget}", "eval_interval=1000", "test_eval=false")
    assert config.total_steps is None  # counted by the data
    data = MaskedLMData(config, open_source(config, ProcessContext(), quiet))
    mean_row = data.train_tokens / len(data.shard_stream.row_index)
    assert mean_row < 32 / 2 and data.total_steps() == int(budget // (16 * mean_row)) > 40
    result = train(config, log=quiet)
    assert result["step"] == data.total_steps()
    assert 0.85 * budget < result["tokens_seen"] < 1.15 * budget
    blocks = on_prepared(tiny_run_config, prepared_shards_dir, tmp_path / "b", f"token_budget={budget}")
    assert blocks.total_steps == 40
    assert MaskedLMData(blocks, open_source(blocks, ProcessContext(), quiet)).total_steps() == 40
