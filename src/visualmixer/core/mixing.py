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

Grouping (:func:`make_groups`):

- ``"random"``: within each class, members are ordered by a keyed hash of their ids and cut
  into consecutive groups of ``k``.
- ``"similar"``: within each class, ordered along the first principal component of the
  region-mean mosaic (look-alike images together), then cut the same way.

Remainders: a class of ``n`` images with ``n >= k`` gives ``n // k`` groups, and the last
``n % k`` images join the last group (so every group has at least ``k`` members and at most
``2k - 1``). A class with ``2 <= n < k`` images is one group of ``n``. A class of one image cannot
be mixed: it stays a group of one (its regions are only shuffled inside);
:attr:`MixGroups.unmixed` counts such images. Groups never span classes.

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

from visualmixer.core.keys import ImageId, Key
from visualmixer.core.mixer import Plans, obfuscate, restore
from visualmixer.core.regions import default_region

__all__ = ["GROUPINGS", "MIX_VERSION", "MixGroups", "MixResult", "check_share", "exchanged_positions",
           "make_groups", "mix", "mix_regions", "region_sources", "unmix", "unmix_regions"]

MIX_VERSION = 1
#: The format version a record with ``share < 1`` is written with (releases that cannot honour a
#: share refuse it instead of unmixing wrongly); version 1 records are read with share 1.
SHARE_VERSION = 2
_READABLE = (MIX_VERSION, SHARE_VERSION)
GROUPINGS = ("random", "similar")

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic on every device)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
_SLOT = 0xD1B54A32D192ED03 - (1 << 64)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 words (``>>`` on int64 is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 words (wrapping arithmetic, same bits on CPU and GPU)."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def check_share(share, name: str = "share") -> float:
    """``share`` as a float in (0, 1], else a ValueError naming ``name``."""
    ok = isinstance(share, (int, float, np.floating, np.integer)) and not isinstance(share, bool)
    if not ok or not 0.0 < float(share) <= 1.0:  # NaN fails the comparison
        raise ValueError(f"{name} must be a number in (0, 1] (the share of region positions exchanged "
                         f"within a group), got {share!r}")
    return float(share)


def _word(key: Key, image_id: ImageId, purpose: str) -> int:
    """A signed 64-bit word from the key and an id (HMAC on the host: one per image or group)."""
    return int.from_bytes(key.subkey(image_id, purpose)[:8], "little", signed=True)


@dataclass(frozen=True)
class MixGroups:
    """Which images were mixed together: the private record needed (with the key) to unmix.

    Attributes
    ----------
    members : torch.Tensor
        ``(G, M)`` int64 indices into the set, one row per group; ``-1`` marks an empty slot
        (groups have different sizes). Every image index appears exactly once.
    region : int
        Region side of the exchange (and of the in-region shuffle).
    k : int
        Requested group size.
    grouping : str
        ``"random"`` or ``"similar"``.
    version : int
        Format/generator version, for data made by later releases.
    share : float
        Share of the region positions exchanged in each group, in (0, 1] (module docstring);
        1: every position, as in records made before the share existed.
    """

    members: torch.Tensor
    region: int
    k: int
    grouping: str = "random"
    version: int = MIX_VERSION
    share: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "share", check_share(self.share))

    @property
    def sizes(self) -> torch.Tensor:
        """``(G,)`` members per group."""
        return (self.members >= 0).sum(dim=1)

    @property
    def unmixed(self) -> int:
        """Images in groups of one (classes with a single image): shuffled inside regions only."""
        return int((self.sizes == 1).sum())

    def to_dict(self) -> dict:
        """A JSON-ready dict (for the private manifest); :meth:`from_dict` reads it back."""
        rows = [[int(i) for i in row if i >= 0] for row in self.members.tolist()]
        out = {"version": self.version, "region": self.region, "k": self.k, "grouping": self.grouping,
               "groups": rows}
        if self.share != 1.0:  # share 1 records stay what they were (resumes, equality of records)
            out.update(version=max(int(self.version), SHARE_VERSION), share=self.share)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MixGroups:
        version = int(data.get("version", 0))
        if version not in _READABLE:
            raise ValueError(f"mix groups of format version {version}; this release reads versions "
                             f"{', '.join(map(str, _READABLE))}")
        rows = [list(map(int, r)) for r in data["groups"]]
        width = max((len(r) for r in rows), default=1)
        members = torch.full((len(rows), width), -1, dtype=torch.long)
        for g, r in enumerate(rows):  # bookkeeping of a record, not a per-pixel loop
            members[g, : len(r)] = torch.tensor(r, dtype=torch.long)
        return cls(members, int(data["region"]), int(data["k"]), str(data["grouping"]), version,
                   float(data.get("share", 1.0)))


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


