"""ObfuscatedDataset: one obfuscate call per sample vs one per batch (``__getitems__``).

Process CPU time of fetching the same Fashion-MNIST images (28², online mode, target 0.5) both
ways, in one run, and their ratio. Usage:

    python benchmarks/bench_dataset_fetch.py [--n 1024] [--batch 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import TensorDataset

import visualmixer as vm
from visualmixer.data import ObfuscatedDataset
from visualmixer.data.datasets import load_fashion_mnist


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = load_fashion_mnist("train")
    ds = ObfuscatedDataset(TensorDataset(x[: args.n], y[: args.n]), vm.Key.from_seed(0),
                           target_vfe=0.5, mode="online")
    ds.__getitems__(list(range(8)))  # warm-up

    def per_sample():
        return [ds[i] for i in range(args.n)]

    def batched():
        return [s for b in range(0, args.n, args.batch)
                for s in ds.__getitems__(list(range(b, min(b + args.batch, args.n))))]

    out = {}
    for name, fn in (("per_sample", per_sample), ("batched", batched)):
        t0 = time.process_time()
        fn()
        out[name + "_ms_per_image"] = 1000 * (time.process_time() - t0) / args.n
    out["ratio"] = out["per_sample_ms_per_image"] / out["batched_ms_per_image"]
    out.update(images=args.n, batch=args.batch, threads=args.threads)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
