import numpy as np
import pytest
import torch

import visualmixer as vm
from visualmixer.core.permute import random_words, shuffle_regions, sort_permutations, words_needed
from visualmixer.core.regions import from_regions, region_grid, to_regions
from visualmixer.data.datasets import FASHION_MNIST_DIR


def test_sort_permutations_are_permutations_and_never_identity():
    rng = np.random.default_rng(0)
    keys = rng.integers(-(2**31), 2**31 - 1, size=(500, 3, 16), dtype=np.int64).astype(np.int32)
    keys[0, 0] = np.arange(16)  # would sort to the identity
    perm = sort_permutations(keys)
    assert np.array_equal(np.sort(perm, axis=-1), np.broadcast_to(np.arange(16), perm.shape))
    assert not (perm == np.arange(16)).all(axis=-1).any()


def test_sort_permutations_are_tie_free():
    keys = np.zeros((4, 8), dtype=np.int32)  # all equal: the slot index decides, for any sort
    assert np.array_equal(sort_permutations(keys)[:, 0], np.full(4, 7))  # identity rotated by one


def test_random_words_depend_only_on_the_subkey():
    key = vm.Key.from_seed(1)
    a = random_words([key.subkey(1), key.subkey(2)], 100)
    b = random_words([key.subkey(2)], 40)
    assert a.dtype == np.int32 and a.shape == (2, 100)
    assert np.array_equal(a[1, :40], b[0])  # prefix property: coarse levels read a prefix
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize(
    "h, w, region, levels",
    [(28, 28, 14, (1, 2)), (28, 28, 14, (1, 3)), (24, 36, 12, (1, 2, 3)), (32, 32, 8, (0, 3)), (30, 45, 8, (1, 3))],
)
def test_mixed_levels_invert_exactly(h, w, region, levels):
    """Mixed levels in one call, including non-nested divisor ladders (14 -> 7, 2, 1)."""
    grid = region_grid(h, w, region)
    x = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    key = vm.Key.from_seed(0)
    words = random_words(key.subkeys(range(3)), words_needed(grid, 3))
    lv = torch.tensor(levels).repeat(grid.count * 3)[: 3 * grid.count].view(3, grid.count)
    regions = to_regions(x, grid)
    out = shuffle_regions(regions, words, lv, grid, True)
    assert not torch.equal(out, regions)
    back = shuffle_regions(out, words, lv, grid, True, inverse=True)
    assert torch.equal(from_regions(back, grid), x)
    # the same region at the same level gets the same content whatever its neighbours' levels
    uniform = shuffle_regions(regions, words, torch.full_like(lv, levels[-1]), grid, True)
    at_top = lv == levels[-1]
    assert torch.equal(out[at_top], uniform[at_top])


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_with_region_14():
    from visualmixer.data.datasets import load_fashion_mnist

    x = load_fashion_mnist("test").images[:200]  # installed: a loader that cannot find it fails
    key = vm.Key.from_seed(3)
    res = vm.obfuscate(x, key=key, ids=range(200), target_vfe=0.5, region=14)
    assert torch.equal(vm.restore(res.images, res.plans, key=key, ids=range(200)), x)


def test_channel_orders_are_uniform_over_all_permutations():
    # channel orders must not leak: the identity occurs and no order is favoured (the earlier
    # sampler never kept the identity and drew its rotation twice as often; attack A5 used that)
    img = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    key = vm.Key.from_seed(11)
    plain = vm.obfuscate(img, key=key, ids=list(range(64)), channel_order=False, target_vfe=0.5).images
    mixed = vm.obfuscate(img, key=key, ids=list(range(64)), channel_order=True, target_vfe=0.5).images
    r = 4  # 32-px images use 4-px regions
    a = plain.double().reshape(64, 3, 8, r, 8, r).sum(dim=(3, 5))  # per-region channel sums
    b = mixed.double().reshape(64, 3, 8, r, 8, r).sum(dim=(3, 5))
    # which source channel landed in each output channel (sums are distinct for random images)
    order = (b.unsqueeze(2) == a.unsqueeze(1)).double().argmax(dim=2).permute(0, 2, 3, 1).reshape(-1, 3)
    sums = a.permute(0, 2, 3, 1).reshape(-1, 3)
    distinct = (sums[:, 0] != sums[:, 1]) & (sums[:, 1] != sums[:, 2]) & (sums[:, 0] != sums[:, 2])
    codes = (order[:, 0] * 3 + order[:, 1])[distinct]
    counts = torch.bincount(codes.long(), minlength=9)[[1, 2, 3, 5, 6, 7]]  # the 6 permutations
    n = counts.sum().item()
    assert n == int(distinct.sum()) > 4000  # every region with distinct sums decoded to a permutation
    expected = n / 6
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 20.5, counts  # 5 dof, p ~ 0.001; the old sampler gives identity 0: chi2 ~ 1360


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32])
@pytest.mark.parametrize("h, w, region", [(32, 32, 4), (30, 27, 4), (4, 4, 4), (4, 12, 4), (9, 2, 2), (64, 40, 8),
                                          (17, 9, 2), (8, 8, 1), (48, 48, 16)])
def test_region_layout_matches_its_definition(dtype, h, w, region):
    """to_regions / from_regions (rows of 2-8 bytes moved as one integer, single-row and
    single-column grids included) equal the plain view-and-permute definition."""
    g = torch.Generator().manual_seed(h * w)
    x = (torch.rand(2, 3, h, w, generator=g) * 255).to(dtype)
    grid = region_grid(h, w, region)
    hp, wp = grid.padded
    padded = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h))
    want = padded.view(2, 3, grid.rows, region, grid.cols, region).permute(0, 2, 4, 1, 3, 5)
    regions = to_regions(x, grid)
    assert regions.dtype == dtype and torch.equal(regions, want.reshape(2, grid.count, 3, region, region))
    assert torch.equal(from_regions(regions, grid), x)
    assert torch.equal(from_regions(regions.transpose(0, 1).contiguous().transpose(0, 1), grid), x)  # strided input
