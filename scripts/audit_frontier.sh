#!/usr/bin/env bash
# The privacy-utility frontier on Fashion-MNIST (docs/privacy.md §4b): `visualmixer audit
# --frontier`, one seed per output folder so that each finished seed is kept, then one combined
# table (mean ± sd over seeds). Usage: bash scripts/audit_frontier.sh [SEED...]   (default 0 1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-src}
OUT=${OUT:-out/audit-frontier}
METHODS=(clean visualmixer:0.5 visualmixer:0.5/r7 visualmixer:0.5/r14 visualmixer:0.5/blocks
         visualmixer:0.5/r7/blocks visualmixer:0.5/online visualmixer:0.5/r7/online
         pixelate:4 scramble:4)
seeds=("$@"); [[ ${#seeds[@]} -eq 0 ]] && seeds=(0 1)
for s in "${seeds[@]}"; do
  if [[ -f "$OUT/seed$s/results.json" ]]; then echo "skip seed $s"; continue; fi
  PYTHONPATH="$SRC" "$PY" -W ignore -m visualmixer audit --frontier --seed "$s" \
      --methods "${METHODS[@]}" --train-results out/exp2 --quiet --out "$OUT/seed$s"
done
PYTHONPATH="$SRC" "$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from visualmixer.report.audit import aggregate_seeds
out = Path(sys.argv[1])
per = [json.loads(p.read_text()) for p in sorted(out.glob("seed*/results.json"))]
json.dump({"seeds": len(per), "aggregate": aggregate_seeds(per)}, open(out / "aggregate.json", "w"), indent=1)
print("wrote", out / "aggregate.json", "from", len(per), "seeds")
PY
