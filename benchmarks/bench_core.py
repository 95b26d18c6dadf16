"""Speed of the core kernels: images/s for obfuscate (with targeting), restore and vfe.

Every number is also given as a ratio to a plain ``clone()`` of the same batch measured in the
same run (the memory-bandwidth floor), to a *keyed gather floor* of the same batch in the same
run (``index_select`` of every image's pixels with one precomputed permutation: the least any
keyed shuffle must do), and, for single images, to a straightforward per-image Python reference
(loops over windows/regions, as the authors' code does). "reused w" is ``obfuscate`` given
saliency weights made beforehand (``vm.saliency_weights``): the online case, where the same
images are obfuscated again with new keys.

By default the clock is the process's CPU time and torch uses one thread, so the numbers are
images per CPU-second and stay meaningful on a machine shared with other jobs; ``--wall`` uses
wall-clock time and ``--threads`` sets torch's intra-op threads.

    python benchmarks/bench_core.py                 # full table (a few minutes on 2 cores)
    python benchmarks/bench_core.py --quick         # 224² b64, 32² b256, 28² grey b256 only
    python benchmarks/bench_core.py --wall --threads 2 --json out.json
    python benchmarks/bench_core.py --quick --device cuda --batch 256   # GPU: wall clock, synced
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import visualmixer as vm
from visualmixer.data.samples import builtin_photos

CLOCK = time.process_time
DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timeit(fn, min_time=1.0, min_runs=3, max_runs=50):
    fn()  # warm up (caches, allocator)
    _sync()
    times = []
    start = CLOCK()
    while len(times) < min_runs or (CLOCK() - start < min_time and len(times) < max_runs):
        t0 = CLOCK()
        fn()
        _sync()  # GPU kernels are asynchronous: time them to completion
        times.append(CLOCK() - t0)
    return float(np.median(times))


def reference_vfe(img: np.ndarray, s: int) -> float:
    """Per-window Python loop (unweighted), the shape of the authors' implementation."""
    c, h, w = img.shape
    img = img.astype(np.float64)
    vals = []
    for ch in range(c):
        for i in range(0, h, s):
            for j in range(0, w, s):
                win = img[ch, i : i + s, j : j + s]
                g = ((win[:, 1:] - win[:, :-1]) ** 2).sum() + ((win[1:] - win[:-1]) ** 2).sum()
                v = ((win - win.mean()) ** 2).sum()
                vals.append(0.0 if v == 0 else (s + 1) / (4 * s) * g / v)
    return float(np.mean(vals))


def reference_shuffle(img: np.ndarray, region: int, tile: int, rng: np.random.Generator) -> np.ndarray:
    """Per-region, per-channel Python loop shuffling tiles (one uniform level, no targeting)."""
    c, h, w = img.shape
    out = img.copy()
    for ch in range(c):
        for i in range(0, h - region + 1, region):
            for j in range(0, w - region + 1, region):
                blk = img[ch, i : i + region, j : j + region]
                k = region // tile
                tiles = blk.reshape(k, tile, k, tile).transpose(0, 2, 1, 3).reshape(k * k, tile, tile)
                tiles = tiles[rng.permutation(k * k)]
                out[ch, i : i + region, j : j + region] = (
                    tiles.reshape(k, k, tile, tile).transpose(0, 2, 1, 3).reshape(region, region)
                )
    return out


def make_batch(size: int, n: int, channels: int = 3) -> torch.Tensor:
    _, photos = builtin_photos(size if size <= 512 else 512)
    if size > 512:
        photos = torch.nn.functional.interpolate(photos.float(), size=(size, size), mode="bilinear")
        photos = photos.round().clamp(0, 255).to(torch.uint8)
    if channels == 1:
        photos = photos.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    reps = -(-n // len(photos))
    return photos.repeat(reps, 1, 1, 1)[:n].contiguous().to(DEVICE)


def bench(size: int, n: int, target: float, key: vm.Key, with_reference: bool, channels: int = 3):
    x = make_batch(size, n, channels)
    ids = list(range(n))
    t_copy = timeit(lambda: x.clone())
    flat = x.view(n, -1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0)).to(x.device)
    t_gather = timeit(lambda: flat.index_select(1, perm))
    t_obf = timeit(lambda: vm.obfuscate(x, key=key, ids=ids, target_vfe=target))
    weights = vm.saliency_weights(x)  # the online case: the same images again, a new key
    t_reuse = timeit(lambda: vm.obfuscate(x, key=key, ids=ids, target_vfe=target, saliency=weights))
    res = vm.obfuscate(x, key=key, ids=ids, target_vfe=target)
    t_res = timeit(lambda: vm.restore(res.images, res.plans, key=key, ids=ids))
    t_vfe = timeit(lambda: vm.vfe(x))
    row = {
        "size": size,
        "channels": channels,
        "batch": n,
        "copy_img_s": n / t_copy,
        "gather_floor_img_s": n / t_gather,
        "obfuscate_img_s": n / t_obf,
        "obfuscate_x_copy": t_obf / t_copy,
        "obfuscate_x_gather": t_obf / t_gather,
        "obfuscate_reused_weights_img_s": n / t_reuse,
        "obfuscate_reused_weights_x_gather": t_reuse / t_gather,
        "restore_img_s": n / t_res,
        "restore_x_copy": t_res / t_copy,
        "restore_x_gather": t_res / t_gather,
        "vfe_img_s": n / t_vfe,
        "vfe_x_copy": t_vfe / t_copy,
        "achieved_vfe_mean": float(res.vfe.mean()),
    }
    if with_reference:
        img = x[0].cpu().numpy()
        s = vm.default_region(size, size)
        rng = np.random.default_rng(0)
        t_ref_vfe = timeit(lambda: reference_vfe(img, s), min_time=0.5, min_runs=1, max_runs=3)
        t_ref_shuffle = timeit(lambda: reference_shuffle(img, s, 2, rng), min_time=0.5, min_runs=1, max_runs=3)
        # the reference is unweighted: compare with unweighted VFE (no saliency) on our side too
        t_one_vfe = timeit(lambda: vm.vfe(x[:1], saliency="uniform"))
        t_batch_vfe = timeit(lambda: vm.vfe(x, saliency="uniform"))
        t_one_obf = timeit(lambda: vm.obfuscate(x[:1], key=key, ids=[0], target_vfe=target))
        row.update(
            single_obfuscate_img_s=1 / t_one_obf,
            single_vfe_img_s=1 / t_one_vfe,
            reference_vfe_img_s=1 / t_ref_vfe,
            reference_shuffle_one_level_img_s=1 / t_ref_shuffle,
            vfe_speedup_vs_reference=t_ref_vfe / t_one_vfe,
            batched_vfe_speedup_vs_reference=t_ref_vfe / (t_batch_vfe / n),
        )
    return row


