"""Task runs with a tokenizer whose special ids are not probformer's 0..4: BERT's layout ([PAD] = 0,
[UNK] = 100, [CLS] = 101, [SEP] = 102, [MASK] = 103, fillers between, a ``[CLS] $A [SEP]``
post-processor), built here with ``tokenizers`` (no network). Token and text classification, PT and
BERT, train end to end with ``task.tokenizer`` pointing at it; the ids come from the tokenizer
everywhere (model config, padding, [UNK], BERT's [CLS] prefix); the export's tokenizer adds exactly
the prefix the rows had; ``probformer predict`` and HF pipelines give the model's own labels; an MLM
prepared with that tokenizer fine-tunes (``task.init_from``); a tokenizer lacking one of the five is a
one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_words, write_text_dir
from test_training_task_data import quiet, task_config, write_labelled, write_tagged
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from probformer.data.errors import DataError
from probformer.data.masking import IGNORE_INDEX
from probformer.data.sentence_rows import token_rows
from probformer.data.shards import special_token_ids
from probformer.data.task_files import LabelSet, TaggedSentence, TaskFormat
from probformer.inspection.errors import InspectionError
from probformer.inspection.predict import TextPrediction, TokenPrediction, load_task_model, predict
from probformer.inspection.words import split_words
from probformer.training.distributed import ProcessContext
from probformer.training.trainer import train

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
BERT_IDS = {"pad": PAD, "unk": UNK, "cls": CLS, "sep": SEP, "mask": MASK}
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dor", "fen", "gal", "hin")
TEXTS = ["kalomi sa tine!", "vo", "Dorfen gal hinpa, quze kaka lomi ruti"]
CASES = [(arch, task) for arch in ("pt", "bert") for task in ("token-classification", "text-classification")]


def bert_layout_tokenizer(path: Path, missing: str | None = None) -> Path:
    """A lowercasing WordPiece tokenizer.json with BERT's special-token layout (module docstring): the
    synthetic words' syllables as pieces, letters and punctuation besides. ``missing``: a special token
    left out (its id becomes one more filler)."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = [f"[unused{i + 99}]" if token == missing else token for i, token in enumerate(tokens)]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = synthetic_words(60)[::4]  # some whole words, the others in syllables or letters
    tokens += [*".,!?-", *letters, *(f"##{c}" for c in letters), *SYLLABLES, *(f"##{s}" for s in SYLLABLES), *words]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    if missing is None:  # bert-base-uncased's template
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    tokenizer.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t != missing])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bert-layout")
    return {"tag_train": write_tagged(root / "train.conll", 200, 0),
            "tag_valid": write_tagged(root / "dev.conll", 40, 1),
            "cls_train": write_labelled(root / "train.tsv", 200, 3),
            "cls_valid": write_labelled(root / "dev.tsv", 40, 4),
            "tokenizer": bert_layout_tokenizer(root / "tokenizer" / "tokenizer.json")}


