#!/usr/bin/env bash
# issue 24, deliverable 2: the default `probformer train` in fp32 and in bf16 autocast on this CPU, seeds 0
# and 1, then their learning curves overlaid and the final losses side by side. Two one-thread processes at
# a time. Resumable: rerun after an interruption (finished runs are skipped, cut ones resume).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
OUT=runs/bf16-parity
mkdir -p "$OUT"
train() {  # precision seed
  local dir="$OUT/$1-s$2"
  if [ -f "$dir/summary.json" ]; then return; fi
  local how=""
  if [ -d "$dir/checkpoint" ]; then how="--resume"; elif [ -d "$dir" ]; then how="--overwrite"; fi
  probformer train --set progress=false --set threads=1 --set precision="$1" --set seed="$2" --out-dir "$dir" $how \
    > "$dir.log" 2>&1
}
for seed in 0 1; do
  train fp32 "$seed" & train bf16 "$seed"; wait
done
probformer curves "$OUT"/fp32-s0 "$OUT"/fp32-s1 "$OUT"/bf16-s0 "$OUT"/bf16-s1 --out results/bf16-parity/learning_curves.png \
  | tee results/bf16-parity/curves.txt
python - "$OUT" <<'PY' | tee results/bf16-parity/summary.md
import json, sys
from pathlib import Path
from probformer.experiments import noise
runs = Path(sys.argv[1])
final = {p: [json.loads((runs / f"{p}-s{s}" / "summary.json").read_text()) for s in (0, 1)] for p in ("fp32", "bf16")}
print("| precision | seed 0 valid | seed 1 valid | tokens/s (1 thread) |")
print("|---|---|---|---|")
for p, rows in final.items():
    print(f"| {p} | {rows[0]['valid_loss']:.4f} | {rows[1]['valid_loss']:.4f} | "
          f"{sum(r['tokens_per_second'] for r in rows) / 2:,.0f} |")
d = noise.difference(noise.Seeds.of([r["valid_loss"] for r in final["bf16"]]),
                     noise.Seeds.of([r["valid_loss"] for r in final["fp32"]]))
print(f"\nbf16 - fp32 final valid loss: {d.delta:+.4f} nats, {d.ratio:.2f}x the seed noise ({d.noise:.4f}): "
      + ("within" if not d.real else "beyond") + " the noise rule (" + noise.RULE + ").")
PY
