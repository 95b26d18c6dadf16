"""Groups for keyed region mixing (:mod:`visualmixer.core.mixing`): which images of a labelled
set are mixed together, and :class:`MixGroups`, the private record of it (with the key, what
un-mixing needs).

Grouping (:func:`make_groups`):

- ``"random"``: within each class, members are ordered by a keyed hash of their ids and cut
  into consecutive groups of ``k``.
- ``"similar"``: within each class, ordered along the first principal component of the
  region-mean mosaic (look-alike images together), then cut the same way.

Assignment (``balanced``): by default, at every region position the group's regions are dealt to
its collages by a keyed permutation drawn for that position alone, so a collage's main source
holds more than ``1/k`` of its regions (about 20 % at ``k = 8``). Balanced assignment deals so
that every collage holds each member's regions at ``floor(R / v)`` or ``ceil(R / v)`` of the
``R`` positions (``v`` members): no source dominates a collage. Its construction (``design``,
:mod:`visualmixer.core.mixdeal`) is ``"switched"`` (format version 4, the default) or
``"cyclic"`` (one keyed cycle shifted per position; version 3 records, kept so that they
unmix, and no longer recommended: the shared cycle lets an attacker thread the regions).

Remainders: a class of ``n`` images with ``n >= k`` gives ``n // k`` groups, and the last
``n % k`` images join the last group (so every group has at least ``k`` members and at most
``2k - 1``). A class with ``2 <= n < k`` images is one group of ``n``. A class of one image cannot
be mixed: it stays a group of one (its regions are only shuffled inside);
:attr:`MixGroups.unmixed` counts such images. Groups never span classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.core.keys import ImageId, Key, check_key
from visualmixer.core.mixdeal import DESIGNS
from visualmixer.core.regions import resolve_region
from visualmixer.core.validation import check_ids, is_integer_dtype

__all__ = ["BALANCED_VERSION", "DESIGNS", "GROUPINGS", "MIX_VERSION", "SHARE_VERSION", "SWITCHED_VERSION",
           "MixGroups", "check_balanced", "check_design", "check_share", "keyed_word", "make_groups"]

MIX_VERSION = 1
#: The format version a record with ``share < 1`` is written with (releases that cannot honour a
#: share refuse it instead of unmixing wrongly); version 1 records are read with share 1.
SHARE_VERSION = 2
#: The format version a record with the cyclic balanced assignment is written with (earlier
#: releases refuse it); records of this version without a ``design`` are cyclic.
BALANCED_VERSION = 3
#: The format version a record with the switched balanced assignment is written with.
SWITCHED_VERSION = 4
_READABLE = (MIX_VERSION, SHARE_VERSION, BALANCED_VERSION, SWITCHED_VERSION)
GROUPINGS = ("random", "similar")


def _check_integer(name: str, value, least: int, hint: str = "") -> None:
    """``value`` an integer (numpy's too, never a bool) >= ``least``, else a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}{hint}, got {value!r}")


def check_members(labels, ids, k, n: int | None = None) -> tuple[torch.Tensor, list, int]:
    """The checks of a labelled set to group (``make_groups``, ``mix``): ``k`` an integer >= 2,
    integer labels (one per image: ``n``, default their number) and ``n`` distinct ids. Returns
    the labels as a CPU long tensor, the ids as a list and ``k`` as an int."""
    _check_integer("k", k, 2, " (images per group)")
    if labels is None:
        raise ValueError("labels is required: mixing puts images of one class together "
                         "(for an unlabelled set pass one label for all and grouping='similar')")
    labels = torch.as_tensor(labels)
    if not is_integer_dtype(labels.dtype) and labels.numel():
        raise TypeError(f"labels must be integer class labels (groups never span classes), got {labels.dtype}")
    labels = labels.reshape(-1).to("cpu", torch.long)
    n = labels.numel() if n is None else n
    if labels.numel() != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {labels.numel()}")
    ids = check_ids(ids, n)
    if len(set(ids)) != n:
        raise ValueError(f"ids must hold {n} distinct image ids, got {len(set(ids))} distinct")
    return labels, ids, int(k)


def check_share(share, name: str = "share") -> float:
    """``share`` as a float in (0, 1], else a ValueError naming ``name``."""
    ok = isinstance(share, (int, float, np.floating, np.integer)) and not isinstance(share, bool)
    if not ok or not 0.0 < float(share) <= 1.0:  # NaN fails the comparison
        raise ValueError(f"{name} must be a number in (0, 1] (the share of region positions exchanged "
                         f"within a group), got {share!r}")
    return float(share)


def check_balanced(balanced, name: str = "balanced") -> bool:
    """``balanced`` as a bool (True, False or a numpy bool), else a ValueError naming ``name``."""
    if not isinstance(balanced, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {balanced!r}")
    return bool(balanced)


def check_design(design, name: str = "design") -> str:
    """``design`` as one of :data:`DESIGNS`, else a ValueError naming ``name``."""
    if not isinstance(design, str) or design not in DESIGNS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, DESIGNS))} (how balanced groups are dealt), "
                         f"got {design!r}")
    return design


