"""What dealing balanced groups costs: the switched deal against the cyclic one and against the
whole ``mix`` of the same set, as ratios measured in one run.

A set of ``--n`` random 28² grey images in ten classes (Fashion-MNIST's shape; the deal depends
only on the group sizes and the region grid, never on the pixels) is put in balanced groups of
``--k``; the script times, with the process's CPU clock and one torch thread by default:

- ``switched``: :func:`visualmixer.core.mixdeal.switched_deal` of every group (format version 4);
- ``cyclic``: :func:`visualmixer.core.mixdeal.cyclic_deal` (format version 3);
- ``mix``: :func:`visualmixer.core.mixing.mix` of the whole set with ``balanced=True`` (grouping,
  the switched deal, moving the regions, the in-region shuffle at ``--target``).

    python benchmarks/bench_mix_deal.py                     # 60,000 images, k = 16 and 64
    python benchmarks/bench_mix_deal.py --n 6000 --k 64 --json out/bench-mix-deal.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixdeal import cyclic_deal, switched_deal
from visualmixer.core.mixgroups import keyed_word, make_groups
from visualmixer.core.mixing import mix


def _seconds(fn, clock, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):  # the best of a few: the least disturbed by other jobs
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def run(n: int, k: int, target: float, repeats: int, clock) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.arange(n) % 10
    key = Key.from_seed(0)
    groups = make_groups(y, key=key, ids=range(n), k=k, images=x, balanced=True)
    members = groups.members
    seeds = torch.tensor([keyed_word(key, tuple(int(i) for i in row if i >= 0), "mix") for row in members.tolist()],
                         dtype=torch.long)
    valid = members >= 0
    regions = 49  # 28² in regions of 4
    out = {"n": n, "k": k, "groups": int(members.shape[0]), "regions": regions}
    out["switched_s"] = _seconds(lambda: switched_deal(seeds, valid, regions), clock, repeats)
    out["cyclic_s"] = _seconds(lambda: cyclic_deal(seeds, valid, regions), clock, repeats)
    out["mix_s"] = _seconds(lambda: mix(x, y, key=key, ids=range(n), k=k, target_vfe=target, balanced=True),
                            clock, max(1, repeats // 2))
    out["switched_over_cyclic"] = out["switched_s"] / out["cyclic_s"]
    out["switched_share_of_mix"] = out["switched_s"] / out["mix_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60000, help="images (default: Fashion-MNIST's training set size)")
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64], help="group sizes")
    ap.add_argument("--target", type=float, default=1.0, help="target VFE of mix's in-region shuffle")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of process CPU time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.n < 2 or any(k < 2 for k in args.k) or args.repeats < 1 or args.threads < 1:
        ap.error("--n and every --k must be >= 2, --repeats and --threads >= 1")
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    rows = []
    for k in args.k:
        row = run(args.n, k, args.target, args.repeats, clock)
        rows.append(row)
        print(f"k={k:3d} groups={row['groups']:5d}: switched {row['switched_s']:.2f} s, cyclic "
              f"{row['cyclic_s']:.3f} s ({row['switched_over_cyclic']:.0f}x), whole mix {row['mix_s']:.2f} s "
              f"(the switched deal {100 * row['switched_share_of_mix']:.0f} % of it)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "clock": "wall" if args.wall else "process", "rows": rows}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
