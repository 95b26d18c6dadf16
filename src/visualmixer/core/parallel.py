"""Parts of a CPU batch run on torch's threads at once.

Most of the core's work on a batch is short integer passes and gathers that torch runs on one
thread (its intra-op parallelism does not pay for them), so on a CPU with ``T`` torch threads
:func:`visualmixer.core.mixer.obfuscate` cuts a batch of large images into at most ``T`` parts
and runs them at once. Every image is processed on its own (its key words, saliency and plan are
its own), so the output is the same bytes for any number of parts; the number of parts depends
on the thread count and the batch's shape only, never on the data. While parts run, torch runs
one intra-op thread (the parts use the threads); the caller's setting is restored afterwards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

__all__ = ["batch_parts", "run_parts", "MIN_IMAGE_VALUES", "MIN_PART_VALUES"]

#: The fewest values (C * H * W) an image must hold for its batch to be cut: the per-call
#: overhead of another part costs more than the thread gains on small images (measured on two
#: cores, wall time: 224² RGB obfuscate 1.4-1.7x faster, 32² RGB 13 % slower; restore, about one
#: gather, 224² 5-15 % slower, so it runs in one part).
MIN_IMAGE_VALUES = 1 << 15
#: The fewest values (N * C * H * W) a part may hold.
MIN_PART_VALUES = 1 << 20

_T = TypeVar("_T")
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_size = 0
_active = 0  # calls running parts now
_saved_threads = 1  # the torch thread count before the first of them


def batch_parts(batch: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` parts of an ``(N, C, H, W)`` batch to run at once.

    One part (the whole batch) unless the batch is on the CPU, torch has more than one thread,
    the images hold at least :data:`MIN_IMAGE_VALUES` values each and every part at least
    :data:`MIN_PART_VALUES`.
    """
    n = batch.shape[0]
    if batch.device.type != "cpu" or n < 2 or batch[0].numel() < MIN_IMAGE_VALUES:
        return [(0, n)]
    parts = min(torch.get_num_threads(), n, batch.numel() // MIN_PART_VALUES)
    if parts < 2:
        return [(0, n)]
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool (made again after a fork: a child process has none of its threads)."""
    global _pool, _pool_pid, _pool_size
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < workers:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)  # a larger pool replaces it; its idle threads exit
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visualmixer")
            _pool_pid, _pool_size = os.getpid(), workers
        return _pool


def run_parts(fn: Callable[[int, int], _T], parts: list[tuple[int, int]]) -> list[_T]:
    """``[fn(start, stop) for each part]``, the parts at once (the first in the calling thread).

    Exceptions of any part are raised here, after every part has finished.
    """
    if len(parts) == 1:
        return [fn(*parts[0])]
    futures = []
    _one_intra_op_thread(enter=True)
    try:
        pool = _executor(len(parts) - 1)
        futures = [pool.submit(fn, *p) for p in parts[1:]]
        first = fn(*parts[0])
        return [first] + [f.result() for f in futures]
    finally:
        wait(futures)  # no part outlives the call
        _one_intra_op_thread(enter=False)


def _one_intra_op_thread(*, enter: bool) -> None:
    """One intra-op thread while any call runs parts; the caller's setting back after the last.

    Parts that each start torch's OpenMP team leave extra teams behind, which measurably slow
    the caller's later multi-threaded work (32² batches: 2x); with one intra-op thread they
    start none. Calls may overlap in several threads, so the setting is saved by the first and
    restored by the last.
    """
    global _active, _saved_threads
    with _lock:
        if enter:
            if _active == 0:
                _saved_threads = torch.get_num_threads()
                torch.set_num_threads(1)
            _active += 1
        else:
            _active -= 1
            if _active == 0:
                torch.set_num_threads(_saved_threads)
