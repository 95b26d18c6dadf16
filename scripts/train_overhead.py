"""Epoch-time overhead of online obfuscation (docs/results.md §3), measured in one process.

Clean epochs, online-obfuscated epochs and obfuscation alone are interleaved, so that load from
other processes hits all three alike. Where the online obfuscation happens (``--where``):

* ``batched``: each batch is obfuscated on the training device with ids (index, epoch) right
  before the step (what ``visualmixer train --mode online`` does);
* ``workers``: inside ``--workers`` DataLoader worker processes through
  ``visualmixer.data.ObfuscatedDataset(mode="online")`` (one batched call per batch via
  ``__getitems__``), against the same DataLoader over the clean images.

Prints a JSON with per-repetition seconds and the ratios.

Usage: python scripts/train_overhead.py [--n 4096] [--reps 3] [--device cpu] [--target 0.5]
       [--where batched|workers] [--workers 2] [--model cnn|resnet18|shufflenet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import visualmixer as vm
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.train.models import MODELS, build_model


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--where", choices=("batched", "workers"), default="batched")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", choices=list(MODELS), default="cnn")
    args = ap.parse_args()
    dev = torch.device(args.device)
    x, y = load_fashion_mnist("train")
    x, y = x[: args.n].to(dev), y[: args.n].to(dev)
    key = vm.Key.from_seed(0)
    torch.manual_seed(0)
    model = build_model(args.model, 1, 10).to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    loaders = {}
    if args.where == "workers":
        from torch.utils.data import DataLoader, TensorDataset

        from visualmixer.data import ObfuscatedDataset

        base = TensorDataset(x.cpu(), y.cpu())
        online = ObfuscatedDataset(base, key, target_vfe=args.target, mode="online")
        kw = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=True,
                  multiprocessing_context="fork")
        loaders = {"clean": DataLoader(base, **kw), "online": DataLoader(online, **kw),
                   "obfuscate-only": DataLoader(online, **kw)}

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(xb.float() / 255), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def epoch_workers(kind: str, ep: int) -> float:
        if kind != "clean":
            loaders[kind].dataset.set_epoch(ep + 1)
        _sync(dev)
        t0 = time.perf_counter()
        for xb, yb in loaders[kind]:
            if kind == "obfuscate-only":
                continue
            step(xb.to(dev), yb.to(dev))
        _sync(dev)
        return time.perf_counter() - t0

    def epoch(kind: str, ep: int) -> float:
        if args.where == "workers":
            return epoch_workers(kind, ep)
        _sync(dev)
        t0 = time.perf_counter()
        for s in range(0, args.n, args.batch_size):
            xb = x[s : s + args.batch_size]
            if kind != "clean":
                ids = [(i, ep) for i in range(s, s + xb.shape[0])]
                xb = vm.obfuscate(xb, key=key, ids=ids, target_vfe=args.target).images
            if kind == "obfuscate-only":
                continue
            step(xb, y[s : s + xb.shape[0]])
        _sync(dev)
        return time.perf_counter() - t0

    epoch("clean", -1)  # warm-up
    epoch("online", -1)
    times = {"clean": [], "online": [], "obfuscate-only": []}
    for r in range(args.reps):
        for kind in times:
            times[kind].append(epoch(kind, r))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "model": args.model, "where": args.where,
        "workers": args.workers if args.where == "workers" else 0, "images": args.n, "batch_size": args.batch_size,
        "target_vfe": args.target, "torch_threads": torch.get_num_threads(),
        "seconds": times, "median_s": med,
        "online_over_clean": med["online"] / med["clean"],
        "obfuscate_ms_per_image": 1000 * med["obfuscate-only"] / args.n,
        "train_ms_per_image": 1000 * med["clean"] / args.n,
    }, indent=2))


if __name__ == "__main__":
    main()