def keyed_word(key: Key, image_id: ImageId, purpose: str) -> int:
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
    balanced : bool
        Balanced assignment (module docstring); False in records made before it existed.
    design : str or None
        How a balanced group is dealt: ``"switched"`` (the default when ``balanced``) or
        ``"cyclic"`` (version 3 records); None when not ``balanced``.
    """

    members: torch.Tensor
    region: int
    k: int
    grouping: str = "random"
    version: int = MIX_VERSION
    share: float = 1.0
    balanced: bool = False
    design: str | None = None

    def __post_init__(self) -> None:
        _check_integer("region", self.region, 1)
        _check_integer("k", self.k, 2)
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        object.__setattr__(self, "share", check_share(self.share))
        object.__setattr__(self, "balanced", check_balanced(self.balanced))
        if self.design is not None:
            check_design(self.design)
            if not self.balanced:
                raise ValueError(f"design={self.design!r} is for balanced groups: pass balanced=True, or leave "
                                 "design out")
        elif self.balanced:
            object.__setattr__(self, "design", "switched")

    def __eq__(self, other) -> bool:  # (the generated one would compare the members tensor's truth value)
        if not isinstance(other, MixGroups):
            return NotImplemented
        return self._fields() == other._fields() and torch.equal(self.members.cpu(), other.members.cpu())

    def __hash__(self) -> int:
        return hash((self._fields(), self.members.cpu().numpy().tobytes()))

    def _fields(self) -> tuple:  # (the version as written: a record equals what it reads back as)
        return (self.region, self.k, self.grouping, self._format_version(), self.share, self.balanced, self.design,
                tuple(self.members.shape))

    def _format_version(self) -> int:
        """The format version :meth:`to_dict` writes: at least what the share and balance need."""
        version = int(self.version)
        if self.share != 1.0:
            version = max(version, SHARE_VERSION)
        if self.balanced:
            version = max(version, SWITCHED_VERSION if self.design == "switched" else BALANCED_VERSION)
        return version

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
        out = {"version": self._format_version(), "region": self.region, "k": self.k, "grouping": self.grouping,
               "groups": rows}
        if self.share != 1.0:  # share 1 records stay what they were (resumes, equality of records)
            out.update(share=self.share)
        if self.balanced:  # likewise: unbalanced records keep their earlier form
            out.update(balanced=True, design=self.design)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MixGroups:
        """Read a :meth:`to_dict` record; ``ValueError`` (one line) for anything else."""
        try:
            return cls._from_dict(data)
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a mix groups record ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_dict(cls, data: dict) -> MixGroups:
        version = int(data.get("version", 0))
        if version not in _READABLE:
            raise ValueError(f"mix groups of format version {version}; this release reads versions "
                             f"{', '.join(map(str, _READABLE))}")
        rows = [list(map(int, r)) for r in data["groups"]]
        width = max((len(r) for r in rows), default=1)
        members = torch.full((len(rows), width), -1, dtype=torch.long)
        for g, r in enumerate(rows):  # bookkeeping of a record, not a per-pixel loop
            members[g, : len(r)] = torch.tensor(r, dtype=torch.long)
        balanced = data.get("balanced", False)
        design = data.get("design")
        if balanced is True and version < SWITCHED_VERSION and design is None:
            design = "cyclic"  # version 3 records never said it
        if balanced is True and version >= SWITCHED_VERSION and "design" not in data:
            raise ValueError(f"mix groups of format version {version} with balanced=true must say their design "
                             f"({', '.join(DESIGNS)}): a damaged record?")
        if version < SWITCHED_VERSION and design == "switched":
            raise ValueError(f"mix groups of format version {version} cannot hold design 'switched' "
                             f"(version {SWITCHED_VERSION}): a damaged record?")
        return cls(members, int(data["region"]), int(data["k"]), str(data["grouping"]), version,
                   float(data.get("share", 1.0)), balanced, design)  # checked: a bool or refused

def _principal_order(images: torch.Tensor, labels: torch.Tensor, region: int) -> torch.Tensor:
    """``(N,)`` float: each image's coordinate on its class's first principal component of the
    region-mean mosaic (the sign fixed so the largest loading is positive)."""
    x = images.to("cpu", torch.float32)
    mosaic = F.avg_pool2d(x, region, ceil_mode=True).flatten(1)
    coord = torch.zeros(x.shape[0], dtype=torch.float32)  # (whatever the caller's default dtype)
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
    balanced: bool = False,
    design: str | None = None,
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
    balanced : bool
        Balanced assignment of the regions to the collages (module docstring).
    design : {"switched", "cyclic"}, optional
        How balanced groups are dealt (default ``"switched"``; ``"cyclic"`` reproduces records of
        format version 3). Only with ``balanced=True``.

    Returns
    -------
    MixGroups
    """
    share = check_share(share)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    check_key(key)
    if images is not None:
        height, width = images.shape[2], images.shape[3]
    if region is None and (height is None or width is None):
        raise ValueError("pass images (or height and width) so the region side can be chosen")
    region = resolve_region(region, height or 1, width or 1)
    labels, ids, k = check_members(labels, ids, k, None if images is None else images.shape[0])
    tiebreak = torch.tensor([keyed_word(key, i, "mix-order") for i in ids], dtype=torch.long)
    if grouping == "similar":
        if images is None:
            raise ValueError("grouping='similar' needs images")
        coord = _principal_order(images, labels, int(region))
        order = torch.from_numpy(_lexsort(labels, coord, tiebreak))
    else:
        order = torch.from_numpy(_lexsort(labels, None, tiebreak))
    groups = _cut_groups(labels, order, k, int(region), grouping)
    if share == 1.0 and not balanced and design is None:
        return groups
    return replace(groups, share=share, balanced=balanced, design=design)  # MixGroups checks design


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
