"""WorkerFeed: online batches made by persistent worker processes into shared memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.utils.data import TensorDataset

import visualmixer as vm
from _procs import alive
from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.train.feed import DatasetBatches
from visualmixer.train.fit import ShuffledBatches
from visualmixer.train.workerfeed import WorkerFailed, WorkerFeed

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_hang():
    """A hang (a feed waiting for an answer that never comes) fails the run with every thread's
    traceback instead of stalling it."""
    import faulthandler

    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def make_feed():
    """``WorkerFeed(...)``, closed after the test."""
    made = []

    def make(*args, **kwargs):
        made.append(WorkerFeed(*args, **kwargs))
        return made[-1]

    yield make
    for feed in made:
        feed.close()


def _dataset(n=70, soft=False):
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 10
    if soft:  # (N, K) per-class targets
        y = torch.softmax(torch.randn(n, 10, generator=torch.Generator().manual_seed(1)), 1)
    return ObfuscatedDataset(TensorDataset(x, y), vm.Key.from_seed(5), 0.5, "online", return_vfe=True)


def _batches(n=70):
    return ShuffledBatches(n, 16, epoch_seed=lambda e: 7 + e)


def _in_process(ds, batches, epoch):
    ds.set_epoch(epoch)
    batches.set_epoch(epoch)
    return list(DatasetBatches(ds, batches))


def _same_as_in_process(got, ds, batches, epoch) -> bool:
    """The images of ``got`` are those of the in-process feed's epoch ``epoch``, batch by batch."""
    want = _in_process(ds, batches, epoch)
    return len(got) == len(want) and all(torch.equal(g[0], w[0]) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("soft", [False, True])
def test_the_same_batches_as_in_process_every_epoch(workers, soft, make_feed):
    ds, batches = _dataset(soft=soft), _batches()
    feed = make_feed(ds, batches, CPU, workers)
    for epoch in range(3):
        feed.set_epoch(epoch)
        got = list(feed)
        want = _in_process(ds, batches, epoch)
        assert [len(b[0]) for b in got] == [16, 16, 16, 16, 6]  # the last batch is partial
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w) == 3
            assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(g, w, strict=True))
    # epochs differ (new keys and a new order), so the comparison above can fail
    assert not torch.equal(got[0][0], _in_process(ds, batches, 0)[0][0])
    assert feed.seconds > 0


def test_batches_are_copies_that_later_batches_do_not_overwrite(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    got = list(feed)  # all batches kept while the slots were reused
    assert _same_as_in_process(got, ds, batches, 0)


def test_an_epoch_left_early_does_not_leak_into_the_next(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 2)
    feed.set_epoch(0)
    for i, _ in enumerate(feed):
        if i == 1:
            break  # tasks still queued in the workers
    feed.set_epoch(1)
    got = list(feed)
    want = _in_process(ds, batches, 1)
    assert all(torch.equal(g[0], w[0]) and torch.equal(g[2], w[2]) for g, w in zip(got, want, strict=True))


def _kill_worker(feed: WorkerFeed, w: int) -> None:
    """SIGKILL worker ``w`` of ``feed`` (as the out-of-memory killer would) and wait until it is gone."""
    victim = feed._pool.procs[w]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)


class _Boom(ValueError):
    pass


def test_an_error_in_a_worker_is_raised_in_the_loop_with_its_traceback(monkeypatch, make_feed):
    ds, batches = _dataset(), _batches()
    real = ObfuscatedDataset.batch

    def failing(self, indices):  # (inherited by the forked worker)
        if self.epoch == 1:
            raise _Boom("the image at index 3 is broken")
        return real(self, indices)

    monkeypatch.setattr(ObfuscatedDataset, "batch", failing)
    feed = make_feed(ds, batches, CPU, 1, context="fork")
    feed.set_epoch(0)
    assert len(list(feed)) == 5
    feed.set_epoch(1)
    with pytest.raises(_Boom, match="index 3 is broken") as info:
        list(feed)
    assert "in loader worker 0" in str(info.value.__cause__) and "failing" in str(info.value.__cause__)
    feed.set_epoch(0)  # the workers live on
    assert len(list(feed)) == 5


