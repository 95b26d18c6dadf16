"""The opt-in torch.compile of generator 2's slot keys (core.fused): the same integers, and an
eager fallback that warns once."""

import warnings

import pytest
import torch

import visualmixer as vm
from visualmixer.core import fused, keyed
from visualmixer.core.fused import fused as make_fused

KEY = vm.Key.from_seed(3)


@pytest.fixture
def compiling():
    previous = fused.set_enabled(True)
    yield
    fused.set_enabled(previous)


def test_compiled_slot_keys_give_the_eager_integers_and_bytes(compiling):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-(2**31), 2**31 - 1, (300,), dtype=torch.int32, generator=g)
    b = torch.randint(-(2**31), 2**31 - 1, (300,), dtype=torch.int32, generator=g)
    a[:4] = torch.tensor([0, -1, -(2**31), 2**31 - 1], dtype=torch.int32)
    f = make_fused(keyed._slot_keys_eager)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (4, 16, 64, 256):
            golden, slots = keyed._slot_terms(n, "cpu")
            keep = ~((1 << (n - 1).bit_length()) - 1)
            got = f(a, b, golden, slots, keep)
            assert torch.equal(got, keyed._slot_keys_eager(a, b, golden, slots, keep)), n
    failed = [w for w in caught if "torch.compile" in str(w.message)]
    if failed:
        pytest.skip(f"torch.compile is not available here: {failed[0].message}")
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    with_compile = vm.obfuscate(x, key=KEY, ids=range(6))
    fused.set_enabled(False)
    eager = vm.obfuscate(x, key=KEY, ids=range(6))
    assert torch.equal(with_compile.images, eager.images) and torch.equal(with_compile.plans.levels,
                                                                        eager.plans.levels)


def test_a_failed_compile_warns_once_and_runs_eagerly(compiling, monkeypatch):
    def broken(fn, **kw):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    f = make_fused(lambda t: t * 2)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        assert torch.equal(f(torch.ones(3)), torch.full((3,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0))


def test_off_by_default_and_switchable():
    assert not fused.enabled()  # (unless VISUALMIXER_COMPILE=1)
    with pytest.raises(TypeError, match="must be a bool"):
        fused.set_enabled("yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_compiled_on_cuda_gives_the_cpu_bytes(compiling):
    x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile fails the test
        gpu = vm.obfuscate(x.cuda(), key=KEY, ids=range(16))
        back = vm.restore(gpu.images, gpu.plans, key=KEY, ids=range(16))
    fused.set_enabled(False)
    cpu = vm.obfuscate(x, key=KEY, ids=range(16))
    assert torch.equal(gpu.images.cpu(), cpu.images) and torch.equal(gpu.plans.levels, cpu.plans.levels)
    assert torch.equal(back.cpu(), x)
