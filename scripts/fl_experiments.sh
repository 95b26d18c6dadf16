#!/usr/bin/env bash
# Clean FL vs VisualMixer FL (target VFE 0.5, offline and online) on a Fashion-MNIST subset, IID
# and dirichlet:0.5, 2 seeds, on the loopback deployment engine. Finished runs are skipped.
# Results: $OUT/<setting>/history.json; table: python scripts/fl_summary.py $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-src}  # e.g. a frozen `git archive` copy of the library
OUT=${OUT:-out/fl}
CLIENTS=${CLIENTS:-4}; ROUNDS=${ROUNDS:-3}; TRAIN=${TRAIN:-3000}; TEST=${TEST:-1000}
for seed in 0 1; do
  for part in iid dirichlet:0.5; do
    for setting in none offline online; do
      if [[ $setting == none ]]; then args=(--target-vfe none); name="${part/:/}-vfenone-seed$seed"
      else args=(--target-vfe 0.5 --mode "$setting"); name="${part/:/}-vfe0.5-$setting-seed$seed"; fi
      if grep -qs '"finished": true' "$OUT/$name/history.json"; then echo "skip $name"; continue; fi
      echo "== $name"
      PYTHONPATH="$SRC" "$PY" -W ignore -m visualmixer fl --clients "$CLIENTS" --rounds "$ROUNDS" \
        --partition "$part" "${args[@]}" --train-size "$TRAIN" --test-size "$TEST" --seed "$seed" \
        --timeout 1500 --out "$OUT/$name"
    done
  done
done
