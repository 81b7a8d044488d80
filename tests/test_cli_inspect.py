"""probformer.cli.inspect: the look-inside commands (fill-mask, inspect, parse-eval) on a run trained by
the real trainer, and that run's model/ directory (and its snapshots) in Hugging Face tools, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probformer.cli import main
from probformer.data.conllu import parse_conllu
from probformer.training.trainer import train

FIXTURE = Path(__file__).parent / "data" / "tiny.conllu"
TEXT = "kalo [MASK] mine ruti"


@pytest.fixture(scope="module")
def run_dir(tiny_run_config, tmp_path_factory) -> Path:
    """A tiny PT trained for 20 steps on the synthetic corpus by the real trainer (a snapshot at step 10)."""
    out = tmp_path_factory.mktemp("pt-run")
    config = tiny_run_config(out, steps=20, eval_interval=20, snapshot_interval=10, test_eval=False)
    assert train(config, log=lambda *_: None)["status"] == "completed"
    return out


def test_model_directory_holds_what_transformers_needs(run_dir):
    files = {p.name for p in (run_dir / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= files
    tokenizer_config = json.loads((run_dir / "model" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["mask_token"] == "[MASK]" and tokenizer_config["model_max_length"] == 512


def test_snapshots_along_the_run_load_like_the_final_model(run_dir):
    from probformer.inspection.loading import load_model

    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["step-000010"]  # the end is model/
    early, final = load_model(run_dir / "snapshots" / "step-000010"), load_model(run_dir)
    assert (early.directory / "tokenizer_config.json").is_file()
    assert not torch.equal(early.model.unary.weight, final.model.unary.weight)


OFFLINE_SCRIPT = r"""
import json, sys
import probformer  # registers the architectures with transformers
import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, pipeline
from probformer.models.pt.modeling_pt import PTForMaskedLM

