"""The opt-in Triton kernels of the core (core.triton_kernels: generator 2's row keys and
permutations, the planner's pixel-pair sums): the eager path's integers and bytes — on the CPU
in Triton's interpreter, built for sm_90 without a GPU, on CUDA where there is one — and their
switch (core.triton_switch): each variant's first result checked against the eager path, an
eager fallback that warns once."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import visualmixer as vm
from visualmixer.core import keyed, planner, triton_switch

KEY = vm.Key.from_seed(3)


def _kernels():
    """core.triton_kernels; the tests skip only where Triton itself is missing, never because the
    module under test fails to import."""
    pytest.importorskip("triton")
    import visualmixer.core.triton_kernels as kernels

    return kernels

_INTERPRETED = textwrap.dedent("""
    import torch
    import visualmixer as vm
    from visualmixer.core import keyed, planner, triton_switch, triton_kernels as tp

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
    assert tp.permutations(a, b, tp.MAX_SLOTS + 1, True) is None  # (longer rows: the eager path's)

    # row keys: one lane, a ladder's lanes, the most lanes; no rows
    for rows, lanes in [(50, [60]), (300, list(range(4, 20)) + [60]), (7, list(range(64))), (0, [4, 5])]:
        words, regions = keys(rows, 8), torch.randint(0, 5000, (rows,), generator=g)
        lanes = torch.tensor(lanes, dtype=torch.int32)
        got, want = tp.lane_keys(words, regions, lanes), keyed.lane_keys(words, regions, lanes)
        assert all(torch.equal(p, q) for p, q in zip(got, want, strict=True)), (rows, len(lanes))
    assert tp.lane_keys(words, regions, torch.arange(65, dtype=torch.int32)) is None

    # pixel-pair sums of uint8 regions: every region side kind, extreme values, both modes
    tp._BLOCK_VALUES = 2048
    for r, lead in [(16, (3, 5, 3)), (8, (7, 2)), (12, (4,)), (2, (9,)), (32, (2,)), (16, (0, 3))]:
        x = torch.randint(0, 256, lead + (r, r), generator=g).to(torch.uint8)
        if x.numel():
            x.view(-1)[: r * r] = 255 * (torch.arange(r * r) % 2).to(torch.uint8)  # the largest steps
        got, want = tp.pair_sums(x), planner._float_sums(x) if r <= 16 else planner._int16_sums(x)
        assert all(torch.equal(p, q) and p.dtype == q.dtype for p, q in zip(got, want, strict=True)), r
        for t in [t for t in (1, 2, 3, 4, 8) if t < r]:
            seams = planner._seam_sum(x, t, -1) + planner._seam_sum(x, t, -2)
            assert torch.equal(tp.pair_sums(x, t), seams), (r, t)
    assert tp.pair_sums(torch.zeros(2, 33, 33, dtype=torch.uint8)) is None

    # through obfuscate and restore, on the sync-free path the GPU takes
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    eager = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
    triton_switch._DEVICES, keyed._FORCE_SYNC_FREE = ("cpu",), True
    triton_switch.set_enabled(True)
    calls = []
    what = {"permutations": lambda a, b, n, avoid: n, "pair_sums": lambda x, tile=0: tile,
            "lane_keys": lambda words, regions, lanes: len(lanes)}
    for name, arguments in what.items():
        kernel = getattr(tp, name)
        setattr(tp, name, lambda *args, kernel=kernel, name=name, arguments=arguments:
                calls.append((name, arguments(*args))) or kernel(*args))
    fused = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
    back = vm.restore(fused.images, fused.plans, key=vm.Key.from_seed(3), ids=range(2))
    assert triton_switch.enabled(), triton_switch._failed
    # row keys (obfuscate: 2 levels x 3 channels + the channel order; restore: the 1 level its
    # plans use); channel orders and both tile levels' permutations; source sums; both seams
    assert sorted(set(calls)) == [("lane_keys", 4), ("lane_keys", 7), ("pair_sums", 0), ("pair_sums", 1),
                                  ("pair_sums", 2), ("permutations", 3), ("permutations", 4),
                                  ("permutations", 16)], calls
    assert torch.equal(fused.images, eager.images) and torch.equal(fused.plans.levels, eager.plans.levels)
    assert torch.equal(back, x)

    # grey images; a grid with edge regions (the general path: tile permutations per shape)
    for shape in [(2, 1, 28, 28), (2, 3, 20, 36)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        triton_switch.set_enabled(False)
        eager = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
        triton_switch.set_enabled(True)
        fused = vm.obfuscate(x, key=vm.Key.from_seed(3), ids=range(2))
        back = vm.restore(fused.images, fused.plans, key=vm.Key.from_seed(3), ids=range(2))
        assert torch.equal(fused.images, eager.images) and torch.equal(back, x), shape
    assert triton_switch.enabled(), triton_switch._failed
    print("ok")
""")


def test_the_kernels_give_the_eager_integers_in_tritons_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", VISUALMIXER_TRITON="0")
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_every_kernel_builds_for_an_h100_class_gpu_without_one():
    """Every block shape the core launches, compiled ahead of time to a Hopper (sm_90) binary:
    the interpreter runs Python, not Triton's compiler, so it does not catch what only the
    compiler refuses (it once did not: module constants that were not ``tl.constexpr``)."""
    tk = _kernels()
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    shapes = list(tk.launch_shapes())
    assert {label.split(",")[0] for label, *_ in shapes} == {"lane keys", "permutations", "pair sums"}
    for label, kernel, signature, constants in shapes:
        try:
            built = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                                   target=GPUTarget("cuda", 90, 32))
        except (RuntimeError, FileNotFoundError) as exc:  # no CUDA tool chain in this Triton install
            if "ptxas" in str(exc) or "CUDA" in str(exc):
                pytest.skip(f"Triton cannot build CUDA binaries here: {exc}")
            raise
        assert built.asm["cubin"] and "sm_90" in built.asm["ptx"], label


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    """The switch on, the CPU counted as a kernel device, the failure record emptied after."""
    previous = triton_switch.set_enabled(True)
    monkeypatch.setattr(triton_switch, "_DEVICES", ("cpu",))
    yield
    triton_switch.set_enabled(previous)
    triton_switch._failed.clear()


def test_a_kernel_that_cannot_run_warns_once_and_the_eager_path_runs(kernels_on_cpu, monkeypatch):
    tp = _kernels()

    def broken(*args):
        raise RuntimeError("no GPU compiler here")

    monkeypatch.setattr(tp, "permutations", broken)
    a = torch.arange(-5, 5, dtype=torch.int32)
    with pytest.warns(RuntimeWarning, match="Triton kernel cannot run.*no GPU compiler here"):
        first = keyed.permutations(a, a + 7, 16, True)
    assert not triton_switch.enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = keyed.permutations(a, a + 7, 16, True)
        x = torch.randint(0, 256, (3, 2, 3, 8, 8), dtype=torch.uint8)
        assert torch.equal(planner._seams(x, 2), planner._seam_sum(x, 2, -1) + planner._seam_sum(x, 2, -2))
    triton_switch.set_enabled(False)
    assert torch.equal(first, keyed.permutations(a, a + 7, 16, True)) and torch.equal(first, second)


def test_each_kernel_variant_is_checked_against_the_eager_path_once(kernels_on_cpu, monkeypatch):
    tp = _kernels()
    monkeypatch.setattr(triton_switch, "_checked", set())
    eager_calls = []
    eager = keyed._permutations_eager
    monkeypatch.setattr(keyed, "_permutations_eager", lambda *args: eager_calls.append(args[2]) or eager(*args))
    monkeypatch.setattr(tp, "permutations", lambda a, b, n, avoid: eager(a, b, n, avoid))  # a right kernel
    a = torch.arange(-50, 50, dtype=torch.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in (16, 16, 16, 4, 4):
            assert torch.equal(keyed.permutations(a, a + 7, n, True), eager(a, a + 7, n, True))
    assert eager_calls == [16, 4]  # the first call of each row length only

    monkeypatch.setattr(tp, "permutations", lambda a, b, n, avoid: eager(a, b, n, avoid).flip(-1))  # a wrong one
    with pytest.warns(RuntimeWarning, match=r"gave other integers than the eager path \(permutations, \(64, True\)"):
        got = keyed.permutations(a, a + 7, 64, True)
    assert torch.equal(got, eager(a, a + 7, 64, True)) and not triton_switch.enabled()
    assert torch.equal(keyed.permutations(a, a + 7, 16, True), eager(a, a + 7, 16, True))  # eager from now on


def test_off_by_default_and_switchable():
    assert not triton_switch.enabled()  # (unless VISUALMIXER_TRITON=1)
    with pytest.raises(TypeError, match="must be a bool"):
        triton_switch.set_enabled("yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_kernels_on_cuda_give_the_cpu_bytes():
    tp = _kernels()
    previous = triton_switch.set_enabled(True)
    try:
        g = torch.Generator().manual_seed(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a kernel that fails to build fails the test
            for n in (2, 3, 4, 16, 64, 144, 256, 1024):
                a, b = (torch.randint(-2**31, 2**31 - 1, (4096,), dtype=torch.int32, generator=g) for _ in range(2))
                assert torch.equal(keyed.permutations(a.cuda(), b.cuda(), n, True).cpu(),
                                   keyed.permutations(a, b, n, True)), n
            words = torch.randint(-2**31, 2**31 - 1, (5000, 8), dtype=torch.int32, generator=g)
            regions, lanes = torch.arange(5000) % 196, torch.tensor(list(range(4, 20)) + [60], dtype=torch.int32)
            got = tp.lane_keys(words.cuda(), regions.cuda(), lanes.cuda())
            want = keyed.lane_keys(words, regions, lanes)
            assert all(torch.equal(p.cpu(), q) for p, q in zip(got, want, strict=True))
            for r in (8, 12, 16, 32):
                x = torch.randint(0, 256, (64, 49, 3, r, r), generator=g).to(torch.uint8)
                want = planner._float_sums(x) if r <= 16 else planner._int16_sums(x)
                assert all(torch.equal(p.cpu(), q) for p, q in zip(tp.pair_sums(x.cuda()), want, strict=True)), r
                assert torch.equal(tp.pair_sums(x.cuda(), 2).cpu(), planner._seam_sum(x, 2, -1)
                                   + planner._seam_sum(x, 2, -2)), r
            x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8, generator=g)
            gpu = vm.obfuscate(x.cuda(), key=KEY, ids=range(16))
            back = vm.restore(gpu.images, gpu.plans, key=KEY, ids=range(16))
        assert triton_switch.enabled(), triton_switch._failed
    finally:
        triton_switch.set_enabled(previous)
    cpu = vm.obfuscate(x, key=KEY, ids=range(16))
    assert torch.equal(gpu.images.cpu(), cpu.images) and torch.equal(gpu.plans.levels, cpu.plans.levels)
    assert torch.equal(back.cpu(), x)
