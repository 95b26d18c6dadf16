"""Region grid and tile ladder as index arithmetic (SPEC §5.1–5.2).

An image is covered by square regions of side ``R``; edge strips that ``R`` does not divide are
regions too (smaller). A region is cut into tiles of side ``t`` from a ladder ``R, R/2, ..., 1``
(powers of two) or the divisors of ``R`` (other sides). Level 0 is one tile (unchanged), the top
level single pixels. A partial edge region of ``a x b`` pixels uses tiles of
``gcd(t, a) x gcd(t, b)``, so its tiles always cover it exactly.

Everything here is computed once per (image size, region side) and cached; the per-pixel work
happens in :mod:`visualmixer.permute` with gathers over these tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["default_region", "tile_ladder", "RegionGrid", "region_grid"]


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


def tile_ladder(region: int) -> list[int]:
    """Tile sides from level 0 (one tile) to the top level (single pixels).

    Examples
    --------
    >>> tile_ladder(16), tile_ladder(14), tile_ladder(1)
    ([16, 8, 4, 2, 1], [14, 7, 2, 1], [1])
    """
    if not isinstance(region, int) or isinstance(region, bool) or region < 1:
        raise ValueError(f"region must be a positive int, got {region!r}")
    if region & (region - 1) == 0:
        return [region >> i for i in range(region.bit_length())]
    return [d for d in range(region, 0, -1) if region % d == 0]


@dataclass(frozen=True)
class _LevelTable:
    """Where each pixel of one region shape sits in its tile, at one level (R*R frame, flat)."""

    ntiles: int
    tile_of: torch.Tensor  # (R*R,) tile slot of each frame pixel; ntiles for padding/identity
    tile_start: torch.Tensor  # (ntiles + 1,) flat frame index of each tile's top-left; last = 0
    offset: torch.Tensor  # (R*R,) flat offset of the pixel from its tile's top-left (or itself)


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

    def table(self, kind: int, level: int) -> _LevelTable:
        a, b = self.kind_sizes[kind]
        return _level_table(self.region, a, b, level)


@lru_cache(maxsize=4096)
def _level_table(region: int, a: int, b: int, level: int) -> _LevelTable:
    """Index tables for an ``a x b`` region inside an ``R x R`` frame at one ladder level."""
    t = tile_ladder(region)[level]
    frame = torch.arange(region * region, dtype=torch.int64)
    y, x = frame // region, frame % region
    inside = (y < a) & (x < b)
    if level == 0:
        th, tw = a, b  # one tile: unchanged
    else:
        th, tw = math.gcd(t, a), math.gcd(t, b)
    per_row = b // tw
    ntiles = (a // th) * per_row
    tile_of = torch.where(inside, (y // th) * per_row + x // tw, torch.full_like(y, ntiles))
    k = torch.arange(ntiles, dtype=torch.int64)
    tile_start = torch.cat(
        [(k // per_row) * th * region + (k % per_row) * tw, torch.zeros(1, dtype=torch.int64)]
    )
    offset = torch.where(inside, (y % th) * region + (x % tw), frame)
    return _LevelTable(ntiles, tile_of, tile_start, offset)


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
