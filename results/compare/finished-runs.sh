#!/usr/bin/env bash
# The records of a comparison's finished runs, committed so that it survives a fresh checkout (runs/ is
# not in git, and a comparison takes longer than one session). Usage: finished-runs.sh ACTION LIVE KEPT,
# LIVE the runs/ folder of a `probformer compare` out_dir (runs/compare-cpu-2m/runs), KEPT its committed
# copy (results/compare/cpu-2m/runs), both from the repository root:
#   save     copy every finished run's records from LIVE into KEPT (then commit them)
#   restore  put the committed records back where `probformer compare` looks, for runs that are not
#            there yet; compare then reads those runs back instead of training them again
# A record is the run's text files only: train_config.json (compare refuses a record trained with
# another configuration), summary.json (final losses and status), compare_run.json (wall time) and
# metrics.jsonl (the learning curve). Weights and checkpoints stay out of git: an unfinished run is not
# kept, and a fresh checkout trains it from its start.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -ne 3 ]; then echo "usage: $0 save|restore LIVE KEPT" >&2; exit 2; fi
live=$2
kept=$3
FILES="train_config.json summary.json compare_run.json metrics.jsonl"
finished() {  # the trainer writes summary.json with status completed or diverged only at the end
  [ -f "$1/summary.json" ] && grep -Eq '"status": "(completed|diverged)"' "$1/summary.json" && [ -f "$1/compare_run.json" ]
}
case "${1:-}" in
  save)
    n=0
    for dir in "$live"/*/; do
      [ -d "$dir" ] && finished "$dir" || continue
      name=$(basename "$dir"); mkdir -p "$kept/$name"
      for f in $FILES; do cp "$dir/$f" "$kept/$name/"; done
      n=$((n + 1))
    done
    echo "saved the records of $n finished runs in $kept";;
  restore)
    n=0
    for dir in "$kept"/*/; do
      [ -d "$dir" ] || continue
      name=$(basename "$dir")
      if finished "$live/$name"; then continue; fi
      if [ -e "$live/$name" ]; then  # an unfinished copy (a checkpoint) loses to the finished record
        echo "restore: $live/$name is unfinished; replacing it by the committed finished record"
        rm -rf "${live:?}/$name"
      fi
      mkdir -p "$live/$name"
      for f in $FILES; do cp "$dir/$f" "$live/$name/"; done
      n=$((n + 1))
    done
    echo "restored the records of $n finished runs into $live";;
  *) echo "usage: $0 save|restore LIVE KEPT" >&2; exit 2;;
esac
