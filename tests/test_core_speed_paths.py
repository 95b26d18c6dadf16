"""Issue 12: the exact one-pass targeting, permutation generator 2, and sync-free paths."""

import sys
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import visualmixer as vm
from visualmixer.core import keyed, mixer, permute
from visualmixer.core.keyed import key_words, tile_permutations
from visualmixer.core.permute import shuffle_regions
from visualmixer.core.regions import from_regions, region_grid, to_regions
from visualmixer.core.vfe import weighted_vfe, window_scores, window_weights
from visualmixer.data.samples import builtin_photos

KEY = vm.Key.from_seed(12)


def _photos(size, n=6, grey=False):
    _, x = builtin_photos(size)
    x = x.repeat(-(-n // len(x)), 1, 1, 1)[:n].contiguous()
    return x[:, :1].contiguous() if grey else x


# -- generator 2 -----------------------------------------------------------------------------

def _fmix_ref(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _perms_ref(words: np.ndarray, region: int, level: int, c: int, nt: int) -> np.ndarray:
    """Generator 2 written with NumPy uint32 (well-defined wrapping): the specification."""
    w = words.view(np.uint32)
    ctr = np.uint32(region * 64 + level * 4) + np.arange(c, dtype=np.uint32)
    with np.errstate(over="ignore"):
        a = _fmix_ref(ctr + w[0])
        for i in range(1, 4):
            a = _fmix_ref(a ^ w[i])
        b = _fmix_ref(a ^ w[4])
        for i in range(5, 8):
            b = _fmix_ref(b ^ w[i])
        k = np.arange(nt, dtype=np.uint32)
        s = _fmix_ref(a[:, None] + k * np.uint32(0x9E3779B9))
        s = _fmix_ref(s ^ b[:, None])
    bits = (nt - 1).bit_length()
    packed = (s & ~np.uint32((1 << bits) - 1)) | k
    perm = (np.sort(packed.view(np.int32), axis=-1).view(np.uint32) & np.uint32((1 << bits) - 1)).astype(np.int64)
    ident = (perm == np.arange(nt)).all(-1)
    perm[ident] = np.roll(perm[ident], 1, axis=-1)
    return perm


@pytest.mark.parametrize("nt", [4, 16, 49, 256])
def test_generator2_matches_its_numpy_specification(nt):
    """Torch's int32 arithmetic wraps like uint32: the CPU result is the specified one (and CUDA
    is checked against the CPU by scripts/gpu_session.sh)."""
    words = key_words(KEY.subkeys(range(5)), "cpu")
    regions = torch.tensor([0, 3, 17, 100, 4095])
    got = tile_permutations(words, regions, 3, 3, nt).numpy()
    for g in range(5):
        ref = _perms_ref(words[g].numpy(), int(regions[g]), 3, 3, nt)
        assert np.array_equal(got[g], ref)


def test_generator2_permutations_are_uniform_looking():
    words = key_words(KEY.subkeys(range(2000)), "cpu")
    perms = tile_permutations(words, torch.zeros(2000, dtype=torch.int64), 1, 1, 16)[:, 0]
    assert torch.equal(perms.sort(dim=1).values, torch.arange(16).expand(2000, 16))
    counts = torch.bincount(perms[:, 0], minlength=16).double()  # source tile of slot 0
    chi2 = ((counts - 125) ** 2 / 125).sum().item()
    assert chi2 < 45, counts  # 15 dof, p ~ 1e-4
    assert not (perms == torch.arange(16)).all(dim=1).any()


def test_generator2_depends_on_key_image_region_level_and_channel():
    words = key_words(KEY.subkeys([1, 2]), "cpu")
    reg = torch.tensor([5, 5])
    a = tile_permutations(words, reg, 2, 3, 16)
    assert not torch.equal(a[0], a[1])  # images
    assert not torch.equal(a[0, 0], a[0, 1])  # channels
    assert not torch.equal(a, tile_permutations(words, reg + 1, 2, 3, 16))  # regions
    assert not torch.equal(a, tile_permutations(words, reg, 3, 3, 16))  # levels
    other = key_words(vm.Key.from_seed(13).subkeys([1, 2]), "cpu")
    assert not torch.equal(a, tile_permutations(other, reg, 2, 3, 16))  # keys


@pytest.mark.parametrize("c, h, r, dtype", [(3, 32, 4, torch.uint8), (1, 28, 4, torch.uint8), (3, 64, 8, torch.float32),
                                          (3, 48, 16, torch.float64), (3, 28, 14, torch.uint8)])
@pytest.mark.parametrize("blocks", [False, True])
def test_image_layout_shuffle_equals_the_region_layout_one(c, h, r, dtype, blocks, monkeypatch):
    """Also on the CPU in blocks: an image at a time, its permutations a few rows at a time."""
    from visualmixer.core.permute import shuffle_image

    grid = region_grid(h, h, r)
    g = torch.Generator().manual_seed(h)
    x = torch.randint(0, 256, (3, c, h, h), dtype=torch.uint8, generator=g).to(dtype)
    words = key_words(KEY.subkeys(range(3)), "cpu")
    if blocks:
        monkeypatch.setattr(permute, "SHUFFLE_BLOCK_ENTRIES", 1)
        monkeypatch.setattr(keyed, "PERM_BLOCK_KEYS", 40)
    for sync_free in (False, True):
        monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", sync_free)
        for lv in (torch.randint(0, grid.levels + 1, (3, grid.count), generator=g),
                   torch.full((3, grid.count), grid.levels)):
            for inverse in (False, True):
                ref = shuffle_regions(to_regions(x, grid), words, lv, grid, True, inverse=inverse, generator=2)
                assert torch.equal(shuffle_image(x, words, lv, grid, True, inverse=inverse), from_regions(ref, grid))


def test_plans_record_the_generator_and_old_dicts_are_generator_1():
    x = _photos(32, 2)
    res = vm.obfuscate(x, key=KEY, ids=[0, 1])
    d = res.plans.to_dict()
    assert res.plans.generator == 2 and d["generator"] == 2
    assert vm.Plans.from_dict(d).generator == 2
    del d["generator"]
    assert vm.Plans.from_dict(d).generator == 1
    d["generator"] = 7
    with pytest.raises(ValueError, match="permutation generator 7"):
        vm.Plans.from_dict(d)
    with pytest.raises(ValueError, match="Plans.cat"):
        vm.Plans.cat([res.plans, vm.Plans.from_dict({**res.plans.to_dict(), "generator": 1})])


# -- one-pass targeting ------------------------------------------------------------------------

@pytest.mark.parametrize("size, grey, dtype", [(64, False, torch.uint8), (28, True, torch.uint8),
                                               (32, False, torch.float32), (40, False, torch.uint8),
                                               (30, True, torch.uint8)])  # 30: 2x2 corner regions
def test_one_pass_takes_the_first_plan_reaching_the_target(size, grey, dtype):
    """The rule (SPEC §5.3), checked against every plan shuffled and scored for real; the VFE
    returned is the VFE of the output, bit for bit."""
    x = _photos(size, 4, grey)
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    ids = list(range(4))
    n = len(x)
    window = vm.default_region(size, size)
    grid = region_grid(size, size, window)
    weights = window_weights(x, None, window)
    salient = mixer._salient_regions(vm.spectral_residual(x).double(), grid)
    last = max(0, 2 * grid.levels - 2)
    for tau in (0.3, 0.6, 0.9):
        res = vm.obfuscate(x, key=KEY, ids=ids, target_vfe=tau)
        real = weighted_vfe(window_scores(res.images, window), weights)
        assert torch.equal(real, res.vfe)
        plan_vfe = []
        for j in range(last + 1):
            lv = mixer.plan_sequence(salient, torch.full((n,), j), grid.levels, grid.lowest_levels)
            out = shuffle_regions(to_regions(x, grid), key_words(KEY.subkeys(ids, "shuffle"), "cpu"), lv,
                                  grid, True, generator=2)
            plan_vfe.append(weighted_vfe(window_scores(from_regions(out, grid), window), weights))
        plan_vfe = torch.stack(plan_vfe, 1)
        hit = plan_vfe >= tau
        first = torch.where(hit.any(1), hit.int().argmax(1), torch.full((n,), last))
        expect = mixer.plan_sequence(salient, first, grid.levels, grid.lowest_levels).view(n, grid.rows, grid.cols)
        assert torch.equal(res.plans.levels.long(), expect)


@pytest.mark.parametrize("r", [2, 4, 7, 16, 20])
def test_source_sums_are_exact_in_blocks_and_at_the_extremes(r, monkeypatch):
    """The planner's region sums (float32 up to 16 px, int16 byte sums above) equal int64 sums,
    also for the largest values (0/255 patterns: sums of squares near 2**24 at 16 px) and when
    the CPU cuts the batch into blocks."""
    from types import SimpleNamespace

    from visualmixer.core import planner

    gen = torch.Generator().manual_seed(r)
    x = torch.cat([torch.randint(0, 256, (5, 3, 3, r, r), generator=gen),
                   torch.randint(0, 2, (5, 3, 3, r, r), generator=gen) * 255,
                   torch.full((1, 3, 3, r, r), 255)]).to(torch.uint8)
    grid = SimpleNamespace(full=True, region=r)
    job = SimpleNamespace(batch=x, grid=grid, window=r, regions=x)
    w = x.long()
    col = (w[..., 1:] - w[..., :-1]).square().sum(-2)
    row = (w[..., 1:, :] - w[..., :-1, :]).square().sum(-1)
    expect = (col.sum(-1) + row.sum(-1), w.sum((-2, -1)), w.square().sum((-2, -1)), col, row)
    for block in (1 << 19, 3 * 3 * r * r * 2):  # one pass; blocks of two images
        monkeypatch.setattr(planner, "SUMS_BLOCK_VALUES", block)
        got = planner._source_sums(job)
        assert all(g.dtype == torch.int32 and torch.equal(g.long(), e) for g, e in zip(got, expect, strict=True))


@pytest.mark.parametrize("r", [4, 8, 16, 20])
def test_seam_sums_are_exact_in_blocks_and_at_the_extremes(r, monkeypatch):
    """The pixel pairs across tile seams of shuffled regions (float32 on the CPU for up to 16 px
    and 4+ tiles a side, uint8 differences otherwise) equal int64 sums, for the largest values
    (0/255 checkerboards: every pair 255**2) and when cut into blocks of images."""
    from visualmixer.core import planner
    from visualmixer.core.regions import tile_ladder

    gen = torch.Generator().manual_seed(r)
    board = (torch.arange(r).view(r, 1) + torch.arange(r).view(1, r)) % 2 * 255
    x = torch.cat([torch.randint(0, 256, (5, 3, 3, r, r), generator=gen),
                   board.expand(2, 3, 3, r, r)]).to(torch.uint8)
    w = x.long()
    for t in tile_ladder(r)[1:]:
        expect = ((w[..., t::t] - w[..., t - 1 : r - 1 : t]).square().sum((-2, -1))
                  + (w[..., t::t, :] - w[..., t - 1 : r - 1 : t, :]).square().sum((-2, -1)))
        for block in (1 << 19, 3 * 3 * r * r * 2):  # one pass; blocks of two images
            monkeypatch.setattr(planner, "SUMS_BLOCK_VALUES", block)
            got = planner._seams(x, t)
            assert got.dtype == torch.int32 and torch.equal(got.long(), expect), (r, t, block)


def test_one_pass_and_bisection_agree_on_photos(monkeypatch):
    x = _photos(64, 6)
    for tau in (0.3, 0.5, 0.7):
        fast = vm.obfuscate(x, key=KEY, ids=range(6), target_vfe=tau)
        monkeypatch.setattr(mixer, "_ONE_PASS", False)
        slow = vm.obfuscate(x, key=KEY, ids=range(6), target_vfe=tau)
        monkeypatch.undo()
        assert torch.equal(fast.plans.levels, slow.plans.levels)
        assert torch.equal(fast.images, slow.images)
        assert torch.equal(fast.vfe, slow.vfe)


def test_sync_free_path_gives_the_cpu_path_results(monkeypatch):
    x = _photos(64, 5)
    a = vm.obfuscate(x, key=KEY, ids=range(5), target_vfe=0.6)
    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)
    b = vm.obfuscate(x, key=KEY, ids=range(5), target_vfe=0.6)
    assert torch.equal(a.images, b.images) and torch.equal(a.plans.levels, b.plans.levels)
    assert torch.equal(a.vfe, b.vfe)
    assert torch.equal(vm.restore(b.images, b.plans, key=KEY, ids=range(5)), x)


def test_sync_free_restore_computes_only_the_levels_of_the_plans(monkeypatch):
    """On an accelerator restore reads the plans' levels on the host (they are CPU tensors) and
    computes those ladder levels only: the same bytes, also for levels that are not a run."""

    x = _photos(64, 3)
    res = vm.obfuscate(x, key=KEY, ids=range(3))
    grid = res.plans.grid
    levels = torch.tensor([1, 3], dtype=torch.uint8)[torch.arange(3 * grid.count) % 2].view(3, grid.rows, grid.cols)
    plans = vm.Plans(levels, res.plans.region, 64, 64, 3, True, res.plans.generator)
    words = key_words(KEY.subkeys(range(3), "shuffle"), "cpu")
    shuffled = permute.shuffle_image(x, words, levels.long().view(3, -1), grid, True)
    seen = []
    move = permute._move_image_tiles
    monkeypatch.setattr(permute, "_move_image_tiles", lambda *a, **k: seen.append(a[3]) or move(*a, **k))
    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)
    assert torch.equal(vm.restore(shuffled, plans, key=KEY, ids=range(3)), x)
    assert seen == [1, 3]


# -- no host synchronisation, flat op counts ---------------------------------------------------

_SYNCS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::unique", "aten::_unique", "aten::item",
          "aten::repeat_interleave.Tensor", "aten::masked_select")  # (data-dependent sizes)
