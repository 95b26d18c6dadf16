"""Keyed region mixing across same-class images (visualmixer.core.mixing)."""

import pytest
import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixing import (
    MixGroups,
    make_groups,
    mix,
    mix_regions,
    region_sources,
    unmix,
    unmix_regions,
)

KEY = Key.from_seed(7)


def _set(n=23, c=1, h=28, w=28, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return x, y, [f"img{i}" for i in range(n)]


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("grouping", ["random", "similar"])
def test_groups_cover_every_image_once_and_never_span_classes(k, grouping):
    x, y, ids = _set(n=26)
    groups = make_groups(y, key=KEY, ids=ids, k=k, grouping=grouping, images=x)
    members = groups.members
    flat = members[members >= 0]
    assert sorted(flat.tolist()) == list(range(26))
    for row in members.tolist():
        row = [i for i in row if i >= 0]
        assert len({int(y[i]) for i in row}) == 1
    sizes = groups.sizes
    # classes of 9, 9, 8 images: every group has at least k members (remainders join the last group)
    assert int(sizes.min()) >= k and int(sizes.max()) <= 2 * k - 1


def test_small_classes_and_singletons():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    ids = list(range(6))
    groups = make_groups(y, key=KEY, ids=ids, k=4, height=28, width=28)
    assert sorted(groups.sizes.tolist()) == [1, 2, 3]
    assert groups.unmixed == 1  # class 1 has one image: it cannot be mixed


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 30, 45)])
def test_exchange_is_an_exact_permutation_of_regions(shape):
    x, y, ids = _set(n=12, c=shape[0], h=shape[1], w=shape[2])
    groups = make_groups(y, key=KEY, ids=ids, k=3, images=x)
    mixed = mix_regions(x, groups, key=KEY, ids=ids)
    assert mixed.shape == x.shape and not torch.equal(mixed, x)
    assert torch.equal(unmix_regions(mixed, groups, key=KEY, ids=ids), x)
    # every collage region comes from the same position of a same-group image
    src = region_sources(groups, key=KEY, ids=ids, height=shape[1], width=shape[2])
    r = groups.region
    for i in (0, 5):
        for reg in (0, src.shape[1] - 1):
            cols = -(-shape[2] // r)
            a, b = divmod(reg, cols)
            j = int(src[i, reg])
            assert int(y[j]) == int(y[i])
            rows_, cols_ = slice(a * r, (a + 1) * r), slice(b * r, (b + 1) * r)
            assert torch.equal(mixed[i, :, rows_, cols_], x[j, :, rows_, cols_])
    # each source region is used exactly once at each position
    for reg in range(src.shape[1]):
        assert sorted(src[:, reg].tolist()) == list(range(12))


def test_mix_then_unmix_restores_exactly_and_depends_on_the_key():
    x, y, ids = _set(n=16, c=3, h=32, w=32)
    res = mix(x, y, key=KEY, ids=ids, k=4, target_vfe=0.5)
    assert res.images.dtype == torch.uint8 and res.images.shape == x.shape
    assert torch.equal(unmix(res.images, res.groups, res.plans, key=KEY, ids=ids), x)
    assert torch.equal(res.sources, region_sources(res.groups, key=KEY, ids=ids, height=32, width=32))
    again = mix(x, y, key=KEY, ids=ids, k=4, target_vfe=0.5)
    assert torch.equal(again.images, res.images)  # deterministic given key and ids
    other = mix(x, y, key=Key.from_seed(8), ids=ids, k=4, target_vfe=0.5)
    assert not torch.equal(other.images, res.images)
    wrong = unmix(res.images, res.groups, res.plans, key=Key.from_seed(8), ids=ids)
    assert not torch.equal(wrong, x)
    assert bool((res.vfe >= 0.5).all())


def test_most_regions_of_a_collage_come_from_other_images():
    x, y, ids = _set(n=40, c=1, h=28, w=28, classes=2)
    groups = make_groups(y, key=KEY, ids=ids, k=4, images=x)
    src = region_sources(groups, key=KEY, ids=ids, height=28, width=28)
    own = (src == torch.arange(40).view(-1, 1)).float().mean()
    assert 0.15 < float(own) < 0.40  # about 1/k of the regions stay with their image


def test_groups_round_trip_through_a_manifest_dict():
    x, y, ids = _set(n=11)
    groups = make_groups(y, key=KEY, ids=ids, k=2, grouping="similar", images=x)
    back = MixGroups.from_dict(groups.to_dict())
    assert torch.equal(back.members, groups.members) and back.region == groups.region
    res = mix(x, y, key=KEY, ids=ids, k=2, groups=back)
    assert torch.equal(unmix(res.images, back, res.plans, key=KEY, ids=ids), x)
    with pytest.raises(ValueError, match="version 9"):
        MixGroups.from_dict({**groups.to_dict(), "version": 9})


def test_similar_grouping_puts_look_alikes_together():
    # two kinds of images in one class: dark and bright; look-alike groups should not mix kinds
    n = 16
    x = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    x[n // 2:] = 200
    x += torch.randint(0, 20, x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.long)
    groups = make_groups(y, key=KEY, ids=range(n), k=4, grouping="similar", images=x)
    for row in groups.members.tolist():
        kinds = {i >= n // 2 for i in row if i >= 0}
        assert len(kinds) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 1}, "k must be an integer >= 2"),
        ({"labels": None}, "labels is required"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, "one entry per image"),
        ({"grouping": "nearest"}, "grouping must be one of"),
        ({"ids": ["a"] * 8}, "distinct image ids"),
    ],
)
def test_clear_errors(kwargs, match):
    x, y, ids = _set(n=8)
    args = {"labels": y, "ids": ids, "k": 2, **kwargs}
    labels = args.pop("labels")
    with pytest.raises(ValueError, match=match):
        mix(x, labels, key=KEY, **args)


def test_damaged_or_foreign_records_are_refused():
    """A record whose members are not each image once, or whose region is not the plans', would
    unmix to garbage (or read uninitialised indices): refused with a message."""
    import dataclasses

    x, y, ids = _set(n=8)
    res = mix(x, y, key=KEY, ids=ids, k=2)
    members = res.groups.members
    for bad in (torch.where(members == 0, torch.full_like(members, 99), members),  # out of range
                torch.where(members == 1, torch.zeros_like(members), members)):  # image 0 twice
        with pytest.raises(ValueError, match="every image index 0..7 exactly once"):
            unmix(res.images, dataclasses.replace(res.groups, members=bad), res.plans, key=KEY, ids=ids)
    with pytest.raises(ValueError, match="groups.region is 7 but plans.region is"):
        unmix(res.images, dataclasses.replace(res.groups, region=7), res.plans, key=KEY, ids=ids)
    assert torch.equal(unmix(res.images, res.groups, res.plans, key=KEY, ids=ids), x)


def test_labels_must_be_integers():
    x, y, ids = _set(n=8)
    with pytest.raises(TypeError, match="labels must be integer class labels"):
        mix(x, y.float() + 0.5, key=KEY, ids=ids, k=2)


def test_global_random_state_untouched():
    x, y, ids = _set(n=8)
    state = torch.get_rng_state()
    mix(x, y, key=KEY, ids=ids, k=2)
    assert torch.equal(state, torch.get_rng_state())
