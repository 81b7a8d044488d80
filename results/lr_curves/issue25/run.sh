#!/usr/bin/env bash
# issue 25: PT lr curves with the base at N0 = 64 (docs/results/lr-curves.md#issue-25-8x-width-4x-tokens-depth)
#   8x         SP and muP at N = 64..512; every N <= 256 study is read from the committed pt-cpu (SP) and
#              pt-cpu-n64 (muP): only N = 512 trains (20 runs, ~40 min)
#   transfer-8x the transfer test at N = 512 (probformer transfer --preset transfer-pt-n64-8x-cpu: the committed
#              N0 = 64 sweep's best point against each tuned hyperparameter x2 and /2; 18 runs, ~40 min),
#              into results/transfer/pt-n64-8x-cpu/
#   depth-tT   PT-muP at N = 64 and 256 with T = 2, 3, 5, 8 MFVI iterations (T = 2 is read from pt-cpu-n64:
#              0 runs; 20 runs each otherwise, ~25 min / 45 min / 70 min), then `probformer lr-depth`
#   4x-tokens  SP and muP at N = 64..256 with 393,216 tokens per run (60 runs, ~3 h; they took ~75 min)
# The times are the spec headers' estimates for two one-thread workers on 2 cores (longer on busy ones).
# Each spec: its plan (--dry-run), two one-thread workers on it (one when nothing trains), logs under runs/logs,
# then the table from every finished study (--report-only) and the committed copies: spec.yaml, results.csv,
# best_lr.md, lr_curves.png and command.txt of runs/lr-curves-<name> into results/lr_curves/<name>/; at the
# end the depth report into results/lr_curves/pt-n64-depth-cpu/. Resumable: run it again after an
# interruption (finished runs are read back, an interrupted one resumes from its checkpoint; a spec already
# committed is skipped unless RERUN=1). SPECS="8x depth-t3" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi  # the README's install puts probformer there
ALL="8x transfer-8x depth-t2 depth-t3 depth-t5 depth-t8 4x-tokens"
SPECS=${SPECS:-$ALL}
DEPTHS="2 3 5 8"
mkdir -p runs/logs
transfer_8x() {  # two one-thread processes, one per seed, then the report from both seeds' finished runs
  local dest=results/transfer/pt-n64-8x-cpu out=runs/transfer-pt-n64-8x-cpu
  if [ -f "$dest/report.md" ] && [ -z "${RERUN:-}" ]; then
    echo "transfer-pt-n64-8x-cpu: committed in $dest (RERUN=1 runs it again)"; return
  fi
  local TR=(probformer transfer --preset transfer-pt-n64-8x-cpu --set train.threads=1)
  "${TR[@]}" --set "seeds=[0]" >> runs/logs/transfer-pt-n64-8x-cpu-s0.log 2>&1 &
  local first=$!
  trap "kill $first 2>/dev/null" EXIT  # the pid now: a local is gone when the trap runs
  "${TR[@]}" --set "seeds=[1]" >> runs/logs/transfer-pt-n64-8x-cpu-s1.log 2>&1
  wait "$first"
  trap - EXIT
  "${TR[@]}" > /dev/null  # trains nothing now: reads both seeds back, writes the report
  mkdir -p "$dest"
  cp "$out"/{spec.yaml,results.csv,report.md,transfer.png,command.txt} "$dest/"
  echo "transfer-pt-n64-8x-cpu: done, $dest/report.md"
}
for name in $SPECS; do
  if [ "$name" = transfer-8x ]; then transfer_8x; continue; fi
  preset=lr-curves-pt-n64-$name-cpu
  out=runs/$preset                          # the preset's out_dir
  dest=results/lr_curves/${out#runs/lr-curves-}  # runs/lr-curves-X -> results/lr_curves/X, as the others
  if [ -f "$dest/best_lr.md" ] && [ -z "${RERUN:-}" ]; then
    echo "$preset: committed in $dest (RERUN=1 runs it again)"; continue
  fi
  LRC=(probformer lr-curves --preset "$preset" --set train.threads=1)
  plan=$("${LRC[@]}" --dry-run)  # which studies train, which are read from the references
  echo "$preset:"; echo "$plan"
  if grep -q '^to train: 0 runs' <<< "$plan"; then
    "${LRC[@]}" >> "runs/logs/$preset-w1.log" 2>&1
  else
    "${LRC[@]}" >> "runs/logs/$preset-w1.log" 2>&1 &
    first=$!
    trap 'kill $first 2>/dev/null' EXIT  # an interrupted script leaves no worker behind
    sleep 10  # the first worker creates the studies' database
    "${LRC[@]}" >> "runs/logs/$preset-w2.log" 2>&1
    wait "$first"
    trap - EXIT
  fi
  "${LRC[@]}" --report-only > /dev/null  # the outputs from every finished study, after both workers
  mkdir -p "$dest"
  cp "$out"/{spec.yaml,results.csv,best_lr.md,lr_curves.png,command.txt} "$dest/"
  echo "$preset: done, $dest/best_lr.md"
done
depth_dirs=()
for t in $DEPTHS; do depth_dirs+=("results/lr_curves/pt-n64-depth-t$t-cpu"); done
for dir in "${depth_dirs[@]}"; do
  if [ ! -f "$dir/results.csv" ]; then echo "depth report: $dir not finished yet"; exit 0; fi
done
probformer lr-depth "${depth_dirs[@]}" --out results/lr_curves/pt-n64-depth-cpu