#: Host data entering the device: a tensor made from Python numbers (``t[i] = 0``,
#: ``torch.tensor``) is a synchronous copy on a GPU, and ``fill_`` with a host scalar tensor
#: reads it back. Only the subkeys' words may enter (pinned, asynchronous: keyed.key_words).
_HOST_DATA = ("aten::lift_fresh", "aten::fill_.Tensor")
_HOST_DATA_ALLOWED = {"key_words"}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.syncs = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        self.ops += 1
        if any(name.startswith(s) for s in _SYNCS):
            self.syncs.append(name)
        elif name in _HOST_DATA:
            caller = next(f for f in traceback.extract_stack()[::-1] if "visualmixer" in f.filename)
            if caller.name not in _HOST_DATA_ALLOWED:
                self.syncs.append(f"{name} in {caller.name} ({caller.filename.rsplit('/', 1)[-1]}:{caller.lineno})")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("size", [32, 64])
def test_no_host_synchronisation_inside_obfuscate_restore_vfe(size, monkeypatch):
    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)  # the accelerator's path, on the CPU
    x = _photos(size, 4)
    res = vm.obfuscate(x, key=KEY, ids=range(4))
    weights = vm.saliency_weights(x)
    with _Recorder() as rec:
        res = vm.obfuscate(x, key=KEY, ids=range(4))
        vm.obfuscate(x, key=KEY, ids=range(4), saliency=weights)
        vm.restore(res.images, res.plans, key=KEY, ids=range(4))
        vm.vfe(x)
    assert rec.syncs == [], rec.syncs


