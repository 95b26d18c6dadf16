"""Batch parts run on torch's threads at once: the same bytes as one part, errors surface."""

import threading

import pytest
import torch

import visualmixer as vm
from visualmixer.core import parallel
from visualmixer.data.samples import builtin_photos

KEY = vm.Key.from_seed(7)


@pytest.fixture
def threads():
    """Run with ``k`` torch threads and parts of any size; restore both afterwards."""
    before = torch.get_num_threads()

    def use(k, monkeypatch):
        monkeypatch.setattr(parallel, "MIN_IMAGE_VALUES", 1)
        monkeypatch.setattr(parallel, "MIN_PART_VALUES", 1)
        torch.set_num_threads(k)

    yield use
    torch.set_num_threads(before)


def test_parts_follow_threads_and_size(threads, monkeypatch):
    x = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    assert parallel.batch_parts(x) == [(0, 5)]  # one thread (the test suite's setting)
    threads(3, monkeypatch)
    assert parallel.batch_parts(x) == [(0, 1), (1, 3), (3, 5)]
    assert parallel.batch_parts(x[:1]) == [(0, 1)]
    monkeypatch.setattr(parallel, "MIN_IMAGE_VALUES", 8 * 8 * 3 + 1)  # small images: one part
    assert parallel.batch_parts(x) == [(0, 5)]


@pytest.mark.parametrize("size", [(48, 48), (50, 70)])  # full regions; edge regions
def test_obfuscate_and_restore_give_the_same_bytes_in_parts(threads, monkeypatch, size):
    _, photos = builtin_photos(64)
    x = torch.nn.functional.interpolate(photos.float(), size=size).round().to(torch.uint8)
    x = x.repeat(2, 1, 1, 1)[:7].contiguous()
    ids = [f"img{i}" for i in range(7)]
    one = vm.obfuscate(x, key=KEY, ids=ids, target_vfe=0.6)
    threads(3, monkeypatch)
    seen = set()
    original = parallel.run_parts

    def spy(fn, parts):
        seen.add(len(parts))
        return original(fn, parts)

    monkeypatch.setattr("visualmixer.core.mixer.run_parts", spy)
    many = vm.obfuscate(x, key=KEY, ids=ids, target_vfe=0.6)
    assert seen == {3}
    assert torch.equal(many.images, one.images)
    assert torch.equal(many.plans.levels, one.plans.levels)
    assert torch.equal(many.vfe, one.vfe)
    assert torch.equal(vm.restore(many.images, many.plans, key=KEY, ids=ids), x)


def test_a_failing_part_raises_after_every_part_finished(threads, monkeypatch):
    threads(3, monkeypatch)
    finished = []
    lock = threading.Lock()

    def fn(a, b):
        if a == 1:
            raise RuntimeError("part 1 failed")
        with lock:
            finished.append(a)
        return a

    with pytest.raises(RuntimeError, match="part 1 failed"):
        parallel.run_parts(fn, [(0, 1), (1, 2), (2, 3)])
    assert sorted(finished) == [0, 2]
    assert parallel.run_parts(lambda a, b: (a, b), [(0, 2), (2, 4)]) == [(0, 2), (2, 4)]


def test_the_callers_thread_setting_is_back_after_parts_even_when_calls_overlap(threads, monkeypatch):
    threads(3, monkeypatch)
    seen = []
    both_inside = threading.Barrier(2, timeout=10)

    def fn(a, b):
        seen.append(torch.get_num_threads())
        if a == 0:
            both_inside.wait()  # the two calls' parts run at the same time
        return a

    callers = [threading.Thread(target=parallel.run_parts, args=(fn, [(0, 1), (1, 2)])) for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=20)
    assert set(seen) == {1}  # parts run with one intra-op thread
    assert torch.get_num_threads() == 3
    x = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    vm.obfuscate(x, key=KEY, ids=range(4))
    assert torch.get_num_threads() == 3