def test_the_tokenizer_has_berts_layout(files):
    tokenizer = Tokenizer.from_file(str(files["tokenizer"]))
    assert special_token_ids(tokenizer, "t") == BERT_IDS
    assert tokenizer.encode("kalomi").ids == [CLS, *tokenizer.encode("kalomi", add_special_tokens=False).ids, SEP]
    assert len(tokenizer.encode("kalomi", add_special_tokens=False).ids) == 3  # ka ##lo ##mi


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One finished run per (arch, task), trained with ``task.tokenizer`` = the BERT-layout tokenizer."""
    root = tmp_path_factory.mktemp("bert-layout-runs")
    out = {}
    for arch, task in CASES:
        lr = "optim.lr=0.003" if arch == "bert" else "optim.lr=0.03"
        result = train(task_config(root / f"{arch}-{task}", files, task, f"task.tokenizer={files['tokenizer']}",
                                   "steps=16", "eval_interval=8", lr, arch=arch), log=quiet)
        assert result["status"] == "completed" and np.isfinite(result["valid_loss"])
        assert 0 <= result["best_valid_accuracy"] <= 1
        out[arch, task] = root / f"{arch}-{task}"
    return out


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_rows_padding_and_the_model_use_the_tokenizers_ids(files, tmp_path, arch, task):
    from probformer.training.task_data import TaskData

    data = TaskData(task_config(tmp_path, files, task, f"task.tokenizer={files['tokenizer']}", arch=arch), quiet)
    assert data.special_ids == BERT_IDS
    rows = data.rows["train"] + data.rows["valid"]
    starts = {int(row.input_ids[0]) for row in rows}
    if arch == "bert" and task == "text-classification":
        assert starts == {CLS}  # BERT's pooler reads the tokenizer's [CLS]
        assert all(CLS not in row.input_ids[1:] for row in rows)
    else:
        assert CLS not in starts
    pieces = np.concatenate([row.input_ids for row in rows])
    assert pieces.min() > MASK or (arch == "bert" and task == "text-classification" and pieces.min() == CLS)
    assert SEP not in pieces and PAD not in pieces  # the tokenizer's template never reaches a row
    stream = data.stream(ProcessContext())
    train_batches = [stream.next() for _ in range(5)]
    assert all(b.global_num_tokens == int(b.attention_mask.sum()) for b in train_batches)  # tokens seen: no padding
    batches = [*train_batches, *(batch for _, batch in data.evaluation_sets()["valid"].batches)]
    padded = 0
    for batch in batches:
        pad = batch.attention_mask == 0
        padded += int(pad.sum())
        assert (batch.input_ids[pad] == PAD).all() and (batch.input_ids[~pad] != PAD).all()
        if task == "token-classification":
            assert (batch.labels[pad] == IGNORE_INDEX).all()  # padding is never scored
    assert padded > 0
    config = data.make_model(quiet).config
    assert (config.pad_token_id, config.mask_token_id, config.vocab_size) == (PAD, MASK, data.vocab_size)


def test_a_word_the_tokenizer_drops_is_its_unk(files):
    tokenizer = Tokenizer.from_file(str(files["tokenizer"]))
    sentence = TaggedSentence(["kalomi", "\u200b", "vo"], ["A", "B", "A"])
    (row,) = token_rows([sentence], tokenizer, LabelSet(("A", "B")), max_len=16, unk_id=UNK)
    assert row.input_ids.tolist()[3] == UNK and row.word_positions.tolist() == [0, 3, 4]


def test_inspection_reads_unk_and_mask_from_the_tokenizer(files):
    # Tree inspection's word pieces and fill-mask's [MASK] come from the tokenizer, not probformer's 1 / 4.
    from types import SimpleNamespace

    from probformer.inspection.fill_mask import mask_token_id
    from probformer.inspection.words import word_pieces

    tokenizer = Tokenizer.from_file(str(files["tokenizer"]))
    pieces = word_pieces(tokenizer, ["kalomi", "\u200b", "vo"])
    assert pieces.ids[pieces.word_of_piece.index(1)] == UNK
    assert mask_token_id(SimpleNamespace(config=SimpleNamespace()), tokenizer) == MASK
    assert mask_token_id(SimpleNamespace(config=SimpleNamespace(mask_token_id=7)), tokenizer) == 7  # config first
    lacking = Tokenizer.from_file(str(bert_layout_tokenizer(files["tokenizer"].parent / "no-unk.json", "[UNK]")))
    with pytest.raises(InspectionError, match=r"no word pieces and the tokenizer has no \[UNK\]"):
        word_pieces(lacking, ["kalomi", "\u200b"])


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_the_export_adds_exactly_the_rows_prefix_and_predict_is_the_models_forward(runs, arch, task):
    model_dir = runs[arch, task] / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["pad_token_id"], config["mask_token_id"]) == (PAD, MASK)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bare = tokenizer.encode("kalomi sa", add_special_tokens=False).ids
    prefix = [CLS] if (arch, task) == ("bert", "text-classification") else []
    assert tokenizer.encode("kalomi sa").ids == [*prefix, *bare]  # [CLS] = 101 for BERT's pooler; never [SEP]
    loaded = load_task_model(runs[arch, task])
    got = predict(loaded, TEXTS, batch_size=3)  # rows of different lengths: padded in one batch
    labels = loaded.model.config.id2label
    with torch.no_grad():
        for text, prediction in zip(TEXTS, got, strict=True):
            if task == "text-classification":
                ids = tokenizer.encode(text).ids  # what a pipeline feeds: the exported post-processor's prefix
                assert ids[0] == CLS if prefix else CLS not in ids
                probs = torch.softmax(loaded.model(torch.tensor([ids])).logits[0].double(), -1).numpy()
                assert isinstance(prediction, TextPrediction)
                assert prediction.label == labels[int(probs.argmax())]
                np.testing.assert_allclose(list(prediction.probabilities.values()), probs, atol=1e-6)
            else:
                words, ids, firsts = split_words(tokenizer, text), [], []
                for word in words:
                    firsts.append(len(ids))
                    ids.extend(tokenizer.encode(word, add_special_tokens=False).ids)
                probs = torch.softmax(loaded.model(torch.tensor([ids])).logits[0].double(), -1)[firsts].numpy()
                assert isinstance(prediction, TokenPrediction)
                assert [w.word for w in prediction.words] == words
                assert [w.label for w in prediction.words] == [labels[int(i)] for i in probs.argmax(-1)]
                np.testing.assert_allclose([w.probability for w in prediction.words], probs.max(-1), atol=1e-6)


PIPELINE_SCRIPT = r"""
import json, sys
import probformer  # registers the architectures with transformers
from transformers import pipeline

