"""What a worker-process feed costs the training thread per batch.

A ``DataLoader`` with one worker (as ``--loader-workers 1`` ran before) against
:class:`~visualmixer.train.workerfeed.WorkerFeed`, both over the online dataset of
``visualmixer train`` (random 28² grey images), with a busy wait standing in for the training
step; the two alternate epoch by epoch. Prints the medians over the epochs after the first: the
training thread's CPU time spent in the feed (between steps, starting the epoch's iteration
included) per batch, the wait for the epoch's first batch, and the wall time per batch outside
the step.

    OMP_NUM_THREADS=1 python benchmarks/bench_worker_feed.py
    OMP_NUM_THREADS=1 python benchmarks/bench_worker_feed.py --step-ms 0   # the workers' own pace
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import visualmixer as vm
from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.train.fit import ShuffledBatches
from visualmixer.train.workerfeed import WorkerFeed


def _epoch(feed, batches, ds, epoch: int, step_s: float) -> tuple[float, float, float, int]:
    """One epoch: training-thread CPU in the feed, the first batch's wait, wall time in the feed,
    batches."""
    ds.set_epoch(epoch)
    batches.set_epoch(epoch)
    cpu = wall = first = 0.0
    n = 0
    it = None
    while True:
        c, t = time.thread_time(), time.perf_counter()
        if it is None:  # (a DataLoader forks its worker here; a WorkerFeed at the first next())
            it = iter(feed)
        batch = next(it, None)
        cpu += time.thread_time() - c
        wall += time.perf_counter() - t
        if n == 0:
            first = time.perf_counter() - t
        if batch is None:
            return cpu, first, wall, n
        n += 1
        end = time.perf_counter() + step_s
        while time.perf_counter() < end:  # the training step (keeps the core busy)
            pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--step-ms", type=float, default=50.0, help="the stand-in training step (the small CNN's: ~50)")
    a = p.parse_args(argv)
    if a.epochs < 2:
        raise SystemExit(f"--epochs must be >= 2 (the first warms up), got {a.epochs}")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.images, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.arange(a.images) % 10
    ds = ObfuscatedDataset(TensorDataset(x, y), vm.Key.from_seed(0), 0.5, "online", return_vfe=True)
    batches = ShuffledBatches(a.images, a.batch, epoch_seed=lambda e: e)
    ctx = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    feeds = {
        "DataLoader, 1 worker": DataLoader(ds, batch_sampler=batches, num_workers=1, multiprocessing_context=ctx,
                                           prefetch_factor=4, generator=torch.Generator()),
        "WorkerFeed, 1 worker": WorkerFeed(ds, batches, torch.device("cpu"), 1),
    }
    print(f"{a.images} images of 28x28, batch {a.batch}, a {a.step_ms:g} ms step; epochs 2-{a.epochs}, medians")
    runs: dict[str, list] = {name: [] for name in feeds}
    for e in range(a.epochs):  # the feeds alternate, epoch by epoch
        for name, feed in feeds.items():
            runs[name].append(_epoch(feed, batches, ds, e, a.step_ms / 1000))
    for name, run in runs.items():
        run = run[1:]  # the first epoch warms up
        n = run[0][3]
        cpu = statistics.median(r[0] for r in run) / n * 1e3
        first = statistics.median(r[1] for r in run) * 1e3
        wall = statistics.median(r[2] for r in run) / n * 1e3
        print(f"  {name}: training-thread CPU {cpu:.3f} ms per batch, first batch {first:.1f} ms, "
              f"wall in the feed {wall:.3f} ms per batch")
    feeds["WorkerFeed, 1 worker"].close()


if __name__ == "__main__":
    main()
