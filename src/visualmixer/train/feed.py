"""What the one training loop iterates in ``visualmixer train``: the training set as tensors
(clean or obfuscated once), the batches of an online :class:`~visualmixer.data.wrapper.ObfuscatedDataset`
(made in process, or by worker processes: :mod:`visualmixer.train.workerfeed`), or the whole set
mixed anew every epoch."""

from __future__ import annotations

import itertools
import queue
import threading
import time

import torch
from torch.utils.data import TensorDataset

from visualmixer.core.mixing import mix
from visualmixer.data.datasets import ImageSet
from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.train.config import TrainConfig
from visualmixer.train.fit import ShuffledBatches

__all__ = ["training_feed", "prefetch_depth", "feed_group", "WaitedLoader", "PrefetchedLoader", "DatasetBatches",
           "MixedEpochs", "sync"]


def sync(dev: torch.device) -> None:
    """Wait for the device (CUDA) so that timings mean something."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class WaitedLoader:
    """Iterates a DataLoader (or :class:`DatasetBatches`), adding the seconds the training step
    waited for each batch to ``seconds`` (online mode: the obfuscation in process, or the wait
    for the workers)."""

    def __init__(self, loader: torch.utils.data.DataLoader | DatasetBatches, dev: torch.device):
        self.loader, self.dev, self.seconds = loader, dev, 0.0

    def set_epoch(self, epoch: int) -> None:
        self.loader.dataset.set_epoch(epoch)  # online ids (index, epoch)
        self.loader.batch_sampler.set_epoch(epoch)  # the epoch's batch order

    def __iter__(self):
        it = iter(self.loader)
        while True:
            sync(self.dev)
            t = time.perf_counter()
            batch = next(it, None)
            sync(self.dev)
            self.seconds += time.perf_counter() - t
            if batch is None:
                return
            yield batch


class PrefetchedLoader(WaitedLoader):
    """:class:`WaitedLoader` whose batches are made ``depth`` batches ahead by a background
    thread of the training process: the obfuscation of the next batches overlaps the training
    step (torch releases the GIL inside operators). On a GPU the thread queues its work on a
    stream of its own, so that the device runs it beside the training step's kernels; the step
    waits for its batch's work only (an event per batch). Same batches, in the same order, as
    iterating the loader directly. An error in the thread is raised in the training loop; a
    loop that stops early stops the thread."""

    def __init__(self, loader: torch.utils.data.DataLoader | DatasetBatches, dev: torch.device, depth: int):
        super().__init__(loader, dev)
        self.depth = depth

    def __iter__(self):
        ready: queue.Queue = queue.Queue(maxsize=self.depth)
        stop, end = threading.Event(), object()

        def offer(item) -> bool:  # False once the loop has stopped
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        side = _SideStream(self.dev)

        def produce():
            try:
                with side:
                    for batch in self.loader:
                        if not offer((batch, side.done())):
                            return
                offer(end)
            except BaseException as err:  # handed to the training loop, raised there
                offer(err)

        worker = threading.Thread(target=produce, name="visualmixer-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                t = time.perf_counter()
                item = ready.get()
                self.seconds += time.perf_counter() - t
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, done = item
                yield side.receive(batch, done)
        finally:
            stop.set()
            worker.join()


class _SideStream:
    """The producer thread's CUDA stream (nothing on other devices): work queued in ``with``
    runs beside the training stream; :meth:`receive` makes the training stream wait for one
    batch's work and tells the allocator the batch is used there."""

    def __init__(self, dev: torch.device):  # (made in the training thread)
        self.dev = dev
        self.stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self.origin = torch.cuda.current_stream(dev) if dev.type == "cuda" else None

    def __enter__(self):  # (in the producer thread)
        if self.stream is not None:
            self.stream.wait_stream(self.origin)  # the training stream's work so far (the clean data)
            self._ctx = torch.cuda.stream(self.stream)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.stream is not None:
            self._ctx.__exit__(*exc)

    def done(self):
        """An event after the work queued so far on the side stream (``None`` off CUDA)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def receive(self, batch, done):
        if done is None:
            return batch
        current = torch.cuda.current_stream(self.dev)
        current.wait_event(done)
        for t in (batch,) if isinstance(batch, torch.Tensor) else batch:
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(current)  # freed after the training stream's use, not the producer's
        return batch


#: On a GPU, the in-process feed obfuscates at least this many images per call (several
#: batches at once: the per-call host work and the small-batch launches are shared).
GPU_GROUP_IMAGES = 512


class DatasetBatches:
    """The batches of an online :class:`ObfuscatedDataset` in the training process, made by
    :meth:`ObfuscatedDataset.batch` calls — the tensors a ``DataLoader`` with default collation
    gives, without one tuple per sample built and stacked again (Python work that holds the GIL
    beside the training step). ``group`` batches share one call (images are obfuscated
    independently: the same tensors as one call per batch)."""

    def __init__(self, dataset: ObfuscatedDataset, batch_sampler: ShuffledBatches, group: int = 1):
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.dataset, self.batch_sampler, self.group = dataset, batch_sampler, group

    def __iter__(self):
        pending: list = []
        for indices in self.batch_sampler:
            pending.append(indices)
            if len(pending) == self.group:
                yield from self._split(pending)
                pending = []
        if pending:
            yield from self._split(pending)

    def _split(self, batches: list):
        if len(batches) == 1:
            yield self.dataset.batch(batches[0])
            return
        sizes = [len(b) for b in batches]
        joined = self.dataset.batch([int(i) for b in batches for i in b])
        parts = _split_collated(joined, sizes, top=True)
        if parts is None:  # a field with no batch axis to cut along: one call per batch after all
            parts = [self.dataset.batch(b) for b in batches]
        yield from parts


def _split_collated(value, sizes: list[int], top: bool = False) -> list | None:
    """``value`` as default collation made it for ``sum(sizes)`` samples, cut into batches of
    ``sizes``: tensors by rows, per-sample lists (e.g. strings) by slices, dicts key by key and
    the top-level tuple or list of fields field by field (each batch keeps the container's
    type); ``None`` when some field has no batch axis to cut along."""
    if isinstance(value, torch.Tensor):
        return list(value.split(sizes))
    if isinstance(value, dict):
        fields = {k: _split_collated(v, sizes) for k, v in value.items()}
        if any(f is None for f in fields.values()):
            return None
        return [{k: f[i] for k, f in fields.items()} for i in range(len(sizes))]
    if isinstance(value, (list, tuple)) and top:  # the fields of each sample
        fields = [_split_collated(v, sizes) for v in value]
        if any(f is None for f in fields):
            return None
        kind = list if isinstance(value, list) else tuple
        return [kind(f[i] for f in fields) for i in range(len(sizes))]
    if isinstance(value, list) and len(value) == sum(sizes):  # one entry per sample
        ends = list(itertools.accumulate(sizes))
        return [value[end - n : end] for n, end in zip(sizes, ends, strict=True)]
    return None


def feed_group(batch_size: int, dev: torch.device) -> int:
    """Batches per obfuscation call in the in-process feed: enough for
    :data:`GPU_GROUP_IMAGES` images on a GPU; one on the CPU (grouping measured no faster there)."""
    return max(1, GPU_GROUP_IMAGES // batch_size) if dev.type == "cuda" else 1


class MixedEpochs:
    """Online mixing: the whole training set mixed anew at the start of every epoch (image ids
    ``(index, epoch)``: new groups, exchanges and in-region shuffles), as ``fit_classifier``'s
    per-epoch data. Records the epoch's mean VFE and the seconds spent mixing."""

    def __init__(self, cfg: TrainConfig, data):
        self.cfg, self.data, self.seconds, self.last_vfe = cfg, data, 0.0, None

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        n = self.data.x_train.shape[0]
        res = mix(self.data.x_train, self.data.y_train.cpu(), key=self.data.train_key,
                  ids=[(i, epoch) for i in range(n)], k=int(self.cfg.mix), grouping=self.cfg.mix_grouping,
                  target_vfe=self.cfg.target_vfe, region=self.cfg.region, share=self.cfg.mix_share,
                  balanced=self.cfg.mix_balanced, design=self.cfg.mix_design)
        self.last_vfe = float(res.vfe.mean())
        sync(self.data.x_train.device)
        self.seconds = time.perf_counter() - t
        return res.images, self.data.y_train


