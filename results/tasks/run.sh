#!/usr/bin/env bash
# issue 23, deliverable 5: task models on real data, one seed each (demonstrations, not a tuned comparison).
#   UPOS on UD English EWT: PT from scratch, PT fine-tuned from the default `probformer train` MLM run,
#   BERT from scratch at PT's parameter count; SST-2: PT with its ROOT read-out, PT with mean pooling, and
#   BERT from scratch.
# Data: UD English EWT (universaldependencies.org) and SST-2 (GLUE) files; set TASK_DATA to the folder
# holding ud-english-ewt/en_ewt-ud-{train,dev}.conllu and sst/sst2-{train,dev}.tsv (text<TAB>label).
# Two one-thread processes at a time. Resumable: rerun after an interruption (finished runs are skipped,
# cut ones resume). Writes results/tasks/summary.md and the learning curves.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
DATA=${TASK_DATA:-../shared/data}
EWT=$DATA/ud-english-ewt
SST=$DATA/sst
OUT=runs/tasks
mkdir -p "$OUT"
train() {  # name, then --set items
  local dir="$OUT/$1"; shift
  if [ -f "$dir/summary.json" ]; then return; fi
  local how=""
  if [ -d "$dir/checkpoint" ]; then how="--resume"; elif [ -d "$dir" ]; then how="--overwrite"; fi
  local args=()
  # fp32: these runs predate bf16 on CPU (precision auto picks bf16 here now); one precision per table
  for item in progress=false threads=1 precision=fp32 "$@"; do args+=(--set "$item"); done
  probformer train --out-dir "$dir" $how "${args[@]}" > "$dir.log" 2>&1
}
UPOS=(task.name=token-classification "task.train=$EWT/en_ewt-ud-train.conllu" "task.valid=$EWT/en_ewt-ud-dev.conllu"
      task.epochs=10 eval_interval=196 log_interval=49)
SST2=(task.name=text-classification "task.train=$SST/sst2-train.tsv" "task.valid=$SST/sst2-dev.tsv"
      task.epochs=1 eval_interval=421 log_interval=60)
# BERT at PT's task-model parameter count (821k with EWT's 4096-piece vocabulary; the MLM read-out is not
# part of a task model): 4 layers of width 96, 3 heads, FFN 341, 128 positions. lr: its MLM sweep's (2e-3).
BERT=(model.arch=bert model.hidden_size=96 model.num_heads=3 model.num_layers=4 model.intermediate_size=341
      model.max_position_embeddings=128 optim.lr=2e-3)

train mlm-pt &  # the default `probformer train` (PT, muP, sotu): the MLM run to fine-tune from
train upos-pt-scratch "${UPOS[@]}"
wait
train upos-pt-finetuned "${UPOS[@]}" "task.init_from=$OUT/mlm-pt" &
train upos-bert-scratch "${UPOS[@]}" "${BERT[@]}"
wait
# SST-2: BERT at lr 5e-4 (2e-3, its MLM lr, left it at the label prior for 2 epochs: too high for its
# classifier); PT reading ROOT (the default) at lr 1e-3 (at 3e-3 and above the words stop choosing ROOT
# within a few hundred steps and the read-out stays at the label prior; docs/tasks.md), and PT
# mean-pooling its words at its default lr 1e-2.
train sst2-pt-root "${SST2[@]}" optim.lr=1e-3 &
train sst2-pt-mean "${SST2[@]}" model.classifier_pooling=mean
wait
train sst2-bert "${SST2[@]}" "${BERT[@]}" optim.lr=5e-4 &
train sst2-pt-root-lr1e-2 "${SST2[@]}"  # the ROOT read-out at PT's default lr 1e-2: the control for 1e-3
wait

for run in mlm-pt upos-pt-scratch upos-pt-finetuned upos-bert-scratch sst2-pt-root sst2-pt-root-lr1e-2 sst2-pt-mean \
    sst2-bert; do
  mkdir -p "results/tasks/records/$run"  # the finished runs' records (the models stay in runs/)
  cp "$OUT/$run/summary.json" "$OUT/$run/metrics.jsonl" "$OUT/$run/train_config.json" "results/tasks/records/$run/"
