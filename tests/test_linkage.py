"""A8 linkage / membership: permutations keep each image's and each region's multiset of values."""

import pytest
import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate
from visualmixer.core.mixing import mix, region_sources
from visualmixer.eval.attacks.a8_linkage import _auc, linkage_attack, sorted_profile


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 1, 7, 7), generator=g).float()
    x = torch.nn.functional.interpolate(base, size=(28, 28), mode="bilinear", align_corners=False)
    return (x + torch.randint(0, 30, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def _mixed(x, *, key_seed):
    """64 images mixed in groups of 4 (4 classes): the collages and every region's source."""
    y = torch.arange(64) % 4
    key = Key.from_seed(key_seed)
    m = mix(x, y, key=key, ids=range(64), k=4, target_vfe=0.5)
    return m.images, region_sources(m.groups, key=key, ids=range(64), height=28, width=28)


def test_a_shuffled_image_is_linked_to_its_file_and_membership_is_certain():
    x, out = _images(64, 0), _images(64, 1)
    res = obfuscate(x, key=Key.from_seed(0), ids=range(64), target_vfe=0.7)
    r = linkage_attack(res.images, x, out)
    assert r["link_rate"] == 1.0 and r["link_method"] in ("sorted values", "region votes")
    assert r["membership_auc"] > 0.99
    assert r["region_link_rate"] > 0.9
    assert abs(r["chance"] - 1 / 128) < 1e-12


def test_sorted_profile_ignores_the_order_of_values():
    x = _images(4, 2)
    perm = torch.randperm(28 * 28, generator=torch.Generator().manual_seed(0))
    y = x.flatten(1)[:, perm].reshape_as(x)
    assert torch.equal(sorted_profile(x), sorted_profile(y))


def test_mixed_collages_are_scored_against_their_main_source():
    x, out = _images(64, 3), _images(64, 4)
    collages, src = _mixed(x, key_seed=1)
    r = linkage_attack(collages, x, out, sources=src)
    assert r["region_link_rate"] > 0.9  # regions still point to their source file
    # a collage is not one file, but its regions vote for the files they came from: whoever
    # holds the originals links them (mixing hides content, not membership)
    assert r["link_rates"]["region votes"] > 0.9 > r["link_rates"]["sorted values"]
    # unmixed images scored against the identity sources would look like a perfect link
    wrong = linkage_attack(collages, x, out)
    assert wrong["region_link_rate"] < r["region_link_rate"]


def test_noise_hides_nothing_from_a_pixel_matcher_but_membership_by_region_values_is_weak():
    x, out = _images(64, 5), _images(64, 6)
    g = torch.Generator().manual_seed(0)
    noisy = (x.float() + 20 * torch.randn(x.shape, generator=g)).clamp(0, 255)
    r = linkage_attack(noisy, x, out)
    assert r["link_rate"] > 0.9 and r["link_method"] in ("pixels", "region means")
    # the other way round too: each original's closest noisy image is its own
    assert r["victim_link_rate"] > 0.9 and r["victim_link_method"] in ("pixels", "region means")


def test_auc():
    assert _auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert _auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert _auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5


def test_victim_linkage_finds_the_collages_that_hold_a_piece_of_each_original():
    x, out = _images(64, 7), _images(64, 8)
    collages, src = _mixed(x, key_seed=2)
    r = linkage_attack(collages, x, out, sources=src)
    # every original sits in the 4 collages of its group: chance 4 / 64
    assert abs(r["victim_link_chance"] - 4 / 64) < 1e-9
    assert r["victim_link_rate"] > 0.9
    # a release of other images holds no piece of them: the same matcher finds nothing
    other, _ = _mixed(out, key_seed=2)
    miss = linkage_attack(other, x, out, sources=src)
    assert miss["victim_link_rate"] < 0.3


def test_victim_linkage_trusts_the_region_that_only_one_released_image_matches():
    # every original carries the same textured region at the top left (it matches every release
    # equally well: distance 0) and one region of its own; only the own region tells them apart
    x = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, :4, :4] = torch.arange(16, dtype=torch.uint8).view(4, 4) * 3
    for i in range(8):
        row, col = 4 + 4 * (i // 4), 4 * (i % 4)
        x[i, 0, row : row + 4, col : col + 4] = torch.arange(16, dtype=torch.uint8).view(4, 4) * (i + 1)
    res = obfuscate(x, key=Key.from_seed(3), ids=range(8), target_vfe=0.7)
    r = linkage_attack(res.images, x, torch.zeros_like(x))
    assert r["victim_link_rates"]["surest region"] == 1.0 and abs(r["victim_link_chance"] - 1 / 8) < 1e-12


def test_linkage_takes_the_sources_of_every_region_partial_edge_ones_too():
    # 28 px, region 8: region_sources numbers 4 x 4 regions, region linkage matches the 3 x 3 full ones
    x, out = _images(64, 9), _images(64, 10)
    y, key = torch.arange(64) % 4, Key.from_seed(4)
    m = mix(x, y, key=key, ids=range(64), k=4, target_vfe=0.5, region=8)
    src = region_sources(m.groups, key=key, ids=range(64), height=28, width=28)
    assert src.shape == (64, 16)
    r = linkage_attack(m.images, x, out, sources=src, region=8)
    assert r["region_link_rate"] > 0.9 and r["victim_link_rate"] > 0.9
    # the full regions' columns alone give the same region linkage
    from visualmixer.eval.attacks.a8_linkage import full_region_columns

    cols = full_region_columns(28, 28, 8)
    assert cols.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    full = linkage_attack(m.images, x, out, sources=src[:, cols], region=8)
    assert full["region_link_rate"] == r["region_link_rate"]
    with pytest.raises(ValueError, match="sources must be"):
        linkage_attack(m.images, x, out, sources=src[:, :10], region=8)