model_dir, text = sys.argv[1], sys.argv[2]
model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
enc = tokenizer(text, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
fill = pipeline("fill-mask", model=model_dir, top_k=3)
print(json.dumps({
    "model_class": type(model).__name__,
    "config_class": type(AutoConfig.from_pretrained(model_dir)).__name__,
    "is_pt": isinstance(model, PTForMaskedLM),
    "input_ids": enc["input_ids"][0].tolist(),
    "input_names": sorted(enc.keys()),
    "logits_shape": list(logits.shape),
    "mask_token_id": tokenizer.mask_token_id,
    "pipeline": [[c["token_str"], c["score"]] for c in fill(text)],
}))
"""


def test_automodel_autotokenizer_and_fill_mask_pipeline_offline(run_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(run_dir / "model"), TEXT], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["model_class"] == "PTForMaskedLM" and got["config_class"] == "PTConfig" and got["is_pt"]
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(run_dir / "model" / "tokenizer.json")).encode(TEXT, add_special_tokens=False).ids
    assert got["input_ids"] == ours  # exactly the trainer's inputs: no [CLS]/[SEP] added
    assert got["input_names"] == ["attention_mask", "input_ids"] and got["mask_token_id"] == 4
    vocab = json.loads((run_dir / "model" / "config.json").read_text())["vocab_size"]
    assert got["logits_shape"] == [1, len(ours), vocab]  # (B, n, V) as from BertForMaskedLM
    # The pipeline's top-3 equal our own fill-mask on the same model.
    from probformer.inspection.fill_mask import fill_mask
    from probformer.inspection.loading import load_model

    loaded = load_model(run_dir)
    (prediction,) = fill_mask(loaded.model, loaded.tokenizer, TEXT, top_k=3)
    assert [t for t, _ in got["pipeline"]] == [loaded.tokenizer.decode([loaded.tokenizer.token_to_id(t)])
                                               for t, _ in prediction.candidates]
    for (_, p_hf), (_, p_ours) in zip(got["pipeline"], prediction.candidates, strict=True):
        assert p_hf == pytest.approx(p_ours, abs=1e-5)


def test_a_directory_saved_before_the_tokenizer_config_still_loads(run_dir, tmp_path):
    import shutil

    from transformers import AutoModelForMaskedLM

    from probformer.inspection.loading import load_model

    old = tmp_path / "old-model"
    shutil.copytree(run_dir / "model", old)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (old / name).unlink()
    model = AutoModelForMaskedLM.from_pretrained(old)
    assert type(model).__name__ == "PTForMaskedLM"
    before = {p.name: p.stat().st_mtime_ns for p in old.iterdir()}
    loaded = load_model(old)  # what fill-mask / inspect / parse-eval open: they only read (the directory may
    assert {p.name: p.stat().st_mtime_ns for p in old.iterdir()} == before  # be read-only, or someone else's)
    torch.testing.assert_close(loaded.model.unary.weight, model.unary.weight)


@pytest.mark.parametrize("arch", ["bert", "ut"])
def test_baselines_export_and_load_through_the_auto_classes(arch, run_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from probformer.models import architecture

    entry = architecture(arch)
    torch.manual_seed(0)
    vocab = json.loads((run_dir / "model" / "config.json").read_text())["vocab_size"]
    model = entry.build(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        init_std_output=0.02).eval()
    entry.export(model, tmp_path / arch, run_dir / "model" / "tokenizer.json")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / arch).eval()
    assert type(loaded) is entry.model_class and type(loaded).__name__.endswith("ForMaskedLM")
    ids = AutoTokenizer.from_pretrained(tmp_path / arch)(TEXT, return_tensors="pt")
    torch.testing.assert_close(loaded(**ids).logits, model(**ids).logits)


def test_fill_mask_command(run_dir, capsys):
    assert main(["fill-mask", str(run_dir), TEXT, "--top-k", "4", "--json"]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)
    probs = [c["probability"] for c in prediction["candidates"]]
    assert len(probs) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert main(["fill-mask", str(run_dir), "no mask here"]) == 2
    assert "no [MASK]" in capsys.readouterr().err


def test_inspect_command_writes_readable_deterministic_files(run_dir, tmp_path, capsys):
    out = tmp_path / "inspect"
    args = ["inspect", str(run_dir), "kalo mine, ruti sa vo.", "--out-dir", str(out), "--conllu", str(out / "t.conllu")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "iteration 2, channel 0 (mst)" in text and "label marginals" in text
    files = {name: (out / name).read_bytes() for name in ("arcs.svg", "arcs.png", "heatmap.png", "heatmap.svg",
                                                         "t.conllu")}
    assert files["arcs.png"][:8] == b"\x89PNG\r\n\x1a\n" and len(files["heatmap.png"]) > 5000
    trees = parse_conllu(files["t.conllu"].decode())
    assert len(trees) == 2 and all(s.words == ["kalo", "mine", ",", "ruti", "sa", "vo", "."] for s in trees)
    assert all(s.heads.count(0) == 1 for s in trees)
    assert main(args) == 0  # the same model and sentence give the same bytes
    capsys.readouterr()
    assert {name: (out / name).read_bytes() for name in files} == files

    assert main(["inspect", str(run_dir), "kalo mine ruti", "--json", "--no-plots"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["words"] == ["kalo", "mine", "ruti"]
    assert len(report["head_marginals"]) == 2 and len(report["head_marginals"][0]) == 2  # iterations x channels
    assert len(report["labels"]) == 3 and len(report["labels"][0]) == 3
    assert {t["decoder"] for t in report["trees"]} == {"mst", "argmax"} and report["files"] == []


def test_parse_eval_command_selects_on_other_sentences(run_dir, tmp_path, capsys):
    out = tmp_path / "uas"
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-first", "1", "--out-dir", str(out),
                 "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["report"]["sentences"] == 2 and report["selection"]["sentences"] == 1
    assert report["report"]["rows"][0]["words"] == 7  # sentences 2 and 3 of the fixture
    baselines = {b["name"]: b for b in report["report"]["baselines"]}
    assert baselines["next word"]["uas"] == pytest.approx(2 / 6)  # hand-computed: s2 2/4, s3 0/2
    selected = report["selected"]
    assert selected["uas"] == next(r["uas"] for r in report["report"]["rows"] if r["name"] == selected["name"])
    assert {p.name for p in out.iterdir()} == {"uas.md", "uas.json", "uas.png", "command.txt"}
    assert "Reading chosen on" in (out / "uas.md").read_text()


def test_look_inside_failure_paths(run_dir, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope"), "a b"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-on", str(FIXTURE), "--no-progress"]) == 2
    assert "overstates" in capsys.readouterr().err
    (tmp_path / "bad.conllu").write_text("1\tonly three\tcolumns\n")
    assert main(["parse-eval", str(run_dir), str(tmp_path / "bad.conllu"), "--no-progress"]) == 2
    assert "10 tab-separated columns" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    import shutil

    shutil.copytree(run_dir / "model", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(["fill-mask", str(corrupt), TEXT]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    from probformer.models import architecture

    bert_dir = tmp_path / "bert"
    architecture("bert").export(architecture("bert").build(vocab_size=512, hidden_size=32, num_layers=1, num_heads=2,
                                                           intermediate_size=64), bert_dir,
                                run_dir / "model" / "tokenizer.json")
    assert main(["inspect", str(bert_dir), "a b"]) == 2
    assert "needs 'pt'" in capsys.readouterr().err


def test_parse_eval_along_the_run_scores_every_snapshot_and_the_final_model(run_dir, tmp_path, capsys):
    out = tmp_path / "along"
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-first", "1", "--snapshots", "all",
                 "--out-dir", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| 10 | 0.01M | ? |" in table and "| 20 | 0.01M | " in table  # 16 x 32 tokens per step; eval at 20 only
    assert "| 20 | 0.01M | ? |" not in table
    steps = json.loads((out / "uas_by_step.json").read_text())
    assert [s["step"] for s in steps] == [10, 20]
    assert (out / "uas_by_step.png").is_file() and (out / "step-000010" / "uas.md").is_file()
    # Run again: every step's saved result is reused (same inputs), and the table is the same.
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-first", "1", "--snapshots", "all",
                 "--out-dir", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out == table and captured.err.count("reusing") == 2
    # A result torn by a kill mid-write is evaluated again, not a traceback.
    (out / "step-000010" / "uas.json").write_text('{"inputs": {"fi')
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-first", "1", "--snapshots", "all",
                 "--out-dir", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out == table and "damaged, evaluating that step again" in captured.err
    assert json.loads((out / "step-000010" / "uas.json").read_text())["inputs"]["select_first"] == 1
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--select-first", "1", "--snapshots", "15",
                 "--no-progress"]) == 2
    assert "no snapshot for step(s) [15]" in capsys.readouterr().err
    assert main(["parse-eval", str(run_dir), str(FIXTURE), "--snapshots", "all", "--no-progress"]) == 2
    assert "--select-on or --select-first" in capsys.readouterr().err


def test_a_model_directory_is_untrusted_input(run_dir, tmp_path, capsys):
    """A config.json that is a list, or names sizes no model has, is refused before anything is built."""
    import json
    import shutil

    bad = tmp_path / "bad-model"
    shutil.copytree(run_dir / "model", bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_iterations": 10_000_000}))
    assert main(["inspect", str(bad), "kalo mine"]) == 2
    assert "num_iterations = 10000000 is not a size" in capsys.readouterr().err
    (bad / "config.json").write_text(json.dumps([config]))
    assert main(["fill-mask", str(bad), TEXT]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err


def test_inspect_arguments_are_checked_and_non_latin_sentences_get_their_own_folder(run_dir, capsys):
    assert main(["inspect", str(run_dir), "kalo mine ruti", "--iteration", "0", "--no-plots"]) == 2
    assert "--iteration must be between 1 and" in capsys.readouterr().err
    assert main(["inspect", str(run_dir), "kalo mine ruti", "--labels", "-1", "--no-plots"]) == 2
    assert "--labels and --label-words must be >= 0" in capsys.readouterr().err
    from probformer.cli.inspect import _slug

    assert _slug("The Congress shall") == "the-congress-shall"
    assert _slug("กรุงเทพ มหานคร").startswith("sentence-") and _slug("กรุงเทพ มหานคร") != _slug("東京は首都")


def test_fill_mask_refuses_a_text_longer_than_the_position_table(run_dir, capsys):
    """The tiny model reads at most max_position_embeddings pieces; a longer text is one line, not an
    index error inside the forward."""
    limit = json.loads((run_dir / "model" / "config.json").read_text())["max_position_embeddings"]
    long_text = " ".join(["kalo"] * limit + ["[MASK]"])
    assert main(["fill-mask", str(run_dir), long_text]) == 2
    assert f"longer than the model's max_position_embeddings ({limit})" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["token-classification", "text-classification"])
def test_inspect_and_parse_eval_read_a_pt_task_model_with_its_root(task, tmp_path, capsys):
    """A PT tagger or classifier has the MLM's encoder: inspect and parse-eval read its marginals, and
    with its ROOT the trees score the root by the model's ROOT probabilities (single-rooted)."""
    from task_models import export_task_model

    run = export_task_model("pt", task, tmp_path / "run" / "model").parent
    assert main(["inspect", str(run), "The cat sat on the mat.", "--json", "--no-plots"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["root_marginals"]) == 3 and len(report["root_marginals"][0][0]) == 7  # T x h x words
    for tree in report["trees"]:
        (root,) = [u for u, h in enumerate(tree["heads"]) if h == 0] if tree["decoder"] == "mst" else [None]
        if root is not None:
            expected = report["root_marginals"][tree["iteration"] - 1][tree["channel"]][root]
            assert tree["probabilities"][root] == pytest.approx(expected, abs=1e-6)
    assert main(["parse-eval", str(run), str(FIXTURE), "--select-first", "1", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["report"]["sentences"] == 2 and result["selected"] is not None
