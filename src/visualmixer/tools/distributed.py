"""Running independent jobs in this process, in local worker processes, or on a Dask cluster.

:func:`map_unordered` is what the folder tools use: it takes an iterator of jobs, keeps only a
bounded number in flight (so memory stays flat however many jobs there are) and yields results as
they finish. The three back ends run the same function on the same inputs, so the results are the
same; only the order in which they arrive differs.

Dask is optional (``pip install 'visualmixer[dask]'``) and imported only when asked for. ``"local"``
starts ``dask.distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
dashboard_address=":0", security=True)``, bound to the loopback interface and speaking TLS with
throwaway credentials made for the run and held in memory: the loopback interface is open to every
user of the machine, and an unauthenticated cluster would hand any of them the master key (and run
their code as you); without the credentials no other process can connect. ``"tcp://HOST:PORT"``
(or ``tls://...``) connects to an existing scheduler. The job function and its arguments travel to
the workers pickled: for the folder tools that includes the master key, so use such clusters only
on machines you trust, and a ``tls://`` address across networks you do not.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["map_unordered", "check_address", "dask_client", "import_dask_distributed"]

def import_dask_distributed():
    """Import ``dask.distributed`` or raise ``MissingExtraError`` (an ``ImportError``) naming the
    ``dask`` extra."""
    from visualmixer.core.optional import require

    require("distributed", extra="dask", purpose="dask=")
    return require("dask.distributed", extra="dask", purpose="dask=")


def check_address(address: str) -> str:
    """Validate a ``dask`` address: ``"local"``, ``tcp://HOST:PORT`` or ``tls://HOST:PORT``."""
    if not isinstance(address, str) or not (
        address == "local" or address.startswith(("tcp://", "tls://"))
    ):
        raise ValueError(f"dask: expected 'local' or 'tcp://HOST:PORT', got {address!r}")
    return address


@contextlib.contextmanager
def dask_client(address: str, *, n_workers: int = 2):
    """A ``dask.distributed.Client`` for ``address`` (``"local"`` or ``tcp://HOST:PORT``).

    ``"local"`` starts a loopback-only ``LocalCluster`` with ``n_workers`` single-threaded worker
    processes, TLS with throwaway credentials between them (module docstring), and closes it on
    exit; other addresses connect to an existing scheduler.
    """
    check_address(address)
    dd = import_dask_distributed()
    if address == "local":
        import dask

        from visualmixer.core.optional import require

        require("cryptography", extra="dask", purpose="dask='local' (TLS between the cluster's processes)")
        _start_forkserver(["distributed", "visualmixer.tools.chunks"])
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
            cluster = dd.LocalCluster(
                n_workers=max(1, int(n_workers)),
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=":0",
                processes=True,
                silence_logs=40,
                security=True,  # TLS, credentials made now: the key is scattered to the workers
            )
        try:
            client = dd.Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
    else:
        client = dd.Client(address, timeout=30)
        try:
            yield client
        finally:
            client.close()


def _exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Worker-process initializer: exit as soon as the process that started the pool is gone.

    Without it, workers of a parent killed with SIGKILL would wait for work forever. Workers
    ignore SIGINT (Ctrl-C reaches the whole process group): the parent stops the pool, so one
    Ctrl-C gives one "interrupted" line, not a traceback per worker.
    """
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def alive() -> bool:
        try:
            with open(f"/proc/{parent_pid}/stat", "rb") as fh:
                return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except FileNotFoundError:
            return False
        except OSError:  # no /proc: ask the kernel
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return True

    def watch() -> None:
        while alive():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="visualmixer-parent-watch", daemon=True).start()


def _start_forkserver(preload: list[str]) -> None:
    """Start this process's fork server with ``preload`` imported (torch once, not per worker).

    Worker processes (ours and a local Dask cluster's) then fork from a clean single-threaded
    server instead of re-importing everything. No-op where forkserver is unavailable.
    """
    try:
        from multiprocessing import forkserver

        ctx = multiprocessing.get_context("forkserver")
    except (ImportError, ValueError):  # pragma: no cover
        return
    ctx.set_forkserver_preload(preload)
    forkserver.ensure_running()


def _process_context(fn: Callable[..., Any]):
    """A ``forkserver`` context whose server has imported ``fn``'s module (and so torch) once.

    Children fork from that clean, single-threaded server: they start in a fraction of the time
    a ``spawn`` start needs (no re-import of torch per worker) without the risks of forking a
    parent that already runs threads. Falls back to ``spawn`` where forkserver is missing.
    """
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without fork
        return multiprocessing.get_context("spawn")
    module = getattr(fn, "__module__", None)
    if module and module != "__main__":
        _start_forkserver([module])
    return ctx


def _bounded(submit: Callable[[Any], Any], wait_one: Callable[[set], tuple[set, set]],
             jobs: Iterable[tuple[Any, tuple]], limit: int) -> Iterator[tuple[Any, Any]]:
    pending: dict[Any, Any] = {}
    it = iter(jobs)
    exhausted = False
    while True:
        while not exhausted and len(pending) < limit:
            try:
                tag, args = next(it)
            except StopIteration:
                exhausted = True
                break
            pending[submit(args)] = tag
        if not pending:
            return
        done, _ = wait_one(set(pending))
        for fut in done:
            tag = pending.pop(fut)
            yield tag, fut.result()


def map_unordered(
    fn: Callable[..., Any],
    jobs: Iterable[tuple[Any, tuple]],
    *,
    workers: int = 1,
    dask: str | None = None,
    shared: tuple = (),
    in_flight: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(*args, *shared)`` for each ``(tag, args)`` of ``jobs``; yield ``(tag, result)``.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by reference for worker processes).
    jobs : iterable of (tag, tuple)
        Consumed lazily: at most ``in_flight`` jobs are read ahead of the results.
    workers : int
        1: run in this process, in order. N > 1: N worker processes (``forkserver`` start
        method, torch imported once by the server), or the number of workers of a local Dask
        cluster.
    dask : str, optional
        ``"local"`` or ``"tcp://HOST:PORT"``: run on Dask instead (see the module docstring).
    shared : tuple
        Extra arguments common to every job (pickled with each job for worker processes,
        scattered once to every Dask worker).
    in_flight : int, optional
        Jobs submitted ahead (default ``2 * workers``, at least 2).

    Yields
    ------
    (tag, result)
        In completion order (in job order when ``workers == 1`` and no Dask).
    """
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers}")
    limit = int(in_flight or max(2, 2 * workers))
    if dask is not None:
        with dask_client(dask, n_workers=max(2, workers)) as client:
            dd = import_dask_distributed()
            shared_f = [client.scatter(x, broadcast=True) for x in shared]

            def submit(args: tuple) -> Any:
                return client.submit(fn, *args, *shared_f, pure=False)

            def wait_one(futs: set) -> tuple[set, set]:
                res = dd.wait(list(futs), return_when="FIRST_COMPLETED")
                return set(res.done), set(res.not_done)

            yield from _bounded(submit, wait_one, jobs, limit)
        return
    if workers == 1:
        for tag, args in jobs:
            yield tag, fn(*args, *shared)
        return
    ctx = _process_context(fn)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                                initargs=(os.getpid(),)) as pool:
        try:
            yield from _bounded(
                lambda args: pool.submit(fn, *args, *shared),
                lambda futs: cf.wait(futs, return_when=cf.FIRST_COMPLETED),
                jobs,
                limit,
            )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