def test_a_killed_worker_is_named_with_its_signal(make_feed):
    ds, batches = _dataset(n=400), _batches(n=400)  # 25 batches: most of worker 1's still to make
    feed = make_feed(ds, batches, CPU, 2)
    feed.set_epoch(0)
    it = iter(feed)
    next(it)
    _kill_worker(feed, 1)
    with pytest.raises(WorkerFailed, match=r"loader worker 1 \(pid \d+\) ended with signal 9 \(SIGKILL\)"):
        list(it)
    assert feed._pool is None  # closed at the failure; a new epoch starts new workers
    feed.set_epoch(1)
    assert len(list(feed)) == 25


def test_close_stops_the_workers_and_a_later_epoch_starts_new_ones(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 2)
    feed.set_epoch(0)
    first = list(feed)
    procs = list(feed._pool.procs)
    feed.close()
    assert not any(p.is_alive() for p in procs)
    again = list(feed)  # epoch 0 again, new workers
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))


def _kill_and_see_workers_end(trainer: subprocess.Popen, pids: list[int]) -> None:
    """SIGKILL the trainer; its workers ``pids`` must end within 10 s."""
    trainer.kill()
    trainer.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "a worker outlived the killed trainer"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_the_training_process_is_killed():
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_workerfeed import _dataset, _batches
        from visualmixer.train.workerfeed import WorkerFeed
        feed = WorkerFeed(_dataset(), _batches(), torch.device("cpu"), 2)
        feed.set_epoch(0)
        next(iter(feed))
        print(*[p.pid for p in feed._pool.procs], flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in _within(60, proc.stdout.readline).split()]
        assert len(pids) == 2
        _kill_and_see_workers_end(proc, pids)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_spawned_workers_give_the_same_batches(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1, context="spawn")
    feed.set_epoch(2)
    got = list(feed)
    assert _same_as_in_process(got, ds, batches, 2)


def test_bad_arguments_are_refused():
    ds, batches = _dataset(), _batches()
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        WorkerFeed(ds, batches, CPU, 0)
    plain = ObfuscatedDataset([torch.zeros(1, 4, 4, dtype=torch.uint8)], vm.Key.from_seed(0), 0.5, "online")
    with pytest.raises(TypeError, match="over a TensorDataset"):
        WorkerFeed(plain, batches, CPU, 1)


