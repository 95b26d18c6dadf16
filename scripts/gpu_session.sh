#!/usr/bin/env bash
# One GPU session, run as one command on a lent GPU machine (docs/performance.md "On a GPU",
# docs/results.md "On a GPU", docs/privacy.md): the CUDA tests, the GPU speed of the core kernels
# (CUDA graphs, eager, the opt-in Triton kernels and torch.compile) and of online
# training, then, on request (step 4), ResNet-18 runs with keyed region mixing in parallel on the
# GPU until a deadline. Everything lands in $RES (default out/gpu) and, where $OUT
# is set, in $OUT/gpu.tgz (checkpoints left out) and $OUT/session.log.
#
#   DEADLINE_S=480 JOBS=14 bash scripts/gpu_session.sh                                 # steps 1-3b
#   DEADLINE_S=330 JOBS=14 STEPS="1 1b 2 2b 3 3b 4" bash scripts/gpu_session.sh       # + the mixing runs
#   STEPS="1 2 3b 4" SEEDS=2 DEADLINE_S=330 JOBS=14 bash scripts/gpu_session.sh   # some steps, another seed
#
# Run it again on the same machine to finish: finished runs are skipped, runs cut at the deadline
# resume from their last epoch's checkpoint (the checks and timings of steps 1-3 run again).
# PY defaults to python3 (that machine's PyTorch); the package runs from src/ via PYTHONPATH.
# Fashion-MNIST: the Debian path, or a copy carried in .devdata/fashion-mnist (git-ignored; before the
# session: mkdir -p .devdata && cp -r /usr/share/datasets/fashion-mnist .devdata/, then run with carry [".devdata"]).
set -u
cd "$(dirname "$0")/.."
export PY=${PY:-python3} RES=${RES:-out/gpu} DEV=${DEV:-cuda} PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export END=$(( $(date +%s) + ${DEADLINE_S:-480} ))
JOBS=${JOBS:-8}
mkdir -p "$RES/logs"
LOG=$RES/session.log
exec > >(tee -a "$LOG") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
STEPS=" ${STEPS:-1 1b 2 2b 3 3b} "  # (4, the privacy work's mixing runs: on request)
step() { [[ $STEPS == *" $1 "* ]]; }  # STEPS="1 3b" runs those steps only

if [[ ! -d /usr/share/datasets/fashion-mnist && -d .devdata/fashion-mnist ]]; then
  mkdir -p /usr/share/datasets && cp -r .devdata/fashion-mnist /usr/share/datasets/
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, torchvision, numpy, skimage; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'skimage', skimage.__version__, 'cuda', torch.cuda.is_available())"
nproc

if step 1; then
stamp "1. CUDA tests (generator 2 bit-identical CPU/CUDA; CUDA graphs give the eager bytes; no host sync under set_sync_debug_mode('error'))"
timeout 150 $PY -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
  tests/test_core_speed_paths.py tests/test_graphs.py tests/test_fused.py tests/test_triton_kernels.py tests/test_generator2.py tests/test_mixer.py tests/test_optim.py tests/test_vfe.py \
  tests/test_train.py tests/test_feed.py tests/test_weighting.py 2>&1 | tail -25

fi

