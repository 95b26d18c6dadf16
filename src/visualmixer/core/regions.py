"""Region grid and tile ladder as index arithmetic.

An image is covered by square regions of side ``R``; edge strips that ``R`` does not divide are
regions too (smaller). A region is cut into tiles of side ``t`` from a ladder ``R, R/2, ..., 1``
(powers of two) or the divisors of ``R`` (other sides). Level 0 is one tile (unchanged), the top
level single pixels. A partial edge region of ``a x b`` pixels uses tiles of
``gcd(t, a) x gcd(t, b)``, so its tiles always cover it exactly.

The geometry is computed once per (image size, region side) and cached; the per-pixel work
happens in :mod:`visualmixer.core.permute` with reshapes and gathers driven by these numbers,
on the region layout made here (:func:`to_regions`: ``(N, regions, C, R, R)``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch
import torch.nn.functional as F

__all__ = ["default_region", "check_region_side", "resolve_region", "tile_ladder", "MAX_LEVELS", "MAX_REGIONS",
           "RegionGrid", "LevelTable", "region_grid", "to_regions", "from_regions", "region_windows",
           "VIEW_DTYPES", "widest_word"]

#: Integer dtype of each byte width (views of tile rows and region rows as wide elements).
VIEW_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

#: The most ladder levels a region side may have for a new obfuscation: permutation generator 2
#: keys a region's rows by the counter ``level * 4 + channel`` below 60 (60 is the channel
#: order), so a 16th level would reuse another permutation's key. Sides up to 256 with more
#: levels (120, 168, 180, 210, 216, 240, 252) are refused; plans made with them still restore.
MAX_LEVELS = 15

#: The most regions an image may have: that counter is an int32, ``region * 64 + lane``.
MAX_REGIONS = 2**25


def widest_word(nbytes: int) -> int:
    """The widest byte width in :data:`VIEW_DTYPES` that divides ``nbytes`` (1, 2, 4 or 8)."""
    return max(g for g in VIEW_DTYPES if nbytes % g == 0)


def default_region(height: int, width: int) -> int:
    """Default region side (and VFE window side) for an image size.

    16 when the shorter side is at least 128 px, 8 when at least 48 px, 4 below.

    Examples
    --------
    >>> default_region(224, 224), default_region(64, 300), default_region(28, 28)
    (16, 8, 4)
    """
    short = min(int(height), int(width))
    if short >= 128:
        return 16
    if short >= 48:
        return 8
    return 4


def check_region_side(region, *, allowed: str = "a positive int") -> int:
    """``region`` as an int if it is a positive integer (also a NumPy one; not a bool), else
    ``ValueError`` saying ``allowed``."""
    try:
        side = None if isinstance(region, bool) else operator.index(region)
    except TypeError:
        side = None
    if side is None or side < 1:
        raise ValueError(f"region must be {allowed}, got {region!r}")
    return side


def resolve_region(region, h: int, w: int) -> int:
    """The region side of an obfuscation of ``h × w`` images: ``region`` (a positive int, at most
    256, whose tile ladder has at most :data:`MAX_LEVELS` levels) or, when ``None``,
    :func:`default_region` of the size, as long as the image has at most :data:`MAX_REGIONS`
    regions; else ``ValueError``."""
    region = default_region(h, w) if region is None else check_region_side(
        region, allowed="a positive int or None (size default)")
    if region > 256:
        raise ValueError(f"region must be at most 256 pixels, got {region}")
    ladder = tile_ladder(region)
    if len(ladder) > MAX_LEVELS:
        raise ValueError(
            f"region {region} has {len(ladder)} shuffle levels (tile sides {ladder}); at most {MAX_LEVELS} "
            f"are allowed: choose a side with fewer divisors, e.g. {1 << round(math.log2(region))}")
    count = -(-h // region) * -(-w // region)
    if count > MAX_REGIONS:
        least = next(r for r in range(region + 1, 257) if -(-h // r) * -(-w // r) <= MAX_REGIONS)
        raise ValueError(f"{h} x {w} images have {count} regions of side {region}; at most {MAX_REGIONS} are "
                         f"allowed (the keyed generator counts regions in 32 bits): use region >= {least}")
    return region


def tile_ladder(region: int) -> list[int]:
    """Tile sides from level 0 (one tile) to the top level (single pixels).

    Examples
    --------
    >>> tile_ladder(16), tile_ladder(14), tile_ladder(1)
    ([16, 8, 4, 2, 1], [14, 7, 2, 1], [1])
    """
    region = check_region_side(region)
    if region & (region - 1) == 0:
        return [region >> i for i in range(region.bit_length())]
    return [d for d in range(region, 0, -1) if region % d == 0]


@dataclass(frozen=True)
class LevelTable:
    """How one region shape is cut into tiles at one ladder level."""

    tile_h: int
    tile_w: int
    ntiles: int


@dataclass(frozen=True)
class RegionGrid:
    """Geometry of the region grid for one image size and region side.

    Attributes
    ----------
    height, width : int
        Image size.
    region : int
        Region side ``R``.
    rows, cols : int
        Regions per column and per row (``ceil(H / R)``, ``ceil(W / R)``).
    levels : int
        Number of the top level (``len(tile_ladder(R)) - 1``).
    kinds : torch.Tensor
        ``(rows * cols,)`` int64 shape kind of each region: 0 full, 1 right edge, 2 bottom edge,
        3 corner.
    kind_sizes : tuple
        ``(a, b)`` pixel size of each kind.
    """

    height: int
    width: int
    region: int
    rows: int
    cols: int
    levels: int
    kinds: torch.Tensor
    kind_sizes: tuple

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def padded(self) -> tuple[int, int]:
        return self.rows * self.region, self.cols * self.region

    @property
    def full(self) -> bool:
        """Whether every region is a whole ``R x R`` one (the region divides both sides)."""
        return self.kind_sizes[0] == self.kind_sizes[3]

    def table(self, kind: int, level: int) -> LevelTable:
        a, b = self.kind_sizes[kind]
        return _level_table(self.region, a, b, level)

    @cached_property
    def lowest_levels(self) -> torch.Tensor | None:
        """``(rows * cols,)`` int64: per region, the lowest level that moves its pixels, where
        that is not level 1 for every region (else ``None``).

        A whole region, or an edge region with one whole side, has two or more tiles from level
        1 on; a corner region ``a x b`` whose sides both divide the level-1 tile (the 8 x 8
        corner of a 200² image with 16-px regions) is one tile there, so its first level with two
        tiles is its lowest. A one-pixel region has none: 1 (nothing can move).
        """
        lowest = [next((lv for lv in range(1, self.levels + 1) if self.table(kind, lv).ntiles >= 2),
                       min(1, self.levels)) for kind in range(4)]
        if max(lowest) <= 1:
            return None
        return torch.tensor(lowest, dtype=torch.int64)[self.kinds]


@lru_cache(maxsize=4096)
def _level_table(region: int, a: int, b: int, level: int) -> LevelTable:
    """Tiles of an ``a x b`` region at one ladder level (level 0: the region is one tile)."""
    if level == 0:
        return LevelTable(a, b, 1)
    t = tile_ladder(region)[level]
    th, tw = math.gcd(t, a), math.gcd(t, b)
    return LevelTable(th, tw, (a // th) * (b // tw))


@lru_cache(maxsize=256)
def region_grid(height: int, width: int, region: int) -> RegionGrid:
    """The (cached) :class:`RegionGrid` for an image size and region side."""
    ladder = tile_ladder(region)
    rows, cols = -(-height // region), -(-width // region)
    a_edge = height - (rows - 1) * region
    b_edge = width - (cols - 1) * region
    r = torch.arange(rows).view(-1, 1)
    c = torch.arange(cols).view(1, -1)
    bottom = (r == rows - 1) & (a_edge < region)
    right = (c == cols - 1) & (b_edge < region)
    kinds = (right.long() + 2 * bottom.long()).reshape(-1)
    kind_sizes = ((region, region), (region, b_edge), (a_edge, region), (a_edge, b_edge))
    return RegionGrid(height, width, region, rows, cols, len(ladder) - 1, kinds, kind_sizes)


def _row_word(r: int, itemsize: int):
    """The integer dtype one region row of ``r`` elements fits in exactly, or ``None``: the
    layout copies below then move one element per region row (32² with 4-px regions: 3.5x
    faster; wider rows copy as fast as they are)."""
    return VIEW_DTYPES.get(r * itemsize) if r * itemsize > 1 else None


def to_regions(images: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, regions, C, R, R)`` (zero-padded to whole regions)."""
    n, c, h, w = images.shape
    r = grid.region
    hp, wp = grid.padded
    x = F.pad(images, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else images
    word = _row_word(r, x.element_size())
    if word is None:
        x = x.view(n, c, grid.rows, r, grid.cols, r).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, grid.count, c, r, r)
    x = x.contiguous().view(torch.uint8).view(word).view(n, c, grid.rows, r, grid.cols)
    regions = x.permute(0, 2, 4, 1, 3).contiguous().view(-1)  # (N, rows, cols, C, R) region rows
    return regions.view(torch.uint8).view(images.dtype).view(n, grid.count, c, r, r)


def from_regions(regions: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """Inverse of :func:`to_regions`, cropped back to ``(N, C, H, W)``."""
    n, _, c, r, _ = regions.shape
    word = _row_word(r, regions.element_size())
    if word is None:
        x = regions.view(n, grid.rows, grid.cols, c, r, r).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(n, c, grid.rows * r, grid.cols * r)
    else:
        x = regions.contiguous().view(torch.uint8).view(word).view(n, grid.rows, grid.cols, c, r)
        x = x.permute(0, 3, 1, 4, 2).contiguous().view(-1)  # (N, C, rows, R, cols) region rows
        x = x.view(torch.uint8).view(regions.dtype).view(n, c, grid.rows * r, grid.cols * r)
    return x[..., : grid.height, : grid.width].contiguous()


def region_windows(regions: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """View ``(N, regions, C, R, R)`` as windows ``(N, C, rows, cols, R, R)`` (no copy)."""
    n, _, c, r, _ = regions.shape
    return regions.view(n, grid.rows, grid.cols, c, r, r).permute(0, 3, 1, 2, 4, 5)
