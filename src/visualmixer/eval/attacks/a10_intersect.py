"""A10 — intersecting several mixed releases of one set (online re-mixing).

Online mixing (``visualmixer train --mix K --mode online``) re-mixes the training set every
epoch: new groups (random grouping) or new exchanges (look-alike grouping), and a new shuffle
inside every region. Whoever sees the batches of several epochs sees several releases of the same
images. Two facts make them add up:

1. **a region is recognisable in every release**: the in-region shuffle only permutes the
   region's values (and channels), so the sorted values of a region — its *fingerprint* — are the
   same in every release (attack A8 uses the same fact for whole images);
2. **a collage puts a region beside its own image's regions more often than beside any other
   image's**: at every position the group's regions are dealt to the group's collages
   independently, so a region's collage holds, at another position, its own image's region with
   probability ``1/k`` in every release, and any one other image's only while the two share a
   group — with random groups, new every epoch, rarely twice.

So the attacker follows each region through the releases (by fingerprint) and, at every other
position, takes the region that stood beside it most often: with random groups and enough
releases this re-assembles every original (with its regions shuffled inside, which is what plain
VisualMixer releases and A3 inverts). With look-alike groups, which stay the same and only
re-deal their regions, every member of the group stands beside it equally often and the
intersection learns nothing beyond the group.

All steps are tensor operations over the whole set (chunks of images, not loops over them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["region_fingerprints", "intersect_releases", "Intersection"]

# Odd 63-bit multipliers of a polynomial hash of the sorted values (wrapping int64 arithmetic).
_HASH_BASE = 0x5851F42D4C957F2D
_HASH_MIX = 0x14057B7EF767814F


def region_fingerprints(images: torch.Tensor, region: int) -> torch.Tensor:
    """``(N, R)`` int64: a hash of the sorted values of every region (all channels), the same
    whatever order the values were shuffled into. Regions are ``region``-sided, row-major over
    the grid of full regions (partial edge regions are left out)."""
    n, c, h, w = images.shape
    rows, cols = h // region, w // region
    x = images[:, :, : rows * region, : cols * region].reshape(n, c, rows, region, cols, region)
    values = x.permute(0, 2, 4, 1, 3, 5).reshape(n, rows * cols, -1).to(torch.int64)
    ordered = values.sort(dim=-1).values
    length = ordered.shape[-1]
    weights = torch.ones(length, dtype=torch.int64)
    for i in range(1, length):  # powers of the base (a loop over the region's values, set up once)
        weights[i] = weights[i - 1] * _HASH_BASE
    return ((ordered + 1) * weights).sum(-1) * _HASH_MIX


def _locate(keys: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Index in ``keys`` (1-D) of every entry of ``wanted`` (equal keys: any one of them)."""
    order = keys.argsort()
    pos = torch.searchsorted(keys[order], wanted.contiguous()).clamp(max=len(keys) - 1)
    return order[pos]


class Intersection(NamedTuple):
    """Result of :func:`intersect_releases`."""

    fingerprints: torch.Tensor
    images: torch.Tensor
    anchor: int
    collages: torch.Tensor  # (N, R): the collage of the first release each chosen region is taken from


def intersect_releases(
    releases: Sequence[torch.Tensor], region: int, *, anchor: int | None = None, chunk: int = 4096
) -> Intersection:
    """Re-assemble the originals of several mixed releases of one set.

    Parameters
    ----------
    releases : sequence of torch.Tensor
        ``E`` releases of the same ``N`` originals, each ``(N, C, H, W)`` (any order of images).
    region : int
        Region side of the mixing.
    anchor : int, optional
        The region position followed through the releases (one region per original there).
        Default: the position whose fingerprints in the first release are most often unique.
    chunk : int
        Images handled at once (memory: ``E * E * chunk * R`` booleans).

    Returns
    -------
    Intersection
        ``fingerprints`` ``(N, R)`` int64: for the image whose anchor region is in collage ``i``
        of the first release, the fingerprint chosen at every position (the one beside it most
        often; ties: the first release's); ``images`` ``(N, C, H', W')``: that re-assembly in
        pixels, every region taken from the first release (``H' x W'``: the grid of full
        regions); ``anchor``: the position followed; ``collages`` ``(N, R)``: the collage of the
        first release each chosen region was taken from.

    Examples
    --------
    >>> import torch, visualmixer as vm
    >>> from visualmixer.core.mixing import mix
    >>> x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    >>> labels = torch.zeros(16, dtype=torch.long)
    >>> key = vm.Key.from_seed(0)
    >>> rel = [mix(x, labels, key=key, ids=[(i, e) for i in range(16)], k=2, region=4).images
    ...        for e in range(6)]
    >>> out = intersect_releases(rel, 4)
    >>> out.fingerprints.shape, out.images.shape
    (torch.Size([16, 4]), torch.Size([16, 1, 8, 8]))
    """
    prints = torch.stack([region_fingerprints(r, region) for r in releases])  # (E, N, R)
    e, n, r = prints.shape
    first = prints[0]
    if anchor is None:
        unique = [len(torch.unique(first[:, p])) for p in range(r)]  # a loop over positions
        anchor = max(range(r), key=unique.__getitem__)
    # where each anchor region of the first release sits in every release
    where = torch.stack([_locate(prints[k, :, anchor], first[:, anchor]) for k in range(e)])  # (E, N)
    relinked = torch.empty(n, r, dtype=torch.int64)
    for start in range(0, n, chunk):  # chunks of images, to bound memory
        cand = prints.gather(1, where[:, start : start + chunk, None].expand(-1, -1, r))  # (E, n', R)
        votes = (cand.unsqueeze(0) == cand.unsqueeze(1)).sum(dim=1)  # (E, n', R): how often each stands there
        best = votes.argmax(dim=0)  # first maximum: the first release's own region on a tie
        relinked[start : start + chunk] = cand.gather(0, best.unsqueeze(0)).squeeze(0)
    # pixels: each chosen region from the first release, where that fingerprint sits at its position
    source = torch.stack([_locate(first[:, p], relinked[:, p]) for p in range(r)], dim=1)  # (N, R)
    c, h, w = releases[0].shape[1:]
    rows, cols = h // region, w // region
    tiles = releases[0][:, :, : rows * region, : cols * region].reshape(n, c, rows, region, cols, region)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n, r, c, region, region)
    picked = tiles[source, torch.arange(r).view(1, r)]  # (N, R, C, region, region)
    images = picked.view(n, rows, cols, c, region, region).permute(0, 3, 1, 4, 2, 5)
    return Intersection(relinked, images.reshape(n, c, rows * region, cols * region), anchor, source)
