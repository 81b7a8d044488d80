#!/usr/bin/env bash
# issue 12: the three sweeps at the comparison's budget, then `probformer compare --preset compare-cpu-2m`,
# then the committed copies (results/sweeps/<arch>-2m/, results/compare/cpu-2m/, with each finished
# run's records in results/compare/cpu-2m/runs/). Hours of CPU (~1-1.8 h per sweep with two one-thread
# workers; the comparison took 2.5 h on 2 cores, both seeds at once); resumable: run it again after an
# interruption and finished trials / runs are read back, interrupted ones resume.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi  # the README's install puts probformer there
ALL="bert ut pt"
ARCHS=${ARCHS:-$ALL}
mkdir -p runs/logs
for arch in $ARCHS; do
  out=runs/sweep-$arch-2m
  if [ -f "results/sweeps/$arch-2m/best.json" ] && [ -z "${RESWEEP:-}" ]; then
    echo "sweep $arch: committed in results/sweeps/$arch-2m (RESWEEP=1 runs it again)"; continue
  fi
  # a finished study only rewrites trials.csv / best.json; the second worker starts once the first has
  # enqueued the anchors
  probformer sweep --preset "sweep-$arch-2m" --set train.threads=1 >> "runs/logs/sweep-$arch-w1.log" 2>&1 &
  first=$!
  trap 'kill $first 2>/dev/null' EXIT  # an interrupted script leaves no worker behind
  sleep 30
  probformer sweep --preset "sweep-$arch-2m" --set train.threads=1 >> "runs/logs/sweep-$arch-w2.log" 2>&1
  wait "$first"
  trap - EXIT
  mkdir -p "results/sweeps/$arch-2m"
  cp "$out"/{best.json,trials.csv,spec.yaml,command.txt} "results/sweeps/$arch-2m/"
done
if [ "$ARCHS" != "$ALL" ]; then echo "done: sweeps $ARCHS (compare needs all three)"; exit 0; fi
# Each arch's point from the committed copy of its sweep (the same file the sweep wrote in runs/).
# One process per seed, one thread each: these small models use two cores better as two one-thread
# processes than as one two-thread one (the sweeps' one-thread trials, two at once, trained BERT / UT at
# ~5k tokens/s each and PT at ~2.2k each). The dry run first builds the corpus cache, so the two do not
# both build it; the last pass trains nothing: it reads every run back and writes the tables and plots.
COMPARE=(probformer compare --preset compare-cpu-2m --set train.threads=1
  --set hparams_from.pt=results/sweeps/pt-2m/best.json
  --set hparams_from.bert=results/sweeps/bert-2m/best.json
  --set hparams_from.ut=results/sweeps/ut-2m/best.json)
# Runs finished in earlier sessions are committed as records (../finished-runs.sh): put them back first,
# so a fresh checkout reads them back instead of training them again.
KEEP=(runs/compare-cpu-2m/runs results/compare/cpu-2m/runs)
bash results/compare/finished-runs.sh restore "${KEEP[@]}"
"${COMPARE[@]}" --dry-run
"${COMPARE[@]}" --seeds 0 >> runs/logs/compare-cpu-2m-s0.log 2>&1 &
seed0=$!
trap 'kill $seed0 2>/dev/null' EXIT
"${COMPARE[@]}" --seeds 1 >> runs/logs/compare-cpu-2m-s1.log 2>&1
wait "$seed0"
trap - EXIT
"${COMPARE[@]}"
bash results/compare/finished-runs.sh save "${KEEP[@]}"
for f in runs/compare-cpu-2m/*; do if [ -f "$f" ]; then cp "$f" results/compare/cpu-2m/; fi; done
echo "done: results/sweeps/{bert,ut,pt}-2m and results/compare/cpu-2m"
