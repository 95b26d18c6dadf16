"""Saliency weights made once and reused (core.weighting), and the online dataset's cache of
them (data.weightcache): the same bytes as computing the saliency in every call."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import visualmixer as vm
from visualmixer.core import keyed
from visualmixer.data import ObfuscatedDataset
from visualmixer.data.samples import builtin_photos

KEY = vm.Key.from_seed(11)


def _photos(size: int, n: int) -> torch.Tensor:
    _, x = builtin_photos(size)
    return x.repeat(-(-n // len(x)), 1, 1, 1)[:n].contiguous()


def _same(a, b) -> bool:
    return (torch.equal(a.images, b.images) and torch.equal(a.plans.levels, b.plans.levels)
            and torch.equal(a.vfe, b.vfe))


@pytest.mark.parametrize(("size", "grey", "region", "saliency"), [
    (28, True, None, None),  # one-pass planner
    (32, False, 2, None),  # regions smaller than the VFE windows: the bisection search
    (64, False, None, "uniform"),
])
def test_weights_made_beforehand_give_the_same_bytes(size, grey, region, saliency):
    x = _photos(size, 6)
    x = x[:, :1].contiguous() if grey else x
    w = vm.saliency_weights(x, region=region, saliency=saliency)
    want = vm.obfuscate(x, key=KEY, ids=range(6), region=region, saliency=saliency)
    assert _same(vm.obfuscate(x, key=KEY, ids=range(6), region=region, saliency=w), want)
    # rows of them go with the same rows of images
    rows = [4, 1, 1]
    got = vm.obfuscate(x[rows], key=KEY, ids=[7, 8, 9], region=region, saliency=w[rows])
    assert _same(got, vm.obfuscate(x[rows], key=KEY, ids=[7, 8, 9], region=region, saliency=saliency))


def test_the_weights_are_what_the_call_uses():
    """Another image's weights change the plan (so the tests above could fail)."""
    x = _photos(32, 8)
    w = vm.saliency_weights(x)
    other = w[[3, 0, 1, 2, 7, 4, 5, 6]]
    a = vm.obfuscate(x, key=KEY, ids=range(8), saliency=w)
    b = vm.obfuscate(x, key=KEY, ids=range(8), saliency=other)
    assert not torch.equal(a.vfe, b.vfe)


def test_weights_on_the_sync_free_path_and_in_parts(monkeypatch):
    x = _photos(64, 8)
    w = vm.saliency_weights(x)
    want = vm.obfuscate(x, key=KEY, ids=range(8))
    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)
    assert _same(vm.obfuscate(x, key=KEY, ids=range(8), saliency=w), want)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # batch cut into parts, the weights with them
    big = _photos(224, 4)
    try:
        assert _same(vm.obfuscate(big, key=KEY, ids=range(4), saliency=vm.saliency_weights(big)),
                     vm.obfuscate(big, key=KEY, ids=range(4)))
    finally:
        torch.set_num_threads(threads)


def test_weights_that_do_not_belong_to_the_images_are_refused():
    x = _photos(32, 4)
    w = vm.saliency_weights(x)
    with pytest.raises(ValueError, match=r"saliency: SaliencyWeights for 4 images .* given with 3 images"):
        vm.obfuscate(x[:3], key=KEY, ids=range(3), saliency=w)
    with pytest.raises(ValueError, match="region 4, given with 4 images of 32x32 and region 2"):
        vm.obfuscate(x, key=KEY, ids=range(4), region=2, saliency=w)
    with pytest.raises(ValueError, match="of 32x32 .* images of 64x64"):
        vm.obfuscate(_photos(64, 4), key=KEY, ids=range(4), saliency=w)
    with pytest.raises(ValueError, match=r"weights must be \(N, 8, 8\) float64"):
        vm.SaliencyWeights(w.weights.float(), w.salient, 4, 32, 32)
    with pytest.raises(TypeError, match="already SaliencyWeights"):
        vm.saliency_weights(x, saliency=w)


def _set(n: int = 90, size: int = 28):
    x = _photos(size, n)[:, :1].contiguous()
    x = (x.int() + torch.arange(n).view(-1, 1, 1, 1)).clamp(0, 255).to(torch.uint8)  # all different
    return TensorDataset(x, torch.arange(n))


def test_online_dataset_caches_the_weights_and_gives_the_same_batches():
    base = _set()
    cached = ObfuscatedDataset(base, KEY, 0.5, "online")
    plain = ObfuscatedDataset(base, KEY, 0.5, "online", cache_saliency=False)
    assert cached._weights is not None and plain._weights is None
    for epoch in range(3):
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        for rows in ([5, 7, 9], list(range(0, 90, 2)), [7, 5, 3]):
            assert all(torch.equal(a, b) for a, b in zip(cached.batch(rows), plain.batch(rows), strict=True))
    assert int(cached._weights.filled.sum()) == 49  # each row seen once (45 even, 3, 5, 7, 9)
    # the per-sample path gives the same images too
    assert torch.equal(cached[3][0], plain[3][0])


def test_dataloader_workers_fill_one_cache():
    base = _set(60)
    ds = ObfuscatedDataset(base, KEY, 0.5, "online")
    loader = DataLoader(ds, batch_size=20, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([b[0] for b in loader])
    assert int(ds._weights.filled.sum()) == 60  # written by the workers, seen here
    want = ObfuscatedDataset(base, KEY, 0.5, "online", cache_saliency=False).batch(list(range(60)))[0]
    assert torch.equal(got, want)


def test_cache_defaults_and_errors():
    base = _set(10)
    assert ObfuscatedDataset(base, KEY, 0.5, "offline")._weights is None  # one obfuscation per id
    assert ObfuscatedDataset(base, KEY, 0.5, "online", saliency=lambda x: x.float())._weights is None
    listed = [(base.tensors[0][i], i) for i in range(10)]
    assert ObfuscatedDataset(listed, KEY, 0.5, "online")._weights is None
    with pytest.raises(ValueError, match="cache_saliency=True needs a TensorDataset"):
        ObfuscatedDataset(listed, KEY, 0.5, "online", cache_saliency=True)
    with pytest.raises(TypeError, match="cache_saliency: expected a bool"):
        ObfuscatedDataset(base, KEY, 0.5, "online", cache_saliency="yes")
    # explicitly on in offline mode, with the region given
    ds = ObfuscatedDataset(base, KEY, 0.5, "offline", region=2, cache_saliency=True)
    assert torch.equal(ds.batch([1, 2])[0], ObfuscatedDataset(base, KEY, 0.5, "offline", region=2).batch([1, 2])[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cached_weights_on_cuda_give_the_cpu_bytes():
    """On a GPU the cache stays on the device and the calls run as CUDA graphs (the second call
    of a shape is captured): the same batches as the CPU without a cache, epoch after epoch."""
    base = _set(64)
    gpu = ObfuscatedDataset(TensorDataset(*(t.cuda() for t in base.tensors)), KEY, 0.5, "online")
    cpu = ObfuscatedDataset(base, KEY, 0.5, "online", cache_saliency=False)
    assert gpu._weights.weights.is_cuda
    for epoch in range(3):
        gpu.set_epoch(epoch)
        cpu.set_epoch(epoch)
        for rows in (list(range(32)), list(range(32, 64))):
            assert torch.equal(gpu.batch(rows)[0].cpu(), cpu.batch(rows)[0])