def _check_set(images: torch.Tensor, labels, ids, k: int) -> tuple[torch.Tensor, list]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be an (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    n = images.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (images per group), got {k!r}")
    if labels is None:
        raise ValueError("labels is required: mixing puts images of one class together "
                         "(for an unlabelled set pass one label for all and grouping='similar')")
    labels = torch.as_tensor(labels).reshape(-1).to("cpu", torch.long)
    if labels.numel() != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {labels.numel()}")
    ids = list(ids)
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"ids must hold {n} distinct image ids, got {len(ids)} ({len(set(ids))} distinct)")
    return labels, ids


def _principal_order(images: torch.Tensor, labels: torch.Tensor, region: int) -> torch.Tensor:
    """``(N,)`` float: each image's coordinate on its class's first principal component of the
    region-mean mosaic (the sign fixed so the largest loading is positive)."""
    x = images.to("cpu", torch.float32)
    mosaic = F.avg_pool2d(x, region, ceil_mode=True).flatten(1)
    coord = torch.zeros(x.shape[0])
    for c in torch.unique(labels).tolist():  # a loop over classes, not images
        sel = labels == c
        m = mosaic[sel] - mosaic[sel].mean(dim=0, keepdim=True)
        if m.shape[0] < 2:
            continue
        v = torch.linalg.svd(m, full_matrices=False).Vh[0]
        v = v * torch.sign(v[v.abs().argmax()])
        coord[sel] = m @ v
    return coord


def make_groups(
    labels,
    *,
    key: Key,
    ids: Sequence[ImageId],
    k: int,
    grouping: str = "random",
    images: torch.Tensor | None = None,
    region: int | None = None,
    height: int | None = None,
    width: int | None = None,
    share: float = 1.0,
) -> MixGroups:
    """Put the images of each class in groups of ``k`` (see the module doc for remainders).

    Parameters
    ----------
    labels : array-like
        ``(N,)`` class of each image.
    key : Key
        The owner's key (orders members for ``"random"`` and breaks ties for ``"similar"``).
    ids : sequence
        ``N`` distinct image ids.
    k : int
        Images per group (>= 2).
    grouping : {"random", "similar"}
        How members are chosen within a class.
    images : torch.Tensor, optional
        ``(N, C, H, W)``; needed for ``"similar"`` and to infer the region side.
    region : int, optional
        Region side (default: :func:`visualmixer.default_region` of the image size).
    height, width : int, optional
        Image size when ``images`` is not given.
    share : float
        Share of the region positions exchanged per group, in (0, 1] (module docstring).

    Returns
    -------
    MixGroups
    """
    share = check_share(share)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if images is not None:
        height, width = images.shape[2], images.shape[3]
    if region is None:
        if height is None or width is None:
            raise ValueError("pass images (or height and width) so the region side can be chosen")
        region = default_region(height, width)
    labels = torch.as_tensor(labels).reshape(-1).to("cpu", torch.long)
    ids = list(ids)
    n = labels.numel()
    if len(ids) != n:
        raise ValueError(f"ids must hold one id per label ({n}), got {len(ids)}")
    tiebreak = torch.tensor([_word(key, i, "mix-order") for i in ids], dtype=torch.long)
    if grouping == "similar":
        if images is None:
            raise ValueError("grouping='similar' needs images")
        coord = _principal_order(images, labels, int(region))
        order = torch.from_numpy(_lexsort(labels, coord, tiebreak))
    else:
        order = torch.from_numpy(_lexsort(labels, None, tiebreak))
    groups = _cut_groups(labels, order, k, int(region), grouping)
    return groups if share == 1.0 else MixGroups(groups.members, groups.region, groups.k, groups.grouping,
                                                 share=share)


