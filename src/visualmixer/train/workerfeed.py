"""Online obfuscation in worker processes that write each batch into shared memory.

``visualmixer train --mode online --loader-workers N`` used a ``torch.utils.data.DataLoader``
with N workers. Beside a training step that cost the training thread about 1.5 ms per batch
(each batch's tensors moved to new shared-memory files in the worker, their descriptors passed
over a socket and mapped again in the trainer) and a new worker process every epoch (the
dataset's epoch is read when the worker starts). :class:`WorkerFeed` keeps the workers for the
whole run and gives each two batch *slots* in shared memory allocated once: the trainer
writes a batch's indices into a slot and sends ``(slot, epoch, ...)`` down a pipe, the worker
obfuscates the batch (:meth:`ObfuscatedDataset.batch`, one call) into the slot, and the trainer
copies it out — about 0.4 ms of its time per batch (``benchmarks/bench_worker_feed.py``). The batches
are the ones the in-process feed gives, in the same order (obfuscation depends on the key, the
image id and the image only).

Used only for an :class:`~visualmixer.data.wrapper.ObfuscatedDataset` over a ``TensorDataset``
(what ``visualmixer train`` builds); the workers compute on the CPU with one torch thread each.
"""

from __future__ import annotations

import copy
import os
import pickle
import signal
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as torch_mp

from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.tools.errors import signal_text
from visualmixer.train.feed import DatasetBatches, WaitedLoader

__all__ = ["WorkerFeed", "WorkerFailed"]

#: Batches each worker may hold made ahead of the training step.
SLOTS_PER_WORKER = 2


class WorkerFailed(RuntimeError):
    """A loader worker process ended without answering (killed, or crashed in C code)."""


class WorkerFeed(WaitedLoader):
    """The batches of an online :class:`ObfuscatedDataset` made by ``workers`` persistent worker
    processes into shared-memory slots (see the module's text).

    Parameters
    ----------
    dataset : ObfuscatedDataset
        Over a ``TensorDataset`` whose first tensor holds the images ``(N, C, H, W)`` on the CPU.
    batch_sampler : ShuffledBatches
        The batches of each epoch (its ``set_epoch`` selects the order).
    dev : torch.device
        The training device: on CUDA the batches are copied out into pinned memory.
    workers : int
        Worker processes (>= 1), started at the first iteration and kept until :meth:`close`
        (or until this object is collected).
    context : str, optional
        The multiprocessing start method (default: ``"fork"`` where the platform has it).

    The seconds the training loop waited for its batches (the copy out included) add up in
    ``seconds``, as for the other feeds. An exception raised in a worker is raised again in the
    training loop, with the worker's traceback as its cause; a worker that dies during an epoch
    raises :class:`WorkerFailed` naming its exit code (one found dead at the start of an epoch is
    replaced, with a warning). One iteration at a time: starting another leaves the earlier one
    raising a RuntimeError if resumed.
    """

    def __init__(self, dataset: ObfuscatedDataset, batch_sampler, dev: torch.device, workers: int,
                 context: str | None = None):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        base = getattr(dataset, "dataset", None)
        if not isinstance(base, torch.utils.data.TensorDataset) or base.tensors[0].ndim != 4:
            raise TypeError("WorkerFeed needs an ObfuscatedDataset over a TensorDataset of (N, C, H, W) images")
        if any(t.device.type != "cpu" for t in base.tensors):
            raise ValueError("WorkerFeed: the dataset's tensors must be on the CPU (the workers read them there)")
        super().__init__(DatasetBatches(dataset, batch_sampler), dev)
        self.workers = int(workers)
        if context is None:
            context = "fork" if "fork" in torch_mp.get_all_start_methods() else None
        self._ctx = torch_mp.get_context(context)
        self._pool: _Pool | None = None
        self._finalizer = None
        self._generation = 0  # iterations started: only the latest may use the pool

    # -- the slots and the processes --------------------------------------------------------------
    def _start(self) -> _Pool:
        if self._pool is not None and not self._pool.alive():  # a worker died between epochs
            gone = self._pool.dead()
            self.close()
            warnings.warn(f"WorkerFeed: {gone}; starting new workers", RuntimeWarning, stacklevel=3)
        if self._pool is None:
            ds = self.loader.dataset
            rows = max(1, min(self.loader.batch_sampler.batch_size, len(ds)))
            self._pool = _Pool(self._ctx, ds, _Slots(ds, self.workers * SLOTS_PER_WORKER, rows), self.workers)
            self._finalizer = weakref.finalize(self, self._pool.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        pool, finalizer = self._pool, self._finalizer
        self._pool, self._finalizer = None, None  # (first: a Ctrl-C in the joins leaves no stale pool)
        if finalizer is not None:
            finalizer()
        elif pool is not None:  # (interrupted between starting the pool and registering its finalizer)
            pool.close()

    def __iter__(self):
        self._generation += 1  # first: from here on an earlier, suspended iteration is stale
        generation = self._generation
        pool = self._start()
        if not pool.drain():  # an earlier iteration still suspended: its answers are not this one's
            self.close()
            pool = self._start()
        try:
            yield from self._epoch(pool, generation)
        finally:
            if self._pool is pool and self._generation == generation and not pool.drain():
                self.close()  # the pipes are in an unknown state (e.g. Ctrl-C inside a send): start afresh

    def _epoch(self, pool: _Pool, generation: int):
        order = list(self.loader.batch_sampler)
        epoch = self.loader.dataset.epoch
        nslots = pool.slots.count
        for j in range(min(nslots, len(order))):
            self._call(pool.submit, j % nslots, epoch, order[j])
        for j in range(len(order)):
            t = time.perf_counter()
            if self._pool is not pool or self._generation != generation:
                raise RuntimeError("WorkerFeed: another iteration started, or close() was called, while this "
                                   "one was suspended; iterate one epoch at a time")
            n = self._call(pool.receive, j % nslots)
            batch = tuple(_copy_out(s[j % nslots, :n], self.dev) for s in pool.slots.fields)
            self.seconds += time.perf_counter() - t
            if j + nslots < len(order):  # the slot is free again: the batch after next of its worker
                self._call(pool.submit, j % nslots, epoch, order[j + nslots])
            yield batch

    def _call(self, method, *args):
        try:
            return method(*args)
        except WorkerFailed:
            self.close()  # (the next iteration starts new workers)
            raise


class _Slots:
    """Shared memory for ``count`` batches of up to ``rows`` samples: each batch's indices, and one
    tensor per field of a batch (the dataset's tensors, then the VFE)."""

    def __init__(self, ds: ObfuscatedDataset, count: int, rows: int):
        fields = [(t.shape[1:], t.dtype) for t in ds.dataset.tensors]
        if ds.return_vfe:
            fields.append(((), torch.float64))
        self.count = count
        self.indices = torch.empty((count, rows), dtype=torch.int64).share_memory_()
        self.fields = [torch.empty((count, rows, *shape), dtype=dtype).share_memory_() for shape, dtype in fields]


def _copy_out(rows: torch.Tensor, dev: torch.device) -> torch.Tensor:
    if dev.type == "cuda":  # pinned: the step's copy to the device runs asynchronously
        return torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True).copy_(rows)
    return rows.clone()


