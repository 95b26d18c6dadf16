"""Opt-in ``torch.compile`` of generator 2's slot keys (:mod:`visualmixer.core.fused`) against
the eager chain, interleaved in one process (process CPU time, one torch thread).

For each repetition, ``obfuscate`` and ``restore`` of the same batch are timed ``--calls`` times
eagerly, then compiled (the compiled function was warmed up first); prints the best and the
median images per CPU-second of each, and the slot keys alone for 37,632 rows x 256 slots.

    OMP_NUM_THREADS=1 python benchmarks/bench_fused.py --reps 6 --json out/bench-fused.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import visualmixer as vm
from visualmixer.core import fused, keyed
from visualmixer.data.samples import builtin_photos


def _times(fn, calls: int) -> list[float]:
    fn()
    out = []
    for _ in range(calls):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    _, x = builtin_photos(a.size)
    x = x.repeat(-(-a.batch // len(x)), 1, 1, 1)[: a.batch].contiguous()
    key, ids = vm.Key.from_seed(0), range(a.batch)
    res = vm.obfuscate(x, key=key, ids=ids)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(-(2**31), 2**31 - 1, (2, 37632), dtype=torch.int32, generator=g)
    golden, slots = keyed._slot_terms(256, "cpu")
    calls = {
        "obfuscate": lambda: vm.obfuscate(x, key=key, ids=ids),
        "restore": lambda: vm.restore(res.images, res.plans, key=key, ids=ids),
        "slot keys 37632x256": lambda: keyed._slot_keys(rows[0], rows[1], golden, slots, ~255),
    }
    previous = fused.set_enabled(True)
    for fn in calls.values():  # compile (and warm) every shape first
        fn()
    out: dict = {name: {"eager": [], "compiled": []} for name in calls}
    try:
        for _ in range(a.reps):
            for mode in ("eager", "compiled"):
                fused.set_enabled(mode == "compiled")
                for name, fn in calls.items():
                    out[name][mode] += _times(fn, a.calls)
    finally:
        fused.set_enabled(previous)
    per = {"obfuscate": a.batch, "restore": a.batch}
    for name, modes in out.items():
        line = []
        for mode, ts in modes.items():
            if name in per:
                line.append(f"{mode} {per[name] / statistics.median(ts):,.0f} img/s (best {per[name] / min(ts):,.0f})")
            else:
                line.append(f"{mode} {1e3 * statistics.median(ts):.1f} ms (best {1e3 * min(ts):.1f})")
        print(f"{name}: " + "; ".join(line), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"size": a.size, "batch": a.batch, "seconds": out}, f)


if __name__ == "__main__":
    main()
