#!/usr/bin/env bash
# Training experiments (docs/results.md): accuracy loss vs target VFE (offline and online, two data
# sets, two models), ST-Adam vs Adam vs SGD over a small learning-rate sweep, online overhead.
# Small on purpose (2 CPU cores): Fashion-MNIST 10k/2k subsets and the 5k/1k photos colour set,
# 3-5 epochs, 3 seeds. Each run is skipped when its metrics.json exists; interrupted runs resume
# from their checkpoints. Usage: bash scripts/train_experiments.sh [GROUP...]
# GROUP: fm-grid photos-grid optim large overhead (default: all, in that order), full and
# full-online (all of Fashion-MNIST, 10 epochs: clean + 0.5 offline, 0.5 online), loader-workers
# (online epoch time in the training process vs in a worker process), or the groups
# sized for a GPU: large-grid (ShuffleNetV2 and ResNet-18 over the whole target grid at the small
# CNN's sizes), optim-sweep (4 learning rates per optimizer, 10 epochs, a clean run for each).
# DEVICE=cuda trains on the GPU; PRINT_JOBS=1 prints one "NAME ARGS..." line per run instead of
# running it (scripts/gpu_session.sh runs those lines in parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-src}  # e.g. a frozen `git archive` copy, so a run is not changed by later commits
OUT=${OUT:-out/exp}
DEVICE=${DEVICE:-cpu}
FM=(--data fashion-mnist --epochs 3 --seeds 0 1 2 --train-size 10000 --test-size 2000
    --no-progress --resume --device "$DEVICE")
FM10=(--data fashion-mnist --epochs 10 --seeds 0 1 2 --train-size 10000 --test-size 2000
      --no-progress --resume --device "$DEVICE")
PH=(--data photos --epochs 5 --seeds 0 1 2 --no-progress --resume --device "$DEVICE")  # 5000/1000, 32²
TARGETS=(0.3 0.4 0.5 0.6 0.7)

run() {  # run NAME ARGS...
  local name=$1; shift
  if [[ -n ${PRINT_JOBS:-} ]]; then echo "$name $*"; return; fi
  if [[ -f "$OUT/$name/metrics.json" ]]; then echo "skip $name"; return; fi
  echo "== $name: visualmixer train $* --out $OUT/$name"
  local t0=$SECONDS
  PYTHONPATH="$SRC" "$PY" -W ignore -m visualmixer train "$@" --out "$OUT/$name"
  echo "== $name done in $((SECONDS - t0)) s"
}

grid() {  # grid PREFIX ARGS...: clean baseline, every target offline, every target online
  local prefix=$1; shift
  run "$prefix-offline-none" "$@" --optimizer adam --target-vfe none
  for t in "${TARGETS[@]}"; do
    run "$prefix-offline-$t" "$@" --optimizer adam --target-vfe "$t" --mode offline
  done
  for t in "${TARGETS[@]}"; do
    run "$prefix-online-$t" "$@" --optimizer adam --target-vfe "$t" --mode online
  done
}

groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(fm-grid photos-grid optim large overhead)
for g in "${groups[@]}"; do
  case $g in
    fm-grid) grid fm-cnn "${FM[@]}" --model cnn ;;
    photos-grid) grid photos-cnn "${PH[@]}" --model cnn ;;
    optim)  # the optimiser comparison at target 0.5 offline, same data and seeds, a small lr sweep each
      for spec in adam:0.001 adam:0.003 st-adam:0.001 st-adam:0.003 sgd:0.02 sgd:0.05; do
        o=${spec%%:*}; lr=${spec##*:}
        run "fm-cnn-offline-0.5-$o-lr$lr" "${FM[@]}" --model cnn --optimizer "$o" --lr "$lr" \
            --target-vfe 0.5 --mode offline
      done ;;
    large)  # the larger model, ShuffleNetV2 (1.26 M parameters): clean vs obfuscated, small subsets
      # to fit 2 CPU cores (colour set: 2000 training images; Fashion-MNIST: 5000)
      args=(--data photos --epochs 3 --seeds 0 1 2 --train-size 2000 --no-progress --resume)
      for t in offline-none offline-0.5 online-0.5 offline-0.7; do
        run "photos-shufflenet-$t" "${args[@]}" --model shufflenet --optimizer adam \
            --target-vfe "${t#*-}" --mode "${t%%-*}"
      done
      args=(--data fashion-mnist --epochs 3 --seeds 0 1 2 --train-size 5000 --test-size 2000
            --no-progress --resume)
      for t in offline-none offline-0.5; do
        run "fm-shufflenet-$t" "${args[@]}" --model shufflenet --optimizer adam \
            --target-vfe "${t#*-}" --mode "${t%%-*}"
      done ;;
    large-grid)  # GPU-sized: both larger models, every target, both modes, the CNN's sizes
      for model in shufflenet resnet18; do
        grid "fm-$model" "${FM[@]}" --model "$model"
        grid "photos-$model" "${PH[@]}" --model "$model"
      done ;;
    optim-sweep)  # GPU-sized: the optimiser comparison over 4 rates each, 10 epochs, paired clean runs
      for spec in adam:0.0003 adam:0.001 adam:0.003 adam:0.01 st-adam:0.0003 st-adam:0.001 \
                  st-adam:0.003 st-adam:0.01 sgd:0.01 sgd:0.02 sgd:0.05 sgd:0.1; do
        o=${spec%%:*}; lr=${spec##*:}
        for t in 0.5 none; do
          run "fm-cnn-offline-$t-$o-lr$lr" "${FM10[@]}" --model cnn --optimizer "$o" \
              --lr "$lr" --target-vfe "$t" --mode offline
        done
      done ;;
    full|full-online)  # all 60 000 / 10 000 Fashion-MNIST images, small CNN, 10 epochs
      args=(--data fashion-mnist --model cnn --epochs 10 --seeds 0 1 2 --no-progress --resume
            --device "$DEVICE" --optimizer adam)
      if [[ $g == full ]]; then
        run fmfull-cnn-offline-none "${args[@]}" --target-vfe none
        run fmfull-cnn-offline-0.5 "${args[@]}" --target-vfe 0.5 --mode offline
      else
        run fmfull-cnn-online-0.5 "${args[@]}" --target-vfe 0.5 --mode online
      fi ;;
    loader-workers)  # online overhead as `visualmixer train` sees it: in the training process
      # (each batch when asked for, or 2 ahead in a background thread) vs one worker process
      # (one torch thread each, so a 2-core machine has a core to spare)
      for r in 1 2; do
        for spec in clean:"--target-vfe none" here:"--mode online --prefetch 0" \
                    prefetch2:"--mode online --prefetch 2" workers1:"--mode online --loader-workers 1"; do
          # shellcheck disable=SC2086
          OMP_NUM_THREADS=1 run "lw-${spec%%:*}-r$r" --data fashion-mnist --epochs 3 \
              --train-size 10000 --test-size 1000 --no-progress --resume --device "$DEVICE" \
              ${spec#*:}
        done
      done ;;
    overhead)
      for kind in batched workers; do
        if [[ ! -f "$OUT/overhead-$kind.json" ]]; then
          mkdir -p "$OUT"
          PYTHONPATH="$SRC" "$PY" -W ignore scripts/train_overhead.py --n 4096 --reps 3 \
              --where "$kind" > "$OUT/overhead-$kind.json.tmp"
          mv "$OUT/overhead-$kind.json.tmp" "$OUT/overhead-$kind.json"
          cat "$OUT/overhead-$kind.json"
        fi
      done ;;
    *) echo "unknown group $g" >&2; exit 2 ;;
  esac
done
