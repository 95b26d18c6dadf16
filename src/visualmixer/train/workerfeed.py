"""Online obfuscation in worker processes that write each batch into shared memory.

``visualmixer train --mode online --loader-workers N`` used a ``torch.utils.data.DataLoader``
with N workers. Beside a training step that cost the training thread about 1.5 ms per batch
(each batch's tensors moved to new shared-memory files in the worker, their descriptors passed
over a socket and mapped again in the trainer) and a new worker process every epoch (the
dataset's epoch is read when the worker starts). :class:`WorkerFeed` keeps the workers for the
whole run and gives each two batch *slots* in shared memory allocated once: the trainer sends a
task ``(slot, epoch, indices)`` down a pipe, the worker obfuscates the batch
(:meth:`ObfuscatedDataset.batch`, one call) and writes it into the slot, and the trainer copies
it out — about 0.4 ms of its time per batch (``benchmarks/bench_worker_feed.py``). The batches
are the ones the in-process feed gives, in the same order (obfuscation depends on the key, the
image id and the image only).

Used only for an :class:`~visualmixer.data.wrapper.ObfuscatedDataset` over a ``TensorDataset``
(what ``visualmixer train`` builds); the workers compute on the CPU with one torch thread each.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
import weakref
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as torch_mp

from visualmixer.data.wrapper import ObfuscatedDataset
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
    training loop, with the worker's traceback as its cause; a worker that dies raises
    :class:`WorkerFailed` naming its exit code.
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

    # -- the slots and the processes --------------------------------------------------------------
    def _start(self) -> _Pool:
        if self._pool is None:
            ds = self.loader.dataset
            size = self.loader.batch_sampler.batch_size
            slots = _slots(ds, self.workers * SLOTS_PER_WORKER, size)
            self._pool = _Pool(self._ctx, ds, slots, self.workers)
            self._finalizer = weakref.finalize(self, self._pool.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool, self._finalizer = None, None

    def __iter__(self):
        pool = self._start()
        try:
            yield from self._epoch(pool)
        except WorkerFailed:
            self.close()  # (the next iteration starts new workers)
            raise
        finally:
            if self._pool is pool:
                pool.drain()  # a loop that stopped early leaves no answer for the next epoch to misread

    def _epoch(self, pool: _Pool):
        order = list(self.loader.batch_sampler)
        epoch = self.loader.dataset.epoch
        nslots = len(pool.slots[0])
        for j in range(min(nslots, len(order))):
            pool.submit(j % nslots, epoch, order[j])
        for j in range(len(order)):
            t = time.perf_counter()
            n = pool.receive(j % nslots)
            batch = tuple(_copy_out(s[j % nslots, :n], self.dev) for s in pool.slots)
            self.seconds += time.perf_counter() - t
            if j + nslots < len(order):  # the slot is free again: the batch after next of its worker
                pool.submit(j % nslots, epoch, order[j + nslots])
            yield batch


def _slots(ds: ObfuscatedDataset, count: int, batch_size: int) -> list[torch.Tensor]:
    """One shared tensor per field of a batch (the dataset's tensors, then the VFE), ``count``
    batches of ``batch_size`` rows each."""
    fields = [(t.shape[1:], t.dtype) for t in ds.dataset.tensors]
    if ds.return_vfe:
        fields.append(((), torch.float64))
    return [torch.empty((count, batch_size, *shape), dtype=dtype).share_memory_() for shape, dtype in fields]


def _copy_out(rows: torch.Tensor, dev: torch.device) -> torch.Tensor:
    if dev.type == "cuda":  # pinned: the step's copy to the device runs asynchronously
        return torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True).copy_(rows)
    return rows.clone()


class _Pool:
    """The worker processes, their pipes and the slots. Slot ``s`` belongs to worker
    ``s % workers``; each worker answers its tasks in the order they were sent."""

    def __init__(self, ctx, ds: ObfuscatedDataset, slots: list[torch.Tensor], workers: int):
        self.slots, self.procs, self.tasks, self.answers, self.pending = slots, [], [], [], [0] * workers
        try:
            for _ in range(workers):
                task_out, task_in = ctx.Pipe(duplex=False)
                answer_out, answer_in = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_serve, args=(ds, task_out, answer_in, slots, os.getpid()),
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

    def submit(self, slot: int, epoch: int, indices) -> None:
        w = slot % len(self.procs)
        try:
            self.tasks[w].send((slot, int(epoch), torch.as_tensor(indices).tolist()))
        except OSError:  # its end of the pipe is closed: the worker is gone
            self._failed(w)
        self.pending[w] += 1

    def receive(self, slot: int) -> int:
        """Wait for the answer of ``slot``'s task: the rows written; raise what the worker raised."""
        w = slot % len(self.procs)
        kind, value = self._next(w)
        if kind == "error":
            err, text = value
            raise err from _WorkerTraceback(f"in loader worker {w} (pid {self.procs[w].pid}):\n{text}")
        return value

    def _next(self, w: int):
        conn, proc = self.answers[w], self.procs[w]
        while True:
            if conn.poll():
                try:
                    answer = conn.recv()
                except EOFError:
                    break
                self.pending[w] -= 1
                return answer
            if not proc.is_alive():
                break
            wait([conn, proc.sentinel])
        self._failed(w)

    def _failed(self, w: int):
        proc = self.procs[w]
        proc.join(timeout=1.0)
        self.pending[w] = 0
        raise WorkerFailed(f"loader worker {w} (pid {proc.pid}) ended with {_exit_text(proc.exitcode)} before its "
                           f"batch was made (e.g. killed by the out-of-memory killer); run again, or use "
                           f"--loader-workers 0 to obfuscate in the training process")

    def drain(self) -> None:
        for w in range(len(self.procs)):
            while self.pending[w] > 0:
                try:
                    self._next(w)
                except WorkerFailed:
                    break

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
        names = {s.value: s.name for s in signal.Signals}
        return f"signal {-code} ({names.get(-code, '?')})"
    return f"exit code {code}"


def _serve(ds: ObfuscatedDataset, tasks, answers, slots: list[torch.Tensor], parent: int) -> None:
    """A worker: obfuscate each task's batch into its slot until told to stop (``None``), the
    trainer's end of the pipe closes or the trainer is gone (killed: a forked worker holds copies
    of the pipes, so it watches its parent's pid instead of waiting for an end of file).
    SIGINT is ignored: Ctrl-C reaches the whole process group and the trainer stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    while True:
        try:
            while not tasks.poll(0.5):
                if os.getppid() != parent:
                    return
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        slot, epoch, indices = task
        try:
            ds.set_epoch(epoch)
            batch = ds.batch(indices)
            for dst, src in zip(slots, batch, strict=True):
                dst[slot, : len(indices)].copy_(src)
            answer = ("ok", len(indices))
        except Exception as err:  # raised again in the training loop
            answer = ("error", (_picklable(err), traceback.format_exc()))
        try:
            answers.send(answer)
        except OSError:
            return


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