def test_an_iteration_started_while_another_is_suspended_gets_its_own_batches(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    old = iter(feed)
    next(old)  # suspended with tasks in flight (e.g. its frame kept by a traceback)
    feed.set_epoch(1)
    got = list(feed)
    assert _same_as_in_process(got, ds, batches, 1)
    with pytest.raises(RuntimeError, match="another iteration started"):
        next(old)
    feed.set_epoch(2)
    newer = iter(feed)
    first = next(newer)
    del old  # closing the stale generator must not eat the live one's answers
    assert _same_as_in_process([first, *list(newer)], ds, batches, 2)


def test_close_during_an_epoch_is_a_clear_error(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    it = iter(feed)
    next(it)
    feed.close()
    with pytest.raises(RuntimeError, match="close\\(\\) was called"):
        next(it)
    assert len(list(feed)) == 5  # new workers


def test_tasks_stay_small_whatever_the_batch_size(monkeypatch, make_feed):
    """The indices travel in shared memory: a pipe message over the pipe's buffer would block the
    trainer (losing the overlap) and, were it killed mid-write, leave a worker waiting forever."""
    import pickle
    from multiprocessing.connection import Connection

    sizes = []
    real = Connection.send

    def send(self, obj):
        if isinstance(obj, tuple) and len(obj) == 4:  # a task
            sizes.append(len(pickle.dumps(obj)))
        return real(self, obj)

    monkeypatch.setattr(Connection, "send", send)
    x = torch.randint(0, 256, (6000, 1, 8, 8), dtype=torch.uint8)
    ds = ObfuscatedDataset(TensorDataset(x, torch.zeros(6000, dtype=torch.long)), vm.Key.from_seed(1), 0.5,
                           "online", return_vfe=True)
    batches = ShuffledBatches(6000, 5000, epoch_seed=lambda e: e)
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    got = list(feed)
    assert [len(b[0]) for b in got] == [5000, 1000] and sizes and max(sizes) < 256
    assert _same_as_in_process(got, ds, batches, 0)


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(), reason="no forkserver")
def test_forkserver_workers_wait_between_epochs(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1, context="forkserver")
    feed.set_epoch(0)
    assert len(list(feed)) == 5
    time.sleep(1.2)  # idle longer than the workers' parent check
    feed.set_epoch(1)
    assert len(list(feed)) == 5


def test_a_worker_gone_between_epochs_is_replaced_with_a_warning(make_feed):
    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    list(feed)
    _kill_worker(feed, 0)
    feed.set_epoch(1)
    with pytest.warns(RuntimeWarning, match=r"loader worker 0 \(pid \d+\) ended with signal 9"):
        got = list(feed)
    assert _same_as_in_process(got, ds, batches, 1)


def _within(seconds: float, fn):
    """``fn()`` in a thread; its result, or a test failure if it has not returned in time."""
    import threading

    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as err:  # handed to the test
            out["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not return within {seconds} s (hung)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.mark.parametrize("where", ["send", "recv"])
def test_an_interrupt_inside_a_pipe_call_leaves_a_feed_that_works_again(monkeypatch, where, make_feed):
    """A Ctrl-C landing right after a task was written, or an answer read, but before the feed
    recorded it: the epoch ends with KeyboardInterrupt at once and the next epoch is right."""
    from multiprocessing.connection import Connection

    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    trainer, real = os.getpid(), getattr(Connection, where)
    calls = {"n": 0}

    def interrupted(self, *args):
        value = real(self, *args)
        if os.getpid() == trainer and (where == "recv" or isinstance(args[0], tuple)):
            calls["n"] += 1
            if calls["n"] == (3 if where == "send" else 5):  # (5: the epoch's last answer)
                raise KeyboardInterrupt
        return value

    feed.set_epoch(0)
    monkeypatch.setattr(Connection, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        _within(20, lambda: [b for b in feed])
    monkeypatch.setattr(Connection, where, real)
    feed.set_epoch(1)
    assert _same_as_in_process(_within(20, lambda: list(feed)), ds, batches, 1)


def test_a_stale_iteration_closed_during_the_next_ones_start_is_harmless(monkeypatch, make_feed):
    """The garbage collector may close a suspended, stale iteration at any allocation — e.g.
    inside the next iteration's start-up drain; it must not take that iteration's answers."""
    import visualmixer.train.workerfeed as wf

    ds, batches = _dataset(), _batches()
    feed = make_feed(ds, batches, CPU, 1)
    feed.set_epoch(0)
    stale = iter(feed)
    next(stale)  # tasks in flight
    real, state = wf.wait, {"closed": False}

    def wait(objs, timeout=None):
        if not state["closed"]:
            state["closed"] = True
            stale.close()  # (what a collection of a cycle holding it does)
        return real(objs, timeout)

    monkeypatch.setattr(wf, "wait", wait)
    feed.set_epoch(1)
    got = _within(20, lambda: list(feed))
    assert _same_as_in_process(got, ds, batches, 1)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_spawned_through_a_forking_wrapper_executable(tmp_path):
    """``multiprocessing.set_executable`` may name a wrapper that runs Python as its child (not by
    exec): the workers' parent is then the wrapper, not the trainer. They still serve batches, wait
    between epochs, and end when the trainer is killed."""
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nstatus=$?\nexit $status\n')
    wrapper.chmod(0o755)
    script = textwrap.dedent(f"""
        import multiprocessing, sys, time, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_workerfeed import _batches, _dataset, _same_as_in_process
        from visualmixer.train.workerfeed import WorkerFeed
        multiprocessing.set_executable({str(wrapper)!r})
        ds, batches = _dataset(), _batches()
        feed = WorkerFeed(ds, batches, torch.device("cpu"), 1, context="spawn")
        feed.set_epoch(1)
        same = _same_as_in_process(list(feed), ds, batches, 1)
        time.sleep(1.5)  # idle: a worker that took the wrapper's pid for a dead trainer's has quit by now
        print(same and feed._pool.alive(), *[p.pid for p in feed._pool.procs], flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        same, *pids = _within(90, proc.stdout.readline).split()
        assert same == "True" and len(pids) == 1  # (no pid: nothing below would be checked)
        _kill_and_see_workers_end(proc, [int(p) for p in pids])  # (the wrappers: they end after their children)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
