#!/usr/bin/env bash
# issue 24, deliverable 2's open question: does PT's tuned lr (3.6e-2) behave differently in bf16? The
# compare-cpu-20m lr check (results/compare/cpu-20m/run.sh) trains PT at 1M parameters with that lr over
# 10 epochs in bf16, where its curve bumps up at step 750 (4.82 -> 4.91) while lr / 2 descends smoothly.
# This trains the same run (pt-1M-x1-fp32.yaml: its train_config.json with precision fp32, test off) in
# fp32 and draws both curves. Resumable (rerun it); the committed fp32 record stops at step 1250, where
# the question was answered, to give the cores back to the comparison: run it to the end to extend it.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
HERE=results/bf16-parity/ten-epochs
RUN=runs/bf16-lr-check/pt-1M-x1-fp32
how=""; if [ -d "$RUN/checkpoint" ]; then how="--resume"; fi
probformer train --config "$HERE/pt-1M-x1-fp32.yaml" --out-dir "$RUN" $how
mkdir -p "$HERE/records/fp32" && cp "$RUN"/{metrics.jsonl,train_config.json} "$HERE/records/fp32/"
probformer curves results/compare/cpu-20m/lr-check/runs-x1/pt-1M-s0 "$HERE/records/fp32" \
  --labels "bf16 (lr check x1)","fp32 control" --out "$HERE/curves.png"
