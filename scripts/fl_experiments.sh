#!/usr/bin/env bash
# Clean FL vs VisualMixer FL (target VFE 0.5, offline) on a Fashion-MNIST subset, IID and
# dirichlet:0.5, 2 seeds, on the loopback deployment engine. Results: out/fl/<setting>/history.json;
# summary table: python scripts/fl_summary.py out/fl
set -euo pipefail
PY=${PY:-.venv/bin/python}
CLIENTS=${CLIENTS:-4}; ROUNDS=${ROUNDS:-3}; TRAIN=${TRAIN:-3000}; TEST=${TEST:-1000}
for seed in 0 1; do
  for part in iid dirichlet:0.5; do
    for target in none 0.5; do
      name="${part/:/}-vfe${target}-seed${seed}"
      "$PY" -m visualmixer fl --clients "$CLIENTS" --rounds "$ROUNDS" --partition "$part" \
        --target-vfe "$target" --train-size "$TRAIN" --test-size "$TEST" --seed "$seed" \
        --timeout 900 --out "out/fl/$name"
    done
  done
done
