#!/usr/bin/env bash
# The long fault-injection run of the dataset tools (figures in docs/tools.md).
#   scripts/fault_suite.sh [RUNS] [IMAGES] [SEED]
# RUNS trials (default 45, cycling through the 9 kinds of fault), each on a fresh destination over
# one folder of IMAGES real-format images (default 300: mixed JPEG/PNG, 1 in 12 broken), one fault
# at a random point, then resume and check. Writes the figures to out/fault_suite.json
# (or $VM_FAULT_REPORT) and prints "N faults of K kinds injected, X images lost, Y wrong restores".
# ENOSPC uses a small tmpfs when run as root where mount works, else a patched fsync.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-45}
IMAGES=${2:-300}
SEED=${3:-0}
REPORT=${VM_FAULT_REPORT:-out/fault_suite.json}
mkdir -p "$(dirname "$REPORT")"
PY=${PYTHON:-.venv/bin/python}
VM_FAULT_RUNS=$RUNS VM_FAULT_IMAGES=$IMAGES VM_FAULT_SEED=$SEED \
VM_FAULT_REPORT=$(realpath -m "$REPORT") \
  "$PY" -m pytest -q -p no:xdist -p no:cacheprovider -m faults -s tests/test_faults.py