if step 1b; then
stamp "1b. CPU/GPU bytes and sync count at the goal sizes (224² b256, 32² b256, 28² grey b256), eager kernels and the opt-in Triton ones"
timeout 150 $PY -W ignore - <<'PYEOF' 2>&1 | tee "$RES/core-gpu-check.txt"
import warnings, torch, visualmixer as vm
from visualmixer.core import triton_switch
from visualmixer.data.samples import builtin_photos
key = vm.Key.from_seed(12)
for triton in (False, True):
  triton_switch.set_enabled(triton)
  for size, n, grey in [(224, 256, False), (32, 256, False), (28, 256, True)]:
    _, x = builtin_photos(size)
    x = x.repeat(-(-n // len(x)), 1, 1, 1)[:n].contiguous()
    x = x[:, :1].contiguous() if grey else x
    a = vm.obfuscate(x, key=key, ids=range(n))
    b = vm.obfuscate(x.cuda(), key=key, ids=range(n))  # (first calls: caches, Triton's first-use checks)
    vm.restore(b.images, b.plans, key=key, ids=range(n))
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = vm.obfuscate(x.cuda(), key=key, ids=range(n))
        back = vm.restore(b.images, b.plans, key=key, ids=range(n))
        v = vm.vfe(b.images)
        torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(m.message)[:90] for m in w if "synchroniz" in str(m.message)]
    print("triton" if triton else "eager", size, "grey" if grey else "rgb", "images equal",
          torch.equal(a.images, b.images.cpu()), "plans equal", torch.equal(a.plans.levels, b.plans.levels),
          "vfe max diff", float((a.vfe - b.vfe).abs().max()), "restored", torch.equal(back.cpu(), x),
          "syncs (expected: the results' transfer of plans and vfe)", len(syncs), syncs[:4],
          "| Triton kernels on (after the calls):", triton_switch.enabled(), triton_switch._failed[-1:])
PYEOF

fi

if step 2; then
stamp "2. speed: core kernels on the GPU: graphs + the Triton kernels, CUDA graphs (default), eager, graphs + torch.compile (goals at 224² b256: obfuscate >= 50 000 img/s, restore >= 100 000)"
# triton: graphs + the opt-in Triton kernels (core.triton_kernels: permutations, pixel-pair sums);
# compiled: graphs + the opt-in torch.compile of the slot keys (core.fused)
for mode in triton graphs eager compiled; do
  VISUALMIXER_CUDA_GRAPHS=$([[ $mode == eager ]] && echo 0 || echo 1) VISUALMIXER_COMPILE=$([[ $mode == compiled ]] \
    && echo 1 || echo 0) VISUALMIXER_TRITON=$([[ $mode == triton ]] && echo 1 || echo 0) timeout 150 $PY -W ignore \
    benchmarks/bench_core.py --quick --device "$DEV" --batch 256 --json "$RES/bench-core-$DEV-$mode.json"
done
timeout 60 $PY -W ignore benchmarks/bench_core.py --quick --device "$DEV" --batch 64 \
  --json "$RES/bench-core-$DEV-graphs-b64.json"
$PY -c "import torch, visualmixer as vm; from visualmixer.data.samples import builtin_photos as b; \
x=b(224)[1].repeat(32,1,1,1)[:256].cuda(); vm.obfuscate(x, seed=0); \
print('peak GPU memory of a graphed 224² b256 obfuscate: %.2f GiB' % (torch.cuda.max_memory_allocated()/2**30))" 2>/dev/null

fi

if step 2b; then
stamp "2b. where the time goes: torch.profiler of one obfuscate and one restore at 224² b256 (graphed: GPU time left)"
timeout 60 $PY -W ignore benchmarks/profile_core.py --device "$DEV" --size 224 --batch 256 > "$RES/profile-$DEV-224.txt" 2>&1
VISUALMIXER_TRITON=1 timeout 60 $PY -W ignore benchmarks/profile_core.py --device "$DEV" --size 224 --batch 256 \
  > "$RES/profile-$DEV-224-triton.txt" 2>&1
grep "^==" "$RES/profile-$DEV-224.txt" "$RES/profile-$DEV-224-triton.txt"

fi

if step 3; then
stamp "3. overhead of online obfuscation, batched on the GPU"
for run in cnn:1 resnet18:1 resnet18:0; do
  model=${run%%:*}; tag=$([[ ${run#*:} == 0 ]] && echo eager || echo graphs)
  VISUALMIXER_CUDA_GRAPHS=${run#*:} timeout 90 $PY -W ignore scripts/train_overhead.py --device "$DEV" --where batched \
    --n 8192 --reps 3 --model "$model" > "$RES/overhead-$DEV-$model-$tag.json" && cat "$RES/overhead-$DEV-$model-$tag.json"
done

fi

if step 3b; then
stamp "3b. online training as visualmixer train runs it: ResNet-18, clean vs offline (obfuscated before training: what the step itself pays for obfuscated pixels) vs online in process vs 2 batches ahead in a thread vs 8 CPU worker processes"
for rep in $(seq 1 "${REPS_3B:-1}"); do
  for spec in clean:"--target-vfe none" offline:"--target-vfe 0.5" here:"--mode online --prefetch 0" \
      prefetch2:"--mode online --prefetch 2" prefetch2-triton:"--mode online --prefetch 2" \
      workers8:"--mode online --loader-workers 8"; do
    VISUALMIXER_TRITON=$([[ $spec == *-triton:* ]] && echo 1 || echo 0) \
      timeout 90 $PY -W ignore -m visualmixer train --data fashion-mnist --model resnet18 --epochs 3 --train-size 10000 \
      --test-size 1000 --seeds 0 --no-progress --device "$DEV" ${spec#*:} --out "$RES/lw-gpu/lw-${spec%%:*}-r$rep" > /dev/null 2>&1
  done
done
$PY scripts/summarize_train.py "$RES/lw-gpu" 2>/dev/null | tail -7

fi

if step 4; then
stamp "4. ResNet-18 with keyed region mixing on Fashion-MNIST (20k images, 5 epochs, seeds ${SEEDS:-0 1}), $JOBS at a time, until the deadline"
T="--data fashion-mnist --model resnet18 --epochs 5 --train-size 20000 --no-progress --resume --device $DEV"
for seed in ${SEEDS:-0 1}; do
  sfx=$([[ $seed == 0 ]] || echo "-s$seed")
  for spec in clean:"--target-vfe none" shuffle-offline:"--target-vfe 0.5" shuffle-online:"--target-vfe 0.5 --mode online" \
      mix2-similar-offline:"--mix 2 --groups similar" mix2-similar-online:"--mix 2 --groups similar --mode online" \
      mix4-similar-online:"--mix 4 --groups similar --mode online" mix4-random-offline:"--mix 4"; do
    echo "mix-train/r18-${spec%%:*}$sfx $T --seeds $seed ${spec#*:}"
  done
done > "$RES/jobs.txt"
wc -l < "$RES/jobs.txt"
run_job() {  # NAME ARGS...: one `visualmixer train` run, stopped at the deadline
  local name=$1; shift
  if [[ -f $RES/$name/metrics.json ]]; then echo "done before: $name"; return 0; fi
  local left=$(( END - $(date +%s) ))
  if (( left < 15 )); then echo "not started (deadline): $name"; return 0; fi
  local s=$(date +%s)
  mkdir -p "$RES/logs/$(dirname "$name")"
  OMP_NUM_THREADS=2 timeout "$left" $PY -W ignore -m visualmixer train "$@" --out "$RES/$name" \
    > "$RES/logs/$name.log" 2>&1
  echo "rc=$? $(( $(date +%s) - s )) s $name"
}
export -f run_job
xargs -P "$JOBS" -L 1 bash -c 'run_job "$@"' _ < "$RES/jobs.txt"
$PY scripts/mix_train_table.py --root "$RES/mix-train" --prefix r18 --json "$RES/mix-train-r18.json"
fi

stamp "done: $(ls "$RES"/mix-train/*/metrics.json 2>/dev/null | wc -l) runs complete"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader

if [[ -n ${OUT:-} ]]; then
  tar czf "$OUT/gpu.tgz" --exclude='*.pt' --exclude='*.tmp' "$RES"
  cp "$LOG" "$OUT/session.log"
  ls -la "$OUT"
fi