#: The per-id host work that may grow with the batch: HMAC subkeys and id checks (SPEC §5.6).
_PER_ID = {"_subkeys", "check_ids"}


def _counts(x):
    """Torch operators, and Python-level calls outside the per-id key derivation, of one call."""
    calls, inside = 0, None

    def prof(frame, event, arg):
        nonlocal calls, inside
        if inside is not None:
            if event == "return" and frame is inside:
                inside = None
            return
        if event == "call" and frame.f_code.co_name in _PER_ID:
            inside = frame
        elif event in ("call", "c_call"):
            calls += 1

    n = len(x)
    with _Recorder() as rec:
        sys.setprofile(prof)
        try:
            vm.obfuscate(x, key=KEY, ids=range(n), target_vfe=0.5)
        finally:
            sys.setprofile(None)
    return rec.ops, calls


def test_torch_ops_and_python_calls_per_obfuscate_do_not_grow_with_the_batch(monkeypatch):
    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)
    x = _photos(32, 32)
    _counts(x[:2])  # warm caches
    assert _counts(x[:2]) == _counts(x)


# -- on a GPU (run by scripts/gpu_session.sh; skipped here without one) ------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_generator2_is_bit_identical_on_cuda():
    words = key_words(KEY.subkeys(range(64)), "cpu")
    regions = torch.arange(64) * 7
    for nt in (4, 16, 64, 256, 49):
        cpu = tile_permutations(words, regions, 2, 3, nt)
        gpu = tile_permutations(words.cuda(), regions.cuda(), 2, 3, nt)
        assert torch.equal(cpu, gpu.cpu())
    x = _photos(224, 8)
    a = vm.obfuscate(x, key=KEY, ids=range(8))
    b = vm.obfuscate(x.cuda(), key=KEY, ids=range(8))
    assert torch.equal(a.images, b.images.cpu()) and torch.equal(a.plans.levels, b.plans.levels)
    assert torch.equal(vm.restore(b.images, b.plans, key=KEY, ids=range(8)).cpu(), x)