def _switches() -> dict[str, bool]:
    """The core's speed switches in effect (environment variables or their defaults)."""
    from visualmixer.core import fused, graphs, triton_switch

    return {"CUDA graphs": graphs.enabled(), "torch.compile slot keys": fused.enabled(),
            "Triton kernels": triton_switch.enabled()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the goal cases only, no Python reference")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of process CPU time")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda implies --wall)")
    parser.add_argument("--batch", type=int, help="images per call at 224² (default 64; 256 at 32²/28²)")
    args = parser.parse_args()
    global CLOCK, DEVICE
    DEVICE = torch.device(args.device)
    # CPU time says nothing about GPU work: on a GPU the clock is wall-clock, synchronised
    CLOCK = time.perf_counter if args.wall or DEVICE.type == "cuda" else time.process_time
    torch.set_num_threads(args.threads)
    key = vm.Key.generate()
    b = args.batch or 64
    small = max(b, 256)
    cases = [(224, b, 3), (32, small, 3), (28, small, 1)] + ([] if args.quick else [(1024, 8, 3)])
    rows = []
    where = (torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda"
             else platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}: {where}")
    switches = _switches()
    states = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in switches.items())
    print(f"speed switches (graphs and Triton act on CUDA only): {states}")
    clock = "wall-clock" if CLOCK is time.perf_counter else "process CPU"
    print(f"target VFE {args.target}; uint8; {clock} time; ratios are time / time of x.clone() "
          "(x copy) and of the keyed gather floor (x gath) in the same run\n")
    head = (f"{'size':>8} {'batch':>5} | {'gather/s':>9} | {'obfuscate/s':>11} {'x copy':>7} {'x gath':>6} | "
            f"{'reused w/s':>10} {'x gath':>6} | {'restore/s':>9} {'x copy':>7} {'x gath':>6} | "
            f"{'vfe/s':>8} {'x copy':>7} | {'1-img obf/s':>11} {'ref shuffle/s':>13} {'vfe vs ref':>10}")
    print(head)
    print("-" * len(head))
    for size, n, ch in cases:
        r = bench(size, n, args.target, key, with_reference=size <= 224 and not args.quick, channels=ch)
        r["device"] = str(DEVICE)
        r["switches"] = _switches()  # (after the run: a Triton kernel that failed is off by now)
        if r["switches"] != switches:
            print(f"   speed switches now: {r['switches']} (a kernel failed: see the warning above)")
        rows.append(r)
        ref = (f"{r['single_obfuscate_img_s']:>11.1f} {r['reference_shuffle_one_level_img_s']:>13.1f} "
               f"{r['batched_vfe_speedup_vs_reference']:>9.0f}x") if "single_obfuscate_img_s" in r else ""
        name = f"{size}²" + (" grey" if ch == 1 else "")
        print(f"{name:>8} {n:>5} | {r['gather_floor_img_s']:>9.0f} | {r['obfuscate_img_s']:>11.1f} "
              f"{r['obfuscate_x_copy']:>6.0f}x {r['obfuscate_x_gather']:>5.1f}x | "
              f"{r['obfuscate_reused_weights_img_s']:>10.1f} {r['obfuscate_reused_weights_x_gather']:>5.1f}x | "
              f"{r['restore_img_s']:>9.1f} {r['restore_x_copy']:>6.0f}x {r['restore_x_gather']:>5.1f}x | "
              f"{r['vfe_img_s']:>8.1f} "
              f"{r['vfe_x_copy']:>6.0f}x | {ref}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
