#!/usr/bin/env bash
# The BERT and UT sweeps (sweep-{bert,ut}-2m, v2) extended by lr 3e-3, 4e-3 and 5e-3 at each one's best
# other settings (BERT without dropout, UT with 0.1): the gap between the best lr (2e-3) and
# the lowest that stayed on the unigram plateau (6e-3 to 7e-3). The anchors are listed again so that
# spec.yaml keeps them (enqueue skips points the study has). ~20-40 min; then each study's
# best.json, trials.csv, spec.yaml and command.txt are copied to results/sweeps/<arch>-2m/.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
mkdir -p runs/logs
anchors='{optim.lr: 2.0e-3, optim.warmup_fraction: 0.05, model.pre_layer_norm: false, model.input_mult: 1.0, model.hidden_dropout: 0.1, model.attention_dropout: 0.1},
{optim.lr: 2.0e-3, optim.warmup_fraction: 0.05, model.pre_layer_norm: false, model.input_mult: 1.0, model.hidden_dropout: 0.0, model.attention_dropout: 0.0},
{optim.lr: 2.0e-3, optim.warmup_fraction: 0.05, model.pre_layer_norm: true, model.input_mult: 10.0, model.hidden_dropout: 0.1, model.attention_dropout: 0.1},
{optim.lr: 2.0e-3, optim.warmup_fraction: 0.05, model.pre_layer_norm: true, model.input_mult: 10.0, model.hidden_dropout: 0.0, model.attention_dropout: 0.0}'
gap() { local d=$1; for lr in 3.0e-3 4.0e-3 5.0e-3; do
  echo ", {optim.lr: $lr, optim.warmup_fraction: 0.05, model.pre_layer_norm: false, model.input_mult: 1.0, model.hidden_dropout: $d, model.attention_dropout: $d}"; done; }
probformer sweep --preset sweep-bert-2m --set train.threads=1 --set n_trials=17 \
  --set "enqueue=[$anchors $(gap 0.0)]" >> runs/logs/sweep-bert-w1.log 2>&1 &
probformer sweep --preset sweep-ut-2m --set train.threads=1 --set n_trials=15 \
  --set "enqueue=[$anchors $(gap 0.1)]" >> runs/logs/sweep-ut-w1.log 2>&1
wait
for arch in bert ut; do cp runs/sweep-$arch-2m/{best.json,trials.csv,spec.yaml,command.txt} results/sweeps/$arch-2m/; done
echo "done: results/sweeps/{bert,ut}-2m"
