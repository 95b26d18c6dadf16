"""Keyed region mixing across images of one class ("mix"), and its exact inverse.

The owner protects a labelled set as a whole. Images of one class are put in groups of ``k``;
at every region position the group's regions are permuted among its members by the key, so
each released image is a collage of regions of ``k`` same-class images, every region at its own
place. Nothing is lost: each member's region ``r`` appears exactly once, in one of the group's
collages, at position ``r`` — the key holder undoes the exchange exactly. :func:`mix` then shuffles
inside every region as :func:`visualmixer.obfuscate` does (VFE-targeted), and :func:`unmix`
undoes both.

Share (``share`` in (0, 1], default 1): only a keyed share of the region positions is exchanged.
In each group exactly ``max(1, floor(share * R + 1/2))`` of the ``R`` region positions are
exchanged (capped at ``R``), chosen by a keyed permutation of the positions per group (the first
ones in the order of a keyed word per position); at every other position each member keeps its
own region (an identity exchange). Which positions are exchanged depends only on the key, the
group's member ids and ``R``, so the key holder recomputes them and undoes the exchange exactly,
as for ``share=1``. ``share=1`` exchanges every position and gives the same bytes as releases
made before the share existed; a record without a share reads as 1.

Grouping and remainders: :mod:`visualmixer.core.mixgroups` (:func:`make_groups`, re-exported here).

Test and inference images are protected one by one with :func:`visualmixer.obfuscate`.

Examples
--------
>>> import torch
>>> from visualmixer.core.keys import Key
>>> x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
>>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
>>> key = Key.from_seed(0)
>>> res = mix(x, y, key=key, ids=range(8), k=2, target_vfe=0.5)
>>> bool(torch.equal(unmix(res.images, res.groups, res.plans, key=key, ids=range(8)), x))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.core.keys import ImageId, Key, check_key
from visualmixer.core.mixdeal import GOLDEN, SLOT, cyclic_deal, mix64, switched_deal
from visualmixer.core.mixer import Plans, obfuscate, restore
from visualmixer.core.mixgroups import (
    DESIGNS,
    GROUPINGS,
    MIX_VERSION,
    MixGroups,
    check_balanced,
    check_design,
    check_members,
    check_share,
    keyed_word,
    make_groups,
)
from visualmixer.core.validation import check_ids, check_images_tensor

__all__ = ["DESIGNS", "GROUPINGS", "MIX_VERSION", "MixGroups", "MixResult", "check_balanced", "check_design",
           "check_share", "exchanged_positions", "make_groups", "mix", "mix_regions", "region_sources", "unmix",
           "unmix_regions"]


@dataclass
class MixResult:
    """Output of :func:`mix`.

    Attributes
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` uint8 collages, region-shuffled inside.
    groups : MixGroups
        Group membership (private: keep it with the key).
    plans : Plans
        In-region shuffle plans of the collages (private).
    vfe : torch.Tensor
        ``(N,)`` achieved VFE of each released image.
    sources : torch.Tensor
        ``(N, R)`` which original each region of each collage came from
        (:func:`region_sources`; private, like ``groups``).
    """

    images: torch.Tensor
    groups: MixGroups
    plans: Plans
    vfe: torch.Tensor
    sources: torch.Tensor


def _check_tensor(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be an (N, C, H, W) torch.Tensor, got {type(images).__name__}")


def _check_set(images: torch.Tensor, labels, ids, k: int) -> tuple[torch.Tensor, list, int]:
    _check_tensor(images)
    check_images_tensor(images)
    return check_members(labels, ids, k, images.shape[0])


def _slot_permutations(groups: MixGroups, key: Key, ids: Sequence[ImageId], regions: int,
                       device) -> torch.Tensor:
    """``(G, R, M)`` int64: for each group and region position, a keyed permutation of the
    group's valid slots (empty slots stay in place, so they never receive or give a region):
    ``perm[g, r, s]`` is the slot whose region collage ``s`` takes at position ``r``."""
    members = groups.members
    ids = list(ids)
    seeds = torch.tensor(
        [keyed_word(key, tuple(ids[i] for i in row if i >= 0), "mix") for row in members.tolist()], dtype=torch.long
    ).to(device)
    g, m = members.shape
    s = torch.arange(m, device=device, dtype=torch.long).view(1, 1, m)
    if groups.balanced:
        deal = cyclic_deal if groups.design == "cyclic" else switched_deal
        perm = deal(seeds, (members >= 0).to(device), regions)
    else:  # an independent keyed permutation per position: sort a keyed word per slot
        r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions, 1)
        words = mix64(seeds.view(g, 1, 1) + r * GOLDEN + s * SLOT)
        empty = (members < 0).to(device).view(g, 1, m)
        words = torch.where(empty, torch.iinfo(torch.long).max, words)
        perm = torch.argsort(words, dim=2, stable=True)
    if groups.share == 1.0:
        return perm
    moved = exchanged_positions(groups, key=key, ids=ids, regions=regions, device=device)  # (G, R)
    return torch.where(moved.view(g, regions, 1), perm, s)  # identity exchange elsewhere


def exchanged_positions(groups: MixGroups, *, key: Key, ids: Sequence[ImageId], regions: int,
                        device="cpu") -> torch.Tensor:
    """``(G, R)`` bool: the region positions whose regions are exchanged in each group.

    Exactly ``max(1, floor(share * R + 1/2))`` positions per group (all ``R`` for ``share=1``):
    the first ones in the order of a keyed word per position, drawn from the key and the group's
    member ids (purpose ``"mix-share"``, independent of the exchange itself).
    """
    members = groups.members
    g = members.shape[0]
    count = min(regions, max(1, int(np.floor(groups.share * regions + 0.5))))
    if count >= regions:
        return torch.ones(g, regions, dtype=torch.bool, device=device)
    ids = list(ids)
    seeds = torch.tensor(
        [keyed_word(key, tuple(ids[i] for i in row if i >= 0), "mix-share") for row in members.tolist()],
        dtype=torch.long,
    ).to(device)
    r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions)
    order = torch.argsort(mix64(seeds.view(g, 1) + r * GOLDEN), dim=1, stable=True)
    moved = torch.zeros(g, regions, dtype=torch.bool, device=device)
    return moved.scatter_(1, order[:, :count], True)


def region_sources(groups: MixGroups, *, key: Key, ids: Sequence[ImageId], height: int, width: int,
                   device="cpu") -> torch.Tensor:
    """``(N, R)`` int64: which original image each region of each collage comes from.

    ``R`` counts regions row-major over the grid ``ceil(H / region) x ceil(W / region)``.
    The collage's *main source* is the most frequent entry of its row.
    """
    region = groups.region
    regions = (-(-height // region)) * (-(-width // region))
    members = groups.members.to(device)
    g, m = members.shape
    perm = _slot_permutations(groups, key, ids, regions, device)  # (G, R, M)
    src = members.view(g, 1, m).expand(g, regions, m).gather(2, perm)  # (G, R, M): source of slot's region
    n = len(list(ids))
    flat = members.reshape(-1)
    dest = torch.where(flat < 0, n, flat)  # empty slots write into a dropped extra row
    out = torch.empty(n + 1, regions, dtype=torch.long, device=device)
    out[dest] = src.permute(0, 2, 1).reshape(g * m, regions)
    return out[:n]


def _as_regions(images: torch.Tensor, region: int) -> tuple[torch.Tensor, tuple]:
    n, c, h, w = images.shape
    rows, cols = -(-h // region), -(-w // region)
    x = F.pad(images, (0, cols * region - w, 0, rows * region - h))
    x = x.reshape(n, c, rows, region, cols, region).permute(0, 2, 4, 1, 3, 5).reshape(n, rows * cols, -1)
    return x, (n, c, h, w, rows, cols)


def _from_regions(x: torch.Tensor, shape: tuple, region: int) -> torch.Tensor:
    n, c, h, w, rows, cols = shape
    x = x.reshape(n, rows, cols, c, region, region).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, rows * region, cols * region)[:, :, :h, :w].contiguous()


def _move_regions(images: torch.Tensor, src: torch.Tensor, region: int) -> torch.Tensor:
    """Region ``r`` of output ``i`` is region ``r`` of ``images[src[i, r]]``."""
    x, shape = _as_regions(images, region)
    r = torch.arange(x.shape[1], device=x.device).view(1, -1)
    return _from_regions(x[src, r], shape, region)


def _check_groups(images: torch.Tensor, groups: MixGroups, ids) -> list:
    if not isinstance(groups, MixGroups):
        raise TypeError(f"groups must be MixGroups, got {type(groups).__name__}")
    n = images.shape[0]
    ids = check_ids(ids, n)
    if int((groups.members >= 0).sum()) != n:
        raise ValueError(f"groups cover {int((groups.members >= 0).sum())} images but images holds {n}")
    members = groups.members[groups.members >= 0].to("cpu")
    if not torch.equal(torch.sort(members).values, torch.arange(n, dtype=members.dtype)):
        raise ValueError(f"groups.members must hold every image index 0..{n - 1} exactly once (a damaged or "
                         "foreign record?)")
    return ids


def mix_regions(images: torch.Tensor, groups: MixGroups, *, key: Key, ids: Sequence[ImageId]) -> torch.Tensor:
    """Exchange regions among the members of each group (no in-region shuffle).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` any dtype, any device.
    groups : MixGroups
        From :func:`make_groups`.
    key : Key
    ids : sequence
        ``N`` image ids, as given to :func:`make_groups`.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)`` collages: a permutation of the set's regions, each at its own position.
    """
    ids = _check_groups(images, groups, ids)
    src = region_sources(groups, key=key, ids=ids, height=images.shape[2], width=images.shape[3],
                         device=images.device)
    return _move_regions(images, src, groups.region)


def unmix_regions(images: torch.Tensor, groups: MixGroups, *, key: Key, ids: Sequence[ImageId]) -> torch.Tensor:
    """The exact inverse of :func:`mix_regions`."""
    ids = _check_groups(images, groups, ids)
    src = region_sources(groups, key=key, ids=ids, height=images.shape[2], width=images.shape[3],
                         device=images.device)
    # the collage that received region r of image j: inv[src[i, r], r] = i
    n = images.shape[0]
    inv = torch.empty_like(src).scatter_(0, src, torch.arange(n, device=src.device).view(-1, 1).expand_as(src))
    return _move_regions(images, inv, groups.region)


def mix(
    images: torch.Tensor,
    labels,
    *,
    key: Key,
    ids: Sequence[ImageId],
    k: int = 4,
    target_vfe: float = 0.5,
    grouping: str = "random",
    region: int | None = None,
    channel_order: bool = True,
    groups: MixGroups | None = None,
    share: float = 1.0,
    balanced: bool = False,
    design: str | None = None,
) -> MixResult:
    """Protect a labelled set: mix regions within same-class groups of ``k``, then shuffle
    inside every region to reach ``target_vfe``.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` uint8.
    labels : array-like
        ``(N,)`` classes; groups never span classes.
    key : Key
        The owner's key.
    ids : sequence
        ``N`` distinct image ids (their order is the order of ``images``).
    k : int
        Images per group (>= 2).
    target_vfe : float
        Target VFE of the in-region shuffle (see :func:`visualmixer.obfuscate`).
    grouping : {"random", "similar"}
        Member choice within a class (see :func:`make_groups`).
    region : int, optional
        Region side of both the exchange and the in-region shuffle.
    channel_order : bool
        Shuffle the channel order of each region (as :func:`visualmixer.obfuscate`).
    groups : MixGroups, optional
        Reuse a grouping (e.g. read from a manifest) instead of making one; its recorded share is
        used (``share`` must then be 1 or that share).
    share : float
        Share of the region positions exchanged in each group, in (0, 1] (default 1: every
        position); at the others each image keeps its own region (module docstring).
    balanced : bool
        Deal each group's regions so that every collage holds each member's regions at the same
        number of positions (:mod:`visualmixer.core.mixgroups`); default False (a keyed
        permutation per position). With ``groups`` given, their recorded assignment is used.
    design : {"switched", "cyclic"}, optional
        How balanced groups are dealt (:mod:`visualmixer.core.mixdeal`; default ``"switched"``;
        ``"cyclic"`` only to reproduce releases of format version 3). Only with ``balanced=True``.

    Returns
    -------
    MixResult
    """
    check_key(key)
    labels, ids, k = _check_set(images, labels, ids, k)
    share = check_share(share)
    balanced = check_balanced(balanced)
    if design is not None:
        check_design(design)
    if groups is None:
        groups = make_groups(labels, key=key, ids=ids, k=k, grouping=grouping, images=images, region=region,
                             share=share, balanced=balanced, design=design)
    elif share not in (1.0, groups.share):
        raise ValueError(f"share={share} differs from the share of the groups passed ({groups.share}): "
                         "pass groups made with that share, or leave share out")
    elif balanced and not groups.balanced:
        raise ValueError("balanced=True but the groups passed were made without it: pass groups made with "
                         "balanced=True, or leave balanced out")
    elif design is not None and design != groups.design:
        raise ValueError(f"design={design!r} differs from the design of the groups passed ({groups.design!r}): "
                         "pass groups made with it, or leave design out")
    ids = _check_groups(images, groups, ids)
    sources = region_sources(groups, key=key, ids=ids, height=images.shape[2], width=images.shape[3],
                             device=images.device)
    collages = _move_regions(images, sources, groups.region)  # mix_regions, keeping the sources
    res = obfuscate(collages, key=key, ids=ids, target_vfe=target_vfe, region=groups.region,
                    channel_order=channel_order)
    return MixResult(res.images, groups, res.plans, res.vfe, sources)


def unmix(images: torch.Tensor, groups: MixGroups, plans: Plans, *, key: Key, ids: Sequence[ImageId]) -> torch.Tensor:
    """Restore the originals of :func:`mix` exactly: undo the in-region shuffle, then the exchange."""
    _check_tensor(images)
    check_images_tensor(images)
    ids = check_ids(ids, images.shape[0])
    if isinstance(groups, MixGroups) and isinstance(plans, Plans) and groups.region != plans.region:
        raise ValueError(f"groups.region is {groups.region} but plans.region is {plans.region}: the mixing record "
                         "and the plans come from different runs")
    return unmix_regions(restore(images, plans, key=key, ids=ids), groups, key=key, ids=ids)
