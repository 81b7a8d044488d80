#!/usr/bin/env bash
# The records of finished compare-cpu-2m runs, committed so that the comparison survives a fresh
# checkout (runs/ is not in git, and the comparison takes longer than one session):
#   save     copy every finished run's records from runs/compare-cpu-2m/runs/ into
#            results/compare/cpu-2m/runs/ (then commit them)
#   restore  put the committed records back where `probformer compare` looks, for runs that are not
#            there yet; compare then reads those runs back instead of training them again
# A record is the run's text files only: train_config.json (compare refuses a record trained with
# another configuration), summary.json (final losses and status), compare_run.json (wall time) and
# metrics.jsonl (the learning curve). Weights and checkpoints stay out of git: an unfinished run is not
# kept, and a fresh checkout trains it from its start.
set -euo pipefail
cd "$(dirname "$0")/../../.."
live=runs/compare-cpu-2m/runs
kept=results/compare/cpu-2m/runs
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
  *) echo "usage: $0 save|restore" >&2; exit 2;;
esac
