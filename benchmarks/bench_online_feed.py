"""What the in-process online feed costs the training step on the CPU, without the rest of
``visualmixer train`` (data loading, evaluation, checkpoints): epochs of its loop
(:func:`~visualmixer.train.fit.fit_classifier`) with the small CNN on Fashion-MNIST, timed with
the batches sliced in the training thread (``pre``, as offline training gets them), made 2 ahead
by the background thread as copies of the clean images (``copy``: the feed alone), obfuscated
there (``obf``: online training, saliency weights kept from the first epoch), or obfuscated by
one worker process into shared memory (``workers``: ``--loader-workers 1``). Wall time and the
training thread's own CPU time per epoch: a slower step that waits (e.g. for the GIL) shows in
wall time only, one slowed by the other core's memory traffic in both.

    OMP_NUM_THREADS=1 python benchmarks/bench_online_feed.py --channels-last
    OMP_NUM_THREADS=1 python benchmarks/bench_online_feed.py --feeds pre obf --rounds 6
    OMP_NUM_THREADS=1 python benchmarks/bench_online_feed.py --feeds pre obf workers --channels-last

Needs Fashion-MNIST (``make data``). The settings alternate within each round; medians over the
rounds, ratios against the first feed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import torch
from torch.utils.data import TensorDataset

import visualmixer as vm
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.train.feed import DatasetBatches, PrefetchedLoader
from visualmixer.train.fit import ShuffledBatches, channel_normaliser, fit_classifier, init_model, normalise
from visualmixer.train.models import SmallCNN
from visualmixer.train.workerfeed import WorkerFeed

FEEDS = ("pre", "copy", "obf", "workers")


def _copies(images: torch.Tensor, indices) -> types.SimpleNamespace:
    """Stands in for the obfuscation: the clean batch, copied (what the feed does besides)."""
    return types.SimpleNamespace(images=images.clone(), vfe=torch.zeros(len(indices), dtype=torch.float64))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feeds", nargs="+", choices=FEEDS, default=list(FEEDS))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels-last", action="store_true", help="the model in channels-last memory format")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    train = load_fashion_mnist()
    x, y = train.images[: a.images].contiguous(), train.labels[: a.images]
    mean, std = channel_normaliser(x)
    model = init_model(lambda: SmallCNN(1, 10), seed=0)
    if a.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters())
    batches = ShuffledBatches(len(x), a.batch, epoch_seed=lambda e: e)
    feeds = {"pre": (x, y)}  # sliced in the training thread, as offline training is fed
    for feed in ("copy", "obf"):
        ds = ObfuscatedDataset(TensorDataset(x, y), vm.Key.from_seed(0), 0.5, "online", return_vfe=True)
        if feed == "copy":
            ds._obfuscate_images = _copies
        feeds[feed] = PrefetchedLoader(DatasetBatches(ds, batches), torch.device("cpu"), 2)
    ds = ObfuscatedDataset(TensorDataset(x, y), vm.Key.from_seed(0), 0.5, "online", return_vfe=True)
    feeds["workers"] = WorkerFeed(ds, batches, torch.device("cpu"), 1)

    def epoch(feed: str, e: int) -> tuple[float, float]:
        """One epoch ``e`` of ``visualmixer train``'s loop (:func:`fit_classifier`) on ``feed``."""
        wall, cpu = time.perf_counter(), time.thread_time()
        fit_classifier(model, feeds[feed], epochs=e + 1, start_epoch=e, optimizer=opt, batches=batches,
                       prepare=lambda images: normalise(images, mean, std), seed=0)
        return time.perf_counter() - wall, time.thread_time() - cpu

    for feed in a.feeds:  # warm-up epoch (and the obfuscating feed's saliency weights)
        epoch(feed, 0)
    times: dict[str, list[tuple[float, float]]] = {feed: [] for feed in a.feeds}
    for r in range(a.rounds):
        for feed in a.feeds:
            times[feed].append(epoch(feed, r + 1))
    feeds["workers"].close()
    base = statistics.median(w for w, _ in times[a.feeds[0]])
    print(f"small CNN, {len(x)} images, batch {a.batch}, {'channels-last' if a.channels_last else 'NCHW'}, "
          f"{a.rounds} rounds; epoch seconds (medians)")
    for feed, v in times.items():
        wall = statistics.median(w for w, _ in v)
        cpu = statistics.median(c for _, c in v)
        print(f"  {feed:5s} wall {wall:6.3f} ({wall / base:.3f}x {a.feeds[0]})  training thread CPU {cpu:6.3f}  "
              f"walls {' '.join(f'{w:.2f}' for w, _ in v)}")


if __name__ == "__main__":
    main()