done
python - "$OUT" "$EWT" <<'PY'
import json, sys
from pathlib import Path
from probformer.data.task_files import TaskFormat, most_frequent_tag_baseline
from probformer.figures import pyplot, save_figure

runs, ewt = Path(sys.argv[1]), Path(sys.argv[2])
fmt = TaskFormat("conllu")
baseline = most_frequent_tag_baseline(fmt.read(ewt / "en_ewt-ud-train.conllu"), fmt.read(ewt / "en_ewt-ud-dev.conllu"))
plt = pyplot()
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, names, title, floor in (
        (axes[0], ("upos-pt-scratch", "upos-pt-finetuned", "upos-bert-scratch"), "UPOS, EWT dev", baseline),
        (axes[1], ("sst2-pt-root", "sst2-pt-root-lr1e-2", "sst2-pt-mean", "sst2-bert"), "SST-2 dev", None)):
    for name in names:
        rows = [json.loads(l) for l in (runs / name / "metrics.jsonl").read_text().splitlines()]
        valid = [r for r in rows if r["kind"] == "valid"]
        ax.plot([r["step"] for r in valid], [r["accuracy"] for r in valid], marker="o", ms=3, label=name)
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=0.8, label="most-frequent tag")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("optimizer step (32 rows each)")
    ax.set_ylabel("dev accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
save_figure(fig, "results/tasks/dev_accuracy.png")
PY
python - "$OUT" "$EWT" <<'PY' | tee results/tasks/summary.md
import json, sys
from pathlib import Path
from probformer.data.task_files import TaskFormat, most_frequent_tag_baseline

runs, ewt = Path(sys.argv[1]), Path(sys.argv[2])
fmt = TaskFormat("conllu")
baseline = most_frequent_tag_baseline(fmt.read(ewt / "en_ewt-ud-train.conllu"), fmt.read(ewt / "en_ewt-ud-dev.conllu"))
def row(name, what):
    s = json.loads((runs / name / "summary.json").read_text())
    info = json.loads((runs / name / "metrics.jsonl").read_text().splitlines()[0])
    train = [json.loads(l) for l in (runs / name / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_second"] for r in train if r["kind"] == "train"]
    extra = f" | {s['best_valid_macro_f1']:.4f}" if "best_valid_macro_f1" in s else ""
    return (f"| {name} | {what} | {s['parameters']:,} | {s['best_valid_accuracy']:.2%}{extra} | {s['best_step']} / "
            f"{s['step']} | {sum(tps) / len(tps):,.0f} |")
print("UPOS, UD English EWT dev (2,001 sentences, 25,148 words), 10 epochs, one seed:\n")
print("| run | model | parameters | best dev accuracy | best step / steps | train tokens/s (1 thread) |")
print("|---|---|---|---|---|---|")
print(f"| most-frequent tag | per word form, from train | - | {baseline:.2%} | - | - |")
print(row("upos-pt-scratch", "PT, muP, from scratch"))
print(row("upos-pt-finetuned", "PT, muP, fine-tuned from runs/tasks/mlm-pt (sotu MLM)"))
print(row("upos-bert-scratch", "BERT, muP, from scratch"))
print("\nSST-2 dev (872 sentences), 1 epoch, one seed:\n")
print("| run | model | parameters | best dev accuracy | macro-F1 | best step / steps | train tokens/s (1 thread) |")
print("|---|---|---|---|---|---|---|")
print(row("sst2-pt-root", "PT, muP, ROOT read-out, from scratch, lr 1e-3"))
print(row("sst2-pt-root-lr1e-2", "PT, muP, ROOT read-out, from scratch, lr 1e-2"))
print(row("sst2-pt-mean", "PT, muP, mean of the words' q read-out, from scratch, lr 1e-2"))
print(row("sst2-bert", "BERT, muP, [CLS] + pooler, from scratch, lr 5e-4"))
PY