def prefetch_depth(prefetch: int | None, dev: torch.device) -> int:
    """Batches made ahead in the background thread: ``prefetch``, or by default 2 where the thread
    has room (a GPU step, or one torch thread on the CPU) and 0 where it would oversubscribe
    the cores (several torch threads: both calls would start thread teams)."""
    if prefetch is not None:
        return int(prefetch)
    return 2 if dev.type == "cuda" or torch.get_num_threads() == 1 else 0


def training_feed(cfg: TrainConfig, seed: int, data, train_set: ImageSet, dev: torch.device):
    """What :func:`fit_classifier` iterates: the tensors (offline, clean) or the batches of an
    online :class:`ObfuscatedDataset` (ids ``(index, epoch)``; batches ``(images, labels, vfe)``),
    fetched in process on ``dev`` (``prefetch`` batches ahead, in a background thread) or, with
    ``loader_workers``, on the CPU in persistent worker processes
    (:class:`~visualmixer.train.workerfeed.WorkerFeed`).
    Either way the batch order of epoch ``e`` is seeded with ``seed * 100003 + e``."""
    batches = ShuffledBatches(len(train_set), cfg.batch_size, epoch_seed=lambda e: seed * 100_003 + e)
    if cfg.target_vfe is None or cfg.mode != "online":
        return (data.x_train, data.y_train), batches
    if cfg.mix:
        return MixedEpochs(cfg, data), batches
    workers = int(cfg.loader_workers)
    # the workers read the clean images from host memory; in process they stay on the device
    # the targets are data.y_train (the labels, or released soft labels) in both cases
    base = (TensorDataset(train_set.images, data.y_train.cpu()) if workers
            else TensorDataset(data.x_train, data.y_train))
    ds = ObfuscatedDataset(base, data.train_key, cfg.target_vfe, "online", region=cfg.region, return_vfe=True)
    if not workers:
        loader = DatasetBatches(ds, batches, group=feed_group(cfg.batch_size, dev))
        depth = prefetch_depth(cfg.prefetch, dev)
        return (PrefetchedLoader(loader, dev, depth) if depth else WaitedLoader(loader, dev)), None
    from visualmixer.train.workerfeed import WorkerFeed  # (it builds on this module's loaders)

    # persistent workers writing into shared memory; they never touch CUDA
    return WorkerFeed(ds, batches, dev, workers), None
