#!/usr/bin/env bash
# issue 24, deliverable 4: compare-cpu-20m (PT vs BERT vs UT at 0.5M and 1M, 2 seeds, 10 epochs per run).
#   1. the lr check at 1M, seed 0: each architecture at 0.5x, 1x and 2x its one-epoch sweep's lr
#      (results/sweeps/<arch>-2m/best.json), one compare out_dir per factor (runs/compare-cpu-20m-lr/x*);
#   2. python -m probformer.experiments.compare.lr_check picks the lowest final valid loss per
#      architecture -> results/compare/cpu-20m/lr-check/{<arch>.json,lr-check.md,lr-check.png}, and copies
#      the winning runs into the comparison's out_dir: they are its 1M seed-0 runs, read back there;
#   3. the comparison at the chosen points, then one pass that trains nothing and writes the tables.
# Every run is one job of a queue worked by two one-thread processes (these small models use two cores
# better that way than as one two-thread process). Hours of CPU (see the spec's header); resumable: run it
# again after an interruption: finished runs are read back (from the committed records on a fresh
# checkout: ../finished-runs.sh), cut ones resume from their last checkpoint.
# EWT dev (out of domain) from EVAL_DATA (default ../shared/data), holding ud-english-ewt/en_ewt-ud-dev.conllu.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi  # the README's install puts probformer there
DATA=${EVAL_DATA:-../shared/data}
OUT=results/compare/cpu-20m
LIVE=runs/compare-cpu-20m
CHECK=runs/compare-cpu-20m-lr
mkdir -p runs/logs "$OUT"
export COMPARE="probformer compare --preset compare-cpu-20m --set train.threads=1 \
  --set eval_texts.ewt=$DATA/ud-english-ewt/en_ewt-ud-dev.conllu"
export SWEPT="--set hparams_from.pt=results/sweeps/pt-2m/best.json \
  --set hparams_from.bert=results/sweeps/bert-2m/best.json --set hparams_from.ut=results/sweeps/ut-2m/best.json"
records() {  # save|restore: the finished runs of the check and of the comparison
  bash results/compare/finished-runs.sh "$1" "$LIVE/runs" "$OUT/runs"
  for f in 0.5 1 2; do bash results/compare/finished-runs.sh "$1" "$CHECK/x$f/runs" "$OUT/lr-check/runs-x$f"; done
}
queue() {  # lines of "arch budget seed scale out_dir hparams", worked by two processes
  xargs -P 2 -L 1 bash -c '
    arch=$0 budget=$1 seed=$2 scale=$3 out=$4 hparams=$5
    extra=""; if [ "$hparams" = swept ]; then extra=$SWEPT; fi
    if [ "$scale" != 1 ]; then extra="$extra --set lr_scale.$arch=$scale"; fi
    log=runs/logs/compare-cpu-20m-$arch-$budget-s$seed-x$scale.log
    echo "$(date -u +%FT%T) $arch $budget seed $seed lr x$scale -> $out (log $log)"
    $COMPARE $extra --archs "$arch" --budgets "$budget" --seeds "$seed" --out-dir "$out" >> "$log" 2>&1 \
      || { echo "FAILED: $arch $budget seed $seed x$scale (see $log)"; exit 255; }'
}
records restore
$COMPARE $SWEPT --dry-run > /dev/null  # builds the corpus cache once, before two processes want it

# 1. the lr check, longest runs first
for arch in pt ut bert; do for f in 1 0.5 2; do echo "$arch 1M 0 $f $CHECK/x$f swept"; done; done | queue
records save

# 2. the chosen lr per architecture
python -m probformer.experiments.compare.lr_check --runs "$CHECK"/x{0.5,1,2} --budget 1M --seed 0 \
  --tuned pt=results/sweeps/pt-2m/best.json,bert=results/sweeps/bert-2m/best.json,ut=results/sweeps/ut-2m/best.json \
  --out "$OUT/lr-check" --adopt "$LIVE"
for f in 0.5 1 2; do cp "$CHECK/x$f/spec.yaml" "$OUT/lr-check/spec-x$f.yaml"; done

# 3. the comparison (hparams_from: the spec's, i.e. lr-check/<arch>.json); 1M seed 0: the adopted runs
printf '%s\n' "pt 1M 1 1 $LIVE chosen" "ut 500k 0 1 $LIVE chosen" "ut 500k 1 1 $LIVE chosen" \
  "pt 500k 0 1 $LIVE chosen" "pt 500k 1 1 $LIVE chosen" "pt 1M 0 1 $LIVE chosen" "ut 1M 0 1 $LIVE chosen" \
  "ut 1M 1 1 $LIVE chosen" "bert 500k 0 1 $LIVE chosen" "bert 500k 1 1 $LIVE chosen" "bert 1M 0 1 $LIVE chosen" \
  "bert 1M 1 1 $LIVE chosen" | queue
records save
$COMPARE  # trains nothing now: reads every run back, writes the tables and plots
for f in "$LIVE"/*; do if [ -f "$f" ]; then cp "$f" "$OUT/"; fi; done
echo "done: $OUT"