def _lexsort(labels: torch.Tensor, coord: torch.Tensor | None, tiebreak: torch.Tensor) -> np.ndarray:
    """Order by label, then coordinate (if any), then the keyed tie-break."""
    keys = [tiebreak.numpy()] + ([coord.numpy()] if coord is not None else []) + [labels.numpy()]
    return np.lexsort(keys)


def _cut_groups(labels: torch.Tensor, order: torch.Tensor, k: int, region: int, grouping: str) -> MixGroups:
    """Cut each class's ordered members into groups of ``k``, the remainder joining the last."""
    lab = labels[order]
    n = lab.numel()
    classes, counts = torch.unique_consecutive(lab, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    full = torch.clamp(counts // k, min=1)  # groups per class (a small class is one group)
    first_group = torch.cumsum(full, 0) - full
    cls_idx = torch.repeat_interleave(torch.arange(classes.numel()), counts)
    rank = torch.arange(n) - starts[cls_idx]
    local = torch.minimum(rank // k, full[cls_idx] - 1)
    group = first_group[cls_idx] + local
    slot = rank - local * k
    width = int(slot.max()) + 1 if n else 1
    members = torch.full((int(full.sum()), width), -1, dtype=torch.long)
    members[group, slot] = order
    return MixGroups(members, region, int(k), grouping)


def _slot_permutations(groups: MixGroups, key: Key, ids: Sequence[ImageId], regions: int,
                       device) -> torch.Tensor:
    """``(G, R, M)`` int64: for each group and region position, a keyed permutation of the
    group's valid slots (empty slots sorted last, so they never receive or give a region)."""
    members = groups.members
    ids = list(ids)
    seeds = torch.tensor(
        [_word(key, tuple(ids[i] for i in row if i >= 0), "mix") for row in members.tolist()], dtype=torch.long
    ).to(device)
    g, m = members.shape
    r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions, 1)
    s = torch.arange(m, device=device, dtype=torch.long).view(1, 1, m)
    words = _mix64(seeds.view(g, 1, 1) + r * _GOLDEN + s * _SLOT)
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
        [_word(key, tuple(ids[i] for i in row if i >= 0), "mix-share") for row in members.tolist()],
        dtype=torch.long,
    ).to(device)
    r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions)
    order = torch.argsort(_mix64(seeds.view(g, 1) + r * _GOLDEN), dim=1, stable=True)
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
    ids = list(ids)
    n = images.shape[0]
    if len(ids) != n:
        raise ValueError(f"ids must hold one id per image ({n}), got {len(ids)}")
    if int((groups.members >= 0).sum()) != n:
        raise ValueError(f"groups cover {int((groups.members >= 0).sum())} images but images holds {n}")
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

    Returns
    -------
    MixResult
    """
    labels, ids = _check_set(images, labels, ids, k)
    share = check_share(share)
    if groups is None:
        groups = make_groups(labels, key=key, ids=ids, k=k, grouping=grouping, images=images, region=region,
                             share=share)
    elif share not in (1.0, groups.share):
        raise ValueError(f"share={share} differs from the share of the groups passed ({groups.share}): "
                         "pass groups made with that share, or leave share out")
    ids = _check_groups(images, groups, ids)
    sources = region_sources(groups, key=key, ids=ids, height=images.shape[2], width=images.shape[3],
                             device=images.device)
    collages = _move_regions(images, sources, groups.region)  # mix_regions, keeping the sources
    res = obfuscate(collages, key=key, ids=ids, target_vfe=target_vfe, region=groups.region,
                    channel_order=channel_order)
    return MixResult(res.images, groups, res.plans, res.vfe, sources)


def unmix(images: torch.Tensor, groups: MixGroups, plans: Plans, *, key: Key, ids: Sequence[ImageId]) -> torch.Tensor:
    """Restore the originals of :func:`mix` exactly: undo the in-region shuffle, then the exchange."""
    ids = list(ids)
    return unmix_regions(restore(images, plans, key=key, ids=ids), groups, key=key, ids=ids)
