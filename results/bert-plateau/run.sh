#!/usr/bin/env bash
# Does a size-matched BERT leave the unigram plateau within one epoch (the default `probformer train`
# budget: 500 steps of 32 x 128 tokens), and what makes it? (issue 12, deliverable 1).
# Each run is resumable: re-running this script continues unfinished runs and skips finished ones.
# Shape: `probformer size --arch bert --params 1.35M` (the default PT's budget).
set -euo pipefail
cd "$(dirname "$0")/../.."
EWT=${EWT:-data/ud-english-ewt/en_ewt-ud-dev.conllu}  # UD English EWT dev (out of domain; universaldependencies.org)
BERT="{arch: bert, hidden_size: 96, num_layers: 4, num_heads: 3, intermediate_size: 453, base_hidden_size: 128, base_head_dim: 32"
train() {  # name, --set ...: the default run with evaluations every 25 steps (curves) and EWT scored
  local name=$1; shift
  local out=runs/bert-plateau/$name
  if [ -f "$out/summary.json" ]; then echo "$name: done"; return; fi
  probformer train --set out_dir="$out" --set eval_interval=25 --set "eval_texts.ewt=$EWT" --set progress=false "$@" --resume
}
run() {  # name, BERT fields, --set ...
  local name=$1 fields=$2; shift 2
  train "$name" --set "model=$BERT, $fields}" "$@"
}
run bert-mup-postln-lr2e-3        "parametrization: mup"                        --set optim.lr=2e-3
run bert-mup-preln-lr2e-3         "parametrization: mup, pre_layer_norm: true"  --set optim.lr=2e-3
run bert-mup-postln-lr2e-3-wu30   "parametrization: mup"                        --set optim.lr=2e-3 --set optim.warmup_fraction=0.3
run bert-sp-postln-lr1e-3         "parametrization: sp"                         --set optim.lr=1e-3
run bert-mup-preln-lr6e-3         "parametrization: mup, pre_layer_norm: true"  --set optim.lr=6e-3
train pt-default  # PT with every default, for the same curves