token_dir, text_dir, texts = json.loads(sys.argv[1])
tagger = pipeline("token-classification", model=token_dir, aggregation_strategy="none", ignore_labels=[])
classifier = pipeline("text-classification", model=text_dir, top_k=None)
print(json.dumps({"token": [[{"entity": e["entity"], "score": float(e["score"]), "start": int(e["start"])}
                             for e in tagger(text)] for text in texts],
                  "text": [{c["label"]: float(c["score"]) for c in result} for result in classifier(texts)]}))
"""


def test_hf_pipelines_offline_give_predicts_labels(runs):
    token, text = runs["bert", "token-classification"] / "model", runs["bert", "text-classification"] / "model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, json.dumps([str(token), str(text), TEXTS])],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for mine, pieces in zip(predict(token, TEXTS), theirs["token"], strict=True):
        by_start = {e["start"]: e for e in pieces}  # one entry per piece; a word is read on its first
        for word in mine.words:
            assert by_start[word.start]["entity"] == word.label
            assert by_start[word.start]["score"] == pytest.approx(word.probability, abs=1e-5)
    for mine, scores in zip(predict(text, TEXTS), theirs["text"], strict=True):
        assert scores == pytest.approx(mine.probabilities, abs=1e-5)


@pytest.mark.parametrize("missing", ["[MASK]", "[CLS]"])
def test_a_tokenizer_lacking_a_special_token_is_a_one_line_error(files, tmp_path, missing):
    from probformer.training.task_data import TaskData

    path = bert_layout_tokenizer(tmp_path / "tok.json", missing=missing)
    config = task_config(tmp_path, files, "token-classification", f"task.tokenizer={path}")
    with pytest.raises(DataError) as err:
        TaskData(config, quiet)
    assert str(err.value).startswith(f"task.tokenizer: {path}: the tokenizer has no {missing} token; "
                                     "a task run needs [PAD], [UNK], [CLS], [SEP], [MASK]")
    assert "\n" not in str(err.value)


def test_cli_says_a_missing_special_token_in_one_line(files, tmp_path, capsys):
    from probformer.cli.main import main

    path = bert_layout_tokenizer(tmp_path / "tok.json", missing="[MASK]")
    args = ["train", "--out-dir", str(tmp_path / "out"), "--set", "progress=false"]
    for item in ("task.name=token-classification", f"task.train={files['tag_train']}",
                 f"task.valid={files['tag_valid']}", f"task.tokenizer={path}"):
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has no [MASK] token" in err and "\n" not in err, err


def test_init_from_an_mlm_prepared_with_the_tokenizer(files, tmp_path):
    """prepare-data with the BERT-layout tokenizer, a tiny PT MLM on it, a tagger fine-tuned from it: the
    ids come from the run's tokenizer, and both exports drop the tokenizer's [CLS] ... [SEP]."""
    from probformer.config import load_config
    from probformer.data.prepare_stream import prepare_shards
    from probformer.training.task_data import TaskData

    text = [" ".join(s.words) for s in TaskFormat("conll").read(files["tag_train"])]
    corpus = write_text_dir(tmp_path / "corpus", [" ".join(text[i::50]) for i in range(50)])
    prepare_shards(str(corpus), tmp_path / "prepared", tokenizer=files["tokenizer"], work_unit_bytes=1500,
                   shard_tokens=2000, valid_fraction=0.2, test_fraction=0.2, valid_tokens=1000, test_tokens=1000,
                   progress=False, log=quiet)
    mlm = tmp_path / "mlm"
    train(load_config(overrides=[
        f"out_dir={mlm}", f"data.source={tmp_path / 'prepared'}", "data.seq_len=32", "batch_size=8", "steps=4",
        "eval_interval=4", "progress=false", "tensorboard=false", "model.hidden_size=32", "model.num_channels=2",
        "model.rank=8", "model.latent_size=32", "model.num_iterations=2", "model.base_hidden_size=32"]), log=quiet)
    assert json.loads((mlm / "model" / "config.json").read_text())["mask_token_id"] == MASK
    # the MLM trained on running text without [CLS]/[SEP]: its export adds none either
    exported = Tokenizer.from_file(str(mlm / "model" / "tokenizer.json"))
    assert exported.encode("kalomi").ids == exported.encode("kalomi", add_special_tokens=False).ids
    config = task_config(tmp_path / "tagger", files, "token-classification", f"task.init_from={mlm}", "steps=8",
                         "eval_interval=8")
    data = TaskData(config, quiet)
    assert data.special_ids == BERT_IDS and data.make_model(quiet).config.pad_token_id == PAD
    assert train(config, log=quiet)["status"] == "completed"
    tokenizer = Tokenizer.from_file(str(tmp_path / "tagger" / "model" / "tokenizer.json"))
    assert tokenizer.encode("kalomi").ids == tokenizer.encode("kalomi", add_special_tokens=False).ids
