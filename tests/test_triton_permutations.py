"""The opt-in Triton kernel of generator 2's permutations (core.triton_permutations): the eager
path's integers and bytes — on the CPU in Triton's interpreter, on CUDA where there is one — and
an eager fallback that warns once."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import visualmixer as vm
from visualmixer.core import keyed

KEY = vm.Key.from_seed(3)

_INTERPRETED = textwrap.dedent("""
    import torch
    import visualmixer as vm
    from visualmixer.core import keyed, triton_permutations as tp

    g = torch.Generator().manual_seed(0)
    def keys(*shape):
        return torch.randint(-2**31, 2**31 - 1, shape, dtype=torch.int32, generator=g)

    # rows of every length kind: 2 and 3 (identity rows common), powers of two, padded lengths
    for n, shape, block in [(2, (300,), 2048), (3, (40, 3), 2048), (9, (30,), 2048), (16, (50, 2), 2048),
                            (64, (9,), 2048), (144, (2,), 256), (256, (2,), 256), (4, (0,), 2048)]:
        tp._BLOCK_VALUES = block  # (the interpreter's sort costs per program; the GPU's block stays)
        a, b = keys(*shape), keys(*shape)
        a.view(-1)[:2] = torch.tensor([-2**31, 2**31 - 1], dtype=torch.int32)[: a.numel()]
        for avoid in (True, False):
            got, want = tp.permutations(a, b, n, avoid), keyed.permutations(a, b, n, avoid)
            assert got.shape == want.shape and torch.equal(got, want), (n, shape, avoid)

    # through obfuscate and restore, on the sync-free path the GPU takes
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    eager = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
    keyed._TRITON_DEVICES, keyed._FORCE_SYNC_FREE = ("cpu",), True
    keyed.set_triton(True)
    lengths = []
    kernel = tp.permutations
    tp.permutations = lambda a, b, n, avoid: lengths.append(n) or kernel(a, b, n, avoid)
    fused = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
    back = vm.restore(fused.images, fused.plans, key=vm.Key.from_seed(3), ids=range(2))
    assert not keyed._triton_failed, keyed._triton_failed
    assert sorted(set(lengths)) == [3, 4, 16], lengths  # channel orders and both tile levels
    assert torch.equal(fused.images, eager.images) and torch.equal(fused.plans.levels, eager.plans.levels)
    assert torch.equal(back, x)
    print("ok")
""")


def test_the_kernel_gives_the_eager_integers_in_tritons_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", VISUALMIXER_TRITON="0")
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("slots", [4, 256])
def test_the_kernel_builds_for_an_h100_class_gpu_without_one(slots):
    """Compiled ahead of time to a Hopper (sm_90) binary: the interpreter runs Python, not
    Triton's compiler, so it does not catch what only the compiler refuses (it once did not:
    module constants that were not ``tl.constexpr`` instances)."""
    tp = pytest.importorskip("visualmixer.core.triton_permutations")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "*i32" for name in ("a_ptr", "b_ptr", "out_ptr")}
    signature |= {name: "i32" for name in ("rows", "n", "keep", "low")}
    constants = {"AVOID_IDENTITY": True, "ROWS": max(1, tp._BLOCK_VALUES // slots), "SLOTS": slots}
    signature |= {name: "constexpr" for name in constants}
    source = ASTSource(fn=tp._permutations_kernel, signature=signature, constexprs=constants)
    try:
        built = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    except (RuntimeError, FileNotFoundError) as exc:  # no CUDA tool chain in this Triton install
        if "ptxas" in str(exc) or "CUDA" in str(exc):
            pytest.skip(f"Triton cannot build CUDA binaries here: {exc}")
        raise
    assert built.asm["cubin"] and "sm_90" in built.asm["ptx"]


def test_row_lengths_outside_the_kernel_are_refused():
    tp = pytest.importorskip("visualmixer.core.triton_permutations")
    a = torch.zeros(3, dtype=torch.int32)
    for n in (1, tp.MAX_SLOTS + 1):
        with pytest.raises(ValueError, match=r"n must be in \[2, 1024\]"):
            tp.permutations(a, a, n, True)


@pytest.fixture
def kernel_on_cpu(monkeypatch):
    """The switch on, the CPU counted as a kernel device, the failure record emptied after."""
    previous = keyed.set_triton(True)
    monkeypatch.setattr(keyed, "_TRITON_DEVICES", ("cpu",))
    yield
    keyed.set_triton(previous)
    keyed._triton_failed.clear()


def test_a_kernel_that_cannot_run_warns_once_and_the_eager_path_runs(kernel_on_cpu, monkeypatch):
    tp = pytest.importorskip("visualmixer.core.triton_permutations")

    def broken(*args):
        raise RuntimeError("no GPU compiler here")

    monkeypatch.setattr(tp, "permutations", broken)
    a = torch.arange(-5, 5, dtype=torch.int32)
    with pytest.warns(RuntimeWarning, match="Triton permutation kernel cannot run.*no GPU compiler here"):
        first = keyed.permutations(a, a + 7, 16, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = keyed.permutations(a, a + 7, 16, True)
    keyed.set_triton(False)
    assert torch.equal(first, keyed.permutations(a, a + 7, 16, True)) and torch.equal(first, second)


def test_off_by_default_and_switchable():
    assert not keyed._triton.on  # (unless VISUALMIXER_TRITON=1)
    with pytest.raises(TypeError, match="must be a bool"):
        keyed.set_triton("yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_kernel_on_cuda_gives_the_cpu_bytes():
    pytest.importorskip("triton")
    previous = keyed.set_triton(True)
    try:
        g = torch.Generator().manual_seed(2)
        for n in (2, 3, 4, 16, 64, 144, 256, 1024):
            a, b = (torch.randint(-2**31, 2**31 - 1, (4096,), dtype=torch.int32, generator=g) for _ in range(2))
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a kernel that fails to build fails the test
                got = keyed.permutations(a.cuda(), b.cuda(), n, True)
            assert torch.equal(got.cpu(), keyed.permutations(a, b, n, True)), n
        x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8, generator=g)
        gpu = vm.obfuscate(x.cuda(), key=KEY, ids=range(16))
        back = vm.restore(gpu.images, gpu.plans, key=KEY, ids=range(16))
    finally:
        keyed.set_triton(previous)
    cpu = vm.obfuscate(x, key=KEY, ids=range(16))
    assert not keyed._triton_failed, keyed._triton_failed
    assert torch.equal(gpu.images.cpu(), cpu.images) and torch.equal(gpu.plans.levels, cpu.plans.levels)
    assert torch.equal(back.cpu(), x)