@cuda
@pytest.mark.parametrize("size", [224, 32])
def test_no_host_synchronisation_on_cuda(size):
    """Everything but the results' documented transfer to the CPU (plans and VFE) runs without
    a synchronisation: planner, restore and vfe under torch.cuda.set_sync_debug_mode("error")."""
    x = _photos(size, 16).cuda()
    res = vm.obfuscate(x, key=KEY, ids=range(16))  # warm up (cuFFT plans, caches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        job = mixer._prepare(x, KEY, list(range(16)), 0.5, None, True, None, None)
        mixer._one_pass_plans(job)
        vm.restore(res.images, res.plans, key=KEY, ids=range(16))
        vm.vfe(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cpu_blocks_only_for_large_batches():
    """The CPU cuts a batch into blocks of images only where its gather index is several blocks
    long (224² at single pixels), and keeps small batches (32², 28²) in one pass."""
    big = torch.zeros(64, 3, 224, 224, dtype=torch.uint8)
    grid = region_grid(224, 224, 16)
    assert 1 <= permute.images_per_block(big, grid, grid.levels) < 16
    assert permute.images_per_block(big, grid, 1) == 64  # 8x8 tiles: 8-byte elements, one pass
    small = torch.zeros(256, 3, 32, 32, dtype=torch.uint8)
    assert permute.images_per_block(small, region_grid(32, 32, 4), 2) == 256