class _Pool:
    """The worker processes, their pipes and the slots. Slot ``s`` belongs to worker
    ``s % workers``; each worker answers its tasks in the order they were sent. A task is
    ``(slot, sequence number, epoch, rows)`` — a few bytes, so a write to the pipe is atomic and
    never blocks — with the indices in the slot's shared row; the answer echoes the number."""

    def __init__(self, ctx, ds: ObfuscatedDataset, slots: _Slots, workers: int):
        self.slots, self.procs, self.tasks, self.answers = slots, [], [], []
        self.sent: list[list[int]] = [[] for _ in range(workers)]  # sequence numbers not yet answered
        self.seq = 0
        self.dirty = False  # inside a send or a receive and its bookkeeping
        # the parent a worker watches: this process, or with "forkserver" the server (which ends with it)
        parent = os.getpid() if ctx.get_start_method() in ("fork", "spawn") else None
        try:
            for _ in range(workers):
                task_out, task_in = ctx.Pipe(duplex=False)
                answer_out, answer_in = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_serve, args=(ds, task_out, answer_in, slots, parent),
                                   name="visualmixer-loader", daemon=True)
                proc.start()
                task_out.close()
                answer_in.close()
                self.procs.append(proc)
                self.tasks.append(task_in)
                self.answers.append(answer_out)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def dead(self) -> str:
        return "; ".join(f"loader worker {w} (pid {p.pid}) ended with {_exit_text(p.exitcode)}"
                         for w, p in enumerate(self.procs) if not p.is_alive())

    def _worker(self, slot: int) -> int:
        if not self.procs:
            raise RuntimeError("WorkerFeed was closed while an epoch was being iterated")
        return slot % len(self.procs)

    def submit(self, slot: int, epoch: int, indices) -> None:
        w = self._worker(slot)
        idx = torch.as_tensor(indices, dtype=torch.int64)
        self.slots.indices[slot, : len(idx)] = idx
        self.seq += 1
        self.dirty = True  # (an interrupt before the bookkeeping below: the pool cannot be trusted)
        try:
            self.tasks[w].send((slot, self.seq, int(epoch), len(idx)))
        except OSError:  # its end of the pipe is closed: the worker is gone
            self._failed(w)
        self.sent[w].append(self.seq)
        self.dirty = False

    def receive(self, slot: int) -> int:
        """Wait for the answer of ``slot``'s task: the rows written; raise what the worker raised."""
        w = self._worker(slot)
        kind, value = self._next(w)
        if kind == "error":
            err, text = value
            raise err from _WorkerTraceback(f"in loader worker {w} (pid {self.procs[w].pid}):\n{text}")
        return value

    def _next(self, w: int):
        conn, proc = self.answers[w], self.procs[w]
        while True:
            if conn.poll():
                self.dirty = True
                try:
                    seq, kind, value = conn.recv()
                except EOFError:
                    break
                expected = self.sent[w].pop(0) if self.sent[w] else None
                self.dirty = False
                if seq != expected:
                    raise RuntimeError(f"loader worker {w} answered task {seq}, expected {expected} (the feed's "
                                       f"pipes are out of step; close it and iterate again)")
                return kind, value
            if not proc.is_alive():
                break
            wait([conn, proc.sentinel])
        self._failed(w)

    def _failed(self, w: int):
        proc = self.procs[w]
        proc.join(timeout=1.0)
        self.sent[w] = []
        hint = " (e.g. killed by the out-of-memory killer)" if proc.exitcode is not None and proc.exitcode < 0 else ""
        raise WorkerFailed(f"loader worker {w} (pid {proc.pid}) ended with {_exit_text(proc.exitcode)} before its "
                           f"batch was made{hint}; run again, or use --loader-workers 0 to obfuscate in the "
                           f"training process")

    def drain(self) -> bool:
        """Read the answers of tasks still in flight; False when that failed (a worker gone, the
        pipes out of step, or an interrupted send or receive)."""
        if self.dirty:
            return False
        try:
            for w in range(len(self.procs)):
                while self.sent[w]:
                    self._next(w)
        except (WorkerFailed, RuntimeError, OSError):
            return False
        return True

    def close(self) -> None:
        for conn in self.tasks:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
        for conn in (*self.tasks, *self.answers):
            conn.close()
        self.procs, self.tasks, self.answers = [], [], []


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a loader worker (the cause of the one raised again)."""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        return signal_text(-code)
    return f"exit code {code}"


def _serve(ds: ObfuscatedDataset, tasks, answers, slots: _Slots, parent: int | None) -> None:
    """A worker: obfuscate each task's batch into its slot until told to stop (``None``), the
    trainer's end of the pipe closes or the trainer is gone (killed: a forked worker holds copies
    of the pipes, so it watches its parent's pid instead of waiting for an end of file).
    SIGINT is ignored: Ctrl-C reaches the whole process group and the trainer stops the workers.
    The worker keys on each task's epoch in a copy of the dataset whose epoch is its own (the
    trainer's may already be the next one's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    parent_alive = _parent_watch(parent or os.getppid())
    ds = copy.copy(ds)  # the images, labels and saliency weights cache stay shared
    while True:
        try:
            while not tasks.poll(0.5):
                if not parent_alive():
                    return
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        slot, seq, epoch, rows = task
        try:
            ds.set_epoch(epoch)
            batch = ds.batch(slots.indices[slot, :rows].tolist())
            for dst, src in zip(slots.fields, batch, strict=True):
                dst[slot, :rows].copy_(src)
            answer = (seq, "ok", rows)
        except Exception as err:  # raised again in the training loop
            answer = (seq, "error", (_picklable(err), traceback.format_exc()))
        try:
            answers.send(answer)
        except OSError:
            return


def _parent_watch(parent: int) -> Callable[[], bool]:
    """Whether the process that started this worker still runs. A worker whose parent it is gets a
    new parent when it dies (a pid check, no system call). One started through a wrapper executable
    that runs Python as its child (``multiprocessing.set_executable``), or whose trainer died before
    this call, has another parent: it asks whether the trainer's pid is still there."""
    if os.getppid() == parent:
        return lambda: os.getppid() == parent

    def exists() -> bool:
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # (another user's process has the pid now)
            return False
        try:  # a killed trainer its own parent has not reaped yet is a zombie: gone too
            with open(f"/proc/{parent}/stat", "rb") as fh:
                return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except (OSError, IndexError):
            return True  # (no /proc: the signal check alone)
    return exists


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
