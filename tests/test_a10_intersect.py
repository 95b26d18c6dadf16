"""A10: intersecting several online-mixing releases (eval.attacks.a10_intersect)."""

import torch

import visualmixer as vm
from visualmixer.core.mixing import mix
from visualmixer.eval.attacks.a10_intersect import intersect_releases, region_fingerprints

KEY = vm.Key.from_seed(10)


def _set(n=64, size=8):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 2


def test_fingerprints_ignore_the_order_inside_a_region():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = x.clone()
    block = y[:, :, :4, 4:].reshape(3, -1)
    y[:, :, :4, 4:] = block[:, torch.randperm(48, generator=g)].view(3, 3, 4, 4)  # values and channels moved
    fx, fy = region_fingerprints(x, 4), region_fingerprints(y, 4)
    assert fx.shape == (3, 4) and torch.equal(fx, fy)
    y[0, 0, 0, 0] ^= 1
    assert not torch.equal(region_fingerprints(y, 4)[0], fx[0])


def _right(releases, x, **kw):
    out = intersect_releases([r.images for r in releases], 4, **kw)
    truth = region_fingerprints(x, 4)[releases[0].sources[:, out.anchor]]
    return float((out.fingerprints == truth).float().mean()), out


def test_random_groups_renewed_every_release_give_the_originals_back():
    x, y = _set()
    rel = [mix(x, y, key=KEY, ids=[(i, e) for i in range(len(x))], k=2, region=4) for e in range(12)]
    one, _ = _right(rel[:1], x)
    many, out = _right(rel, x)
    assert one < 0.8 and many > 0.95
    # the pixels: where every region is right, the original's regions, each shuffled inside
    source = rel[0].sources[:, out.anchor]
    whole = (out.fingerprints == region_fingerprints(x, 4)[source]).all(dim=1)
    assert whole.any()
    assert torch.equal(region_fingerprints(out.images[whole], 4), region_fingerprints(x[source[whole]], 4))


def test_fixed_look_alike_groups_give_nothing_more():
    x, y = _set()
    rel = [mix(x, y, key=KEY, ids=[(i, e) for i in range(len(x))], k=2, region=4, grouping="similar")
           for e in range(12)]
    one, _ = _right(rel[:1], x)
    many, _ = _right(rel, x)
    assert many < one + 0.1
