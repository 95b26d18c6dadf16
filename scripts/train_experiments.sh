#!/usr/bin/env bash
# Issue 4 experiments (docs/results.md): accuracy loss vs target VFE, offline vs online,
# ST-Adam vs Adam vs SGD. Small on purpose (2 shared CPU cores): Fashion-MNIST 10k/2k subsets,
# small CNN, 3 epochs, 3 seeds. Each run is skipped when its metrics.json exists; interrupted
# runs resume from their checkpoints. Usage: bash scripts/train_experiments.sh [GROUP...]
# GROUP: grid-offline optim grid-online overhead extra photos (default: all, in that order).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-src}  # e.g. a frozen `git archive` copy, so a run is not changed by later commits
OUT=${OUT:-out/exp}
COMMON=(--data fashion-mnist --model cnn --epochs 3 --seeds 0 1 2 --train-size 10000
        --test-size 2000 --no-progress --resume)

run() {  # run NAME ARGS...
  local name=$1; shift
  if [[ -f "$OUT/$name/metrics.json" ]]; then echo "skip $name"; return; fi
  echo "== $name: visualmixer train $* --out $OUT/$name"
  local t0=$SECONDS
  PYTHONPATH="$SRC" "$PY" -W ignore -m visualmixer train "$@" --out "$OUT/$name"
  echo "== $name done in $((SECONDS - t0)) s"
}

groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(grid-offline optim grid-online overhead extra photos)
for g in "${groups[@]}"; do
  case $g in
    grid-offline)  # the clean baseline and two targets, Adam 1e-3 as in SPEC §10
      for t in none 0.5 0.7; do
        run "fm-cnn-offline-$t" "${COMMON[@]}" --optimizer adam --target-vfe "$t" --mode offline
      done ;;
    optim)  # SPEC §8.4 at target 0.5 offline; Adam 1e-3 is fm-cnn-offline-0.5 above
      run "fm-cnn-offline-0.5-st-adam-lr0.001" "${COMMON[@]}" --optimizer st-adam --lr 0.001 \
          --target-vfe 0.5 --mode offline
      run "fm-cnn-offline-0.5-sgd-lr0.05" "${COMMON[@]}" --optimizer sgd --lr 0.05 \
          --target-vfe 0.5 --mode offline ;;
    grid-online)
      run "fm-cnn-online-0.5" "${COMMON[@]}" --optimizer adam --target-vfe 0.5 --mode online ;;
    overhead)
      if [[ ! -f "$OUT/overhead.json" ]]; then
        mkdir -p "$OUT"
        PYTHONPATH="$SRC" "$PY" -W ignore scripts/train_overhead.py --n 4096 --reps 3 \
            > "$OUT/overhead.json.tmp" && mv "$OUT/overhead.json.tmp" "$OUT/overhead.json"
        cat "$OUT/overhead.json"
      fi ;;
    extra)
      run "fm-cnn-offline-0.3" "${COMMON[@]}" --optimizer adam --target-vfe 0.3 --mode offline
      for spec in st-adam:0.003 adam:0.003 sgd:0.02; do
        o=${spec%%:*}; lr=${spec##*:}
        run "fm-cnn-offline-0.5-$o-lr$lr" "${COMMON[@]}" --optimizer "$o" --lr "$lr" \
            --target-vfe 0.5 --mode offline
      done
      run "fm-cnn-online-0.7" "${COMMON[@]}" --optimizer adam --target-vfe 0.7 --mode online ;;
    photos)
      for t in none 0.5 0.7; do
        run "photos-cnn-offline-$t" --data photos --model cnn --epochs 5 --seeds 0 1 2 \
            --no-progress --resume --optimizer adam --target-vfe "$t" --mode offline
      done ;;
    *) echo "unknown group $g" >&2; exit 2 ;;
  esac
done
