"""Apply and invert the keyed tile permutations of a whole batch.

Two permutation generators are read here:

- **Generator 2** (made by today's :func:`visualmixer.obfuscate`): the permutations come from
  :mod:`visualmixer.core.keyed` on the images' device. Full grids (sides multiples of the region)
  move tile rows with one ``index_select`` per level, as the widest integers a tile row divides
  into, with an int32 index built from a per-(channel, tile) table: :func:`shuffle_level` in
  the region layout (the planner), :func:`shuffle_image` directly in the image layout
  (restore).
- **Generator 1** (plans made before 2026-11-27; restore only): NumPy Philox streams sorted on
  the CPU (:mod:`visualmixer.core.generator1`, whose names are re-exported here).

Images with edge regions (sides not multiples of the region) use the general path of either
generator: a region-major layout ``(N, regions, C, R, R)`` whose regions of one shape and level
are cut into tiles with a reshape and moved by one ``gather`` (``scatter`` to restore).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from visualmixer.core.generator1 import _shuffle_full_grid, _tile_keys, random_words, sort_permutations, words_needed
from visualmixer.core.keyed import (
    channel_permutations,
    host_checks,
    ladder_lanes,
    lane_keys,
    permutations,
    tile_permutations,
    to_device,
)
from visualmixer.core.regions import VIEW_DTYPES, RegionGrid, tile_ladder, widest_word

__all__ = [
    "random_words",
    "sort_permutations",
    "words_needed",
    "shuffle_regions",
    "shuffle_level",
    "shuffle_image",
    "level_sources",
    "ladder_keys",
    "LadderKeys",
    "images_per_block",
]


def _kind_level_groups(grid: RegionGrid, levels: torch.Tensor):
    """Yield ``(kind, level, n_idx, r_idx)`` for every (region shape, level) present.

    A loop over at most 4 shapes x the ladder's levels, never over regions or pixels.
    """
    kinds = grid.kinds.to(levels.device)
    if grid.full:  # every region is full
        present = [(0, None)]
    else:
        present = [(k, kinds == k) for k in range(4) if bool((kinds == k).any())]
    for kind, kmask in present:
        lv = levels if kmask is None else levels.masked_fill(~kmask, -1)
        for level in torch.unique(lv).tolist():
            if level < 0:
                continue
            n_idx, r_idx = (lv == level).nonzero(as_tuple=True)
            yield kind, int(level), n_idx, r_idx


def shuffle_regions(
    regions: torch.Tensor,
    words,
    levels: torch.Tensor,
    grid: RegionGrid,
    channel_order: bool,
    *,
    inverse: bool = False,
    generator: int = 1,
) -> torch.Tensor:
    """Permute tiles inside regions (and the channel order of regions), or undo it.

    Parameters
    ----------
    regions : torch.Tensor
        ``(N, regions, C, R, R)`` any dtype (see :func:`to_regions`).
    words : numpy.ndarray | torch.Tensor
        Generator 1: ``(N, >= words_needed(...))`` int32 NumPy random stream (see
        :func:`random_words`). Generator 2: ``(N, 8)`` int32 key words on the regions' device
        (:func:`visualmixer.core.keyed.key_words`).
    levels : torch.Tensor
        ``(N, regions)`` int64 ladder level of each region.
    grid : RegionGrid
    channel_order : bool
        Permute the channel order per region too.
    inverse : bool
        Undo the permutation instead (restore).
    generator : {1, 2}
        Which permutation generator made (or makes) the shuffle.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``regions``. Output channel ``c``, tile slot ``k`` of a region
        holds source channel ``sigma[c]``, tile ``pi_c[k]``.
    """
    if generator == 2:
        return _shuffle_v2(regions, words, levels, grid, channel_order, inverse)
    n, m, c, r, _ = regions.shape
    mc = m * c
    levels = levels.cpu()
    if channel_order and c > 1:
        sigma_np = sort_permutations(words[:, :mc].reshape(n, m, c), avoid_identity=False)
    else:
        sigma_np = np.broadcast_to(np.arange(c, dtype=np.int64), (n, m, c))
    if grid.full:  # every region is full: the fast path
        return _shuffle_full_grid(regions, words, levels, grid, sigma_np, inverse)

    def tile_perms(n_idx, r_idx, level, nt):
        keys = _tile_keys(words, n_idx.numpy(), r_idx.numpy(), m, c, nt)
        return torch.from_numpy(sort_permutations(keys))

    sigma = torch.from_numpy(np.array(sigma_np)).to(regions.device)
    return _shuffle_by_kind(regions, levels, grid, sigma, tile_perms, inverse)


def _shuffle_by_kind(regions, levels, grid, sigma, tile_perms, inverse):
    """Any grid (edge regions too): one tile gather per (region shape, level) present."""
    n, m, c, r, _ = regions.shape
    dev = regions.device
    out = regions.clone()
    for kind, level, n_idx, r_idx in _kind_level_groups(grid, levels):
        table = grid.table(kind, level)
        a, b = grid.kind_sizes[kind]
        th, tw, nt = table.tile_h, table.tile_w, table.ntiles
        if nt > 1:
            pi = tile_perms(n_idx, r_idx, level, nt).to(dev, torch.int64)  # (g, C, nt)
        else:
            pi = torch.zeros((len(n_idx), c, 1), dtype=torch.int64, device=dev)
        n_idx, r_idx = n_idx.to(dev), r_idx.to(dev)
        sub = regions[n_idx, r_idx][..., :a, :b]  # (g, C, a, b)
        g = sub.shape[0]
        tiles = sub.reshape(g, c, a // th, th, b // tw, tw).permute(0, 1, 2, 4, 3, 5)
        tiles = tiles.reshape(g, c * nt, th, tw)
        src = (sigma[n_idx, r_idx].long().unsqueeze(-1) * nt + pi).reshape(g, c * nt, 1, 1)
        src = src.expand(g, c * nt, th, tw)
        if inverse:
            moved = torch.empty_like(tiles).scatter_(1, src, tiles)
        else:
            moved = tiles.gather(1, src)
        moved = moved.view(g, c, a // th, b // tw, th, tw).permute(0, 1, 2, 4, 3, 5)
        out[n_idx, r_idx, :, :a, :b] = moved.reshape(g, c, a, b)
    return out


def _region_rows(words: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key words and region index of every (image, region) row, image-major."""
    n = words.shape[0]
    return words.repeat_interleave(m, dim=0), torch.arange(m, device=words.device).repeat(n)


def _channel_sources(words, m: int, c: int, channel_order: bool) -> torch.Tensor:
    """``(N * m, C)`` int32 source channel of each output channel (generator 2)."""
    if channel_order and c > 1:
        return channel_permutations(*_region_rows(words, m), c)
    return torch.arange(c, dtype=torch.int32, device=words.device).expand(words.shape[0] * m, c)


class LadderKeys(NamedTuple):
    """Generator 2's row keys of every (image, region) row at ladder ``levels``, and the channel
    orders: ``a, b`` ``(N * regions, len(levels), C)`` int32, ``sigma`` ``(N * regions, C)``."""

    a: torch.Tensor
    b: torch.Tensor
    sigma: torch.Tensor
    levels: tuple[int, ...]

    def rows(self, start: int, stop: int) -> LadderKeys:
        """The keys of the image-major region rows ``start:stop`` (a block of images)."""
        return LadderKeys(self.a[start:stop], self.b[start:stop], self.sigma[start:stop], self.levels)


def ladder_keys(words: torch.Tensor, grid: RegionGrid, channels: int, channel_order: bool,
                levels: Sequence[int] | None = None) -> LadderKeys:
    """:class:`LadderKeys` of a batch at ``levels`` (default: the whole ladder) in one pass of the
    key mixing: the level is only a counter lane, so all levels cost one call's operators instead
    of one per level (on a GPU the call is bound by kernel launches). On the CPU pass only the
    levels used: the element work grows with their number."""
    row_words, regions = _region_rows(words, grid.count)
    levels = tuple(range(grid.levels + 1)) if levels is None else tuple(levels)
    a, b = lane_keys(row_words, regions, ladder_lanes(levels, channels, words.device))
    if channel_order and channels > 1:
        sigma = permutations(a[:, -1], b[:, -1], channels, avoid_identity=False)
    else:
        sigma = torch.arange(channels, dtype=torch.int32, device=words.device).expand(len(regions), channels)
    shape = (len(regions), len(levels), channels)
    return LadderKeys(a[:, :-1].view(shape), b[:, :-1].view(shape), sigma, levels)


def level_sources(keys: LadderKeys, grid: RegionGrid, level: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Generator 2, full regions at ``level``, from the batch's :func:`ladder_keys`:
    ``(N * regions, C * ntiles)`` int32, the source ``channel * ntiles + tile`` of each output
    (channel, tile slot); only for the image-major region ``rows`` (indices into
    ``N * regions``) when given."""
    nt = (grid.region // tile_ladder(grid.region)[level]) ** 2
    column = keys.levels.index(level)
    a, b, sigma = keys.a[:, column], keys.b[:, column], keys.sigma
    if rows is not None:
        a, b, sigma = a[rows], b[rows], sigma[rows]
    if nt > 1:
        pi = permutations(a, b, nt, avoid_identity=True)
        return (sigma.unsqueeze(-1) * nt + pi).flatten(1)
    return sigma.clone()


def shuffle_level(regions: torch.Tensor, sources: torch.Tensor, tile: int, *, inverse: bool = False,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Move whole tiles of full regions all cut at one tile side: one ``index_select`` of tiles.

    Parameters
    ----------
    regions : torch.Tensor
        ``(N, m, C, R, R)`` full regions.
    sources : torch.Tensor
        ``(N * m, C * ntiles)``: output (channel, slot) ``j`` of a region takes its source
        (channel, tile) ``sources[., j]`` (see :func:`level_sources`).
    tile : int
        Tile side.
    inverse : bool
        Undo the move instead.
    out : torch.Tensor, optional
        Contiguous tensor of the regions' shape and dtype to write the result into (returned).

    Single pixels and whole regions: each tile is a row of the widest integers its bytes divide
    into, picked with an int32 index of one entry per tile (``sources`` plus one add).
    """
    n, m, c, r, _ = regions.shape
    rows = n * m
    q = r // tile
    nt = q * q
    if inverse:
        sources = _inverse(sources)
    if 1 < tile < r:  # tiles of several rows: move tile rows in place (no layout copy)
        return _move_tile_rows(regions, sources, tile, out)
    # single pixels or whole regions: the region layout is already tile-major
    nbytes = tile * tile * regions.element_size()
    chunk = widest_word(nbytes)
    wide = regions.reshape(rows * c * nt, -1).view(torch.uint8).view(VIEW_DTYPES[chunk])
    narrow = torch.int32 if wide.shape[0] < 2**31 else torch.int64
    offsets = torch.arange(rows, device=regions.device, dtype=narrow).mul_(c * nt)
    index = sources.to(narrow) + offsets.view(-1, 1)  # (never in place: sources is the caller's)
    return _gather_into(wide, index, out, regions.shape, regions.dtype)


def _inverse(sources: torch.Tensor) -> torch.Tensor:
    """The inverse of each row's permutation ``sources`` ``(rows, n)``, by a scatter of the small table."""
    order = torch.arange(sources.shape[1], dtype=sources.dtype, device=sources.device)
    return torch.empty_like(sources).scatter_(1, sources.long(), order.expand_as(sources))


def _gather_into(wide: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None, shape, dtype) -> torch.Tensor:
    """``wide[index]`` as ``shape`` of ``dtype``, written into ``out`` when given."""
    if out is None:
        return wide.index_select(0, index.view(-1)).view(torch.uint8).view(dtype).view(shape)
    torch.index_select(wide.view(-1), 0, index.view(-1), out=out.view(torch.uint8).view(wide.dtype).view(-1))
    return out


def _move_tile_rows(regions: torch.Tensor, sources: torch.Tensor, tile: int, out=None) -> torch.Tensor:
    """:func:`shuffle_level` for tiles of several rows: the data viewed as the widest integers
    a tile row divides into, one index entry per tile row built from a per-(channel, tile)
    table (cheaper than laying the regions out tile-major and back)."""
    n, m, c, r, _ = regions.shape
    rows, itemsize, dev = n * m, regions.element_size(), str(regions.device)
    chunk = widest_word(tile * itemsize)
    k, rb = tile * itemsize // chunk, r * itemsize // chunk  # wide elements per tile row / region row
    # a region is an image of one region, and a one-column band
    base, (slot, offset) = _image_tile_table(c, r, r, tile, rb, k, dev), _tile_spread(c, r, tile, k, 1, rb, dev)
    wide = regions.contiguous().view(rows, -1).view(torch.uint8).view(VIEW_DTYPES[chunk]).view(-1)
    per_region = wide.numel() // rows
    narrow = torch.int32 if wide.numel() < 2**31 else torch.int64
    offsets = torch.arange(rows, device=regions.device, dtype=narrow) * per_region
    start = base.to(narrow).index_select(0, sources.reshape(-1)).view(rows, -1) + offsets.view(-1, 1)
    # each wide element's tile start, spread by a gather along the region's short rows (a
    # broadcast add over the 6-d tile layout ran 8x slower: its inner dimensions are 1-2 long)
    index = start.gather(1, slot.view(1, -1).expand(rows, -1)).add_(offset.to(narrow).view(1, -1))
    return _gather_into(wide, index, out, regions.shape, regions.dtype)


@lru_cache(maxsize=128)
def _image_tile_table(c: int, h: int, r: int, t: int, row_units: int, k: int, device: str) -> torch.Tensor:
    """First wide element of each (channel, tile) of a region, relative to the region's first,
    in an image laid out ``(C, h, row_units)`` (int64; see :func:`shuffle_image`; a region of the
    region layout is an image of one region: ``h = r``, ``row_units`` one region row)."""
    q = r // t
    ch = torch.arange(c).view(c, 1, 1) * (h * row_units)
    ty = torch.arange(q).view(1, q, 1) * (t * row_units)
    tx = torch.arange(q).view(1, 1, q) * k
    return to_device((ch + ty + tx).reshape(-1), device)


@lru_cache(maxsize=128)
def _tile_spread(c: int, r: int, t: int, k: int, cols: int, row_units: int, device: str):
    """Per channel, in memory order over one band of ``cols`` regions (``r`` rows of
    ``row_units`` wide elements; ``k`` per tile row): the tile slot ``(col, channel, tile row,
    tile column)`` each wide element comes from (int64), and its offset from that tile's first
    (int32), ``(C, r * cols * r / t * k)`` each. The image layout's bands of region rows
    (:func:`_move_image_tiles`); one region of either layout is a one-column band."""
    q = r // t
    shape = (c, q, t, cols, q, k)  # channel, tile row, row in tile, region column, tile column, element
    ch, qy, iy, col, qx, ik = (torch.arange(size).view([-1 if d == i else 1 for d in range(6)])
                               for i, size in enumerate(shape))
    slot = (col * (c * q * q) + ch * (q * q) + qy * q + qx).expand(shape).reshape(c, -1).contiguous()
    offset = (iy * row_units + ik).expand(shape).reshape(c, -1).to(torch.int32).contiguous()
    return to_device(slot, device), to_device(offset, device)


#: Gather-index entries per block of images on the CPU (:func:`images_per_block`), for batches
#: of more than four blocks: the keys, sorts, index and gather of a block stay cache-sized and
#: no large temporaries are made (224² b64 restore at single pixels, one thread, after
#: obfuscate calls: 223-260 -> 96-105 ms; 2^19 and 2^21 entries were slower at 2x2 tiles).
SHUFFLE_BLOCK_ENTRIES = 1 << 20


def images_per_block(images: torch.Tensor, grid: RegionGrid, level: int) -> int:
    """Images per block when the CPU shuffles a batch at ``level`` (the batch's length: one
    block, for batches of at most four blocks' gather entries)."""
    t = tile_ladder(grid.region)[level]
    chunk = widest_word(t * images.element_size())
    entries = images[0].numel() * images.element_size() // chunk
    if len(images) * entries <= 4 * SHUFFLE_BLOCK_ENTRIES:
        return len(images)
    return max(1, SHUFFLE_BLOCK_ENTRIES // entries)


def _levels_present(levels: torch.Tensor, grid: RegionGrid) -> list[int]:
    """The ladder levels to compute for ``levels``: those present on the CPU (asking is free),
    every level elsewhere (asking would be a host synchronisation)."""
    every = range(grid.levels + 1)
    if host_checks(levels.device):
        return [level for level in every if bool((levels == level).any())]
    return list(every)


def shuffle_image(images: torch.Tensor, words: torch.Tensor, levels: torch.Tensor, grid: RegionGrid,
                  channel_order: bool, *, inverse: bool = False,
                  present: Sequence[int] | None = None) -> torch.Tensor:
    """Generator 2 on a grid of full regions, in the image layout: ``(N, C, H, W)`` in and out.

    The same result as :func:`shuffle_regions` between :func:`to_regions` and
    :func:`from_regions`, without those two layout copies: tile rows are moved as the widest
    integers a tile row divides into, with an int32 index built from a per-(channel, tile)
    table. On the CPU each level present is one gather over its own regions (one pass in all),
    for large batches a block of images at a time (:func:`images_per_block`); on accelerators
    (no host synchronisation) every ladder level in ``present`` is computed for every region
    and each region taken from its own level. ``present``: the levels ``levels`` holds, when the
    caller knows them (``restore`` reads them on the host from its plans); default: found on the
    CPU, the whole ladder elsewhere.
    """
    n, c, h, w = images.shape
    levels = levels.to(images.device).reshape(-1)
    if host_checks(images.device):
        present = _levels_present(levels, grid) if present is None else list(present)
        keys = ladder_keys(words, grid, c, channel_order, present)  # (small: once for the batch)
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
        step, m = images_per_block(images, grid, max(present)), grid.count
        for i in range(0, n, step):  # a block of images at a time (one block unless large)
            block, here = slice(i, i + step), levels[i * m : (i + step) * m]
            _shuffle_on_host(images[block], keys.rows(i * m, (i + step) * m), here, grid, inverse,
                             present if step >= n else _levels_present(here, grid), out[block])
        return out
    present = tuple(range(grid.levels + 1) if present is None else present)
    keys = ladder_keys(words, grid, c, channel_order, present)
    r, rows, cols = grid.region, grid.rows, grid.cols
    cw = widest_word(r * images.element_size())
    shape = (n, c, rows, r, cols, -1)
    out = None
    for level in present:
        moved = _move_image_tiles(images, keys, grid, level, inverse)
        if out is None:
            out = moved
        else:  # regions at this level from here, selected as wide integers of region rows
            here = (levels == level).view(n, 1, rows, 1, cols, 1)
            a, b = (x.view(torch.uint8).view(VIEW_DTYPES[cw]).view(shape) for x in (moved, out))
            out = torch.where(here, a, b).view(torch.uint8).view(images.dtype).view(n, c, h, w)
    return out


def _shuffle_on_host(images, keys, levels, grid, inverse, present, out):
    """:func:`shuffle_image` on the CPU, into ``out`` (``keys``: these images' rows of the
    batch's :func:`ladder_keys`): each level ``present`` one gather over its own regions."""
    if len(present) == 1:
        return _move_image_tiles(images, keys, grid, present[0], inverse, out=out)
    for level in present:
        rows = (levels == level).nonzero().squeeze(1)
        _move_image_tiles(images, keys, grid, level, inverse, rows=rows, out=out)
    return out


def _move_image_tiles(images, keys, grid, level, inverse, rows=None, out=None):
    """One level of :func:`shuffle_image` (``keys``: the batch's :func:`ladder_keys`): every
    region (returns the image, written into ``out`` when given), or only the image-major region
    ``rows``, written into ``out``."""
    n, c, h, w = images.shape
    r = grid.region
    t = tile_ladder(r)[level]
    sources = level_sources(keys, grid, level, rows)
    if inverse:
        sources = _inverse(sources)
    itemsize = images.element_size()
    chunk = widest_word(t * itemsize)
    k, rb = t * itemsize // chunk, r * itemsize // chunk  # wide elements per tile row / region row
    row_units = grid.cols * rb
    wide = images.contiguous().view(torch.uint8).view(VIEW_DTYPES[chunk]).view(-1)
    narrow = torch.int32 if wide.numel() < 2**31 else torch.int64
    dev = images.device
    table = _image_tile_table(c, h, r, t, row_units, k, str(dev)).to(narrow)
    origin = (torch.arange(n, device=dev, dtype=narrow).view(n, 1, 1) * (c * h * row_units)
              + torch.arange(grid.rows, device=dev, dtype=narrow).view(1, -1, 1) * (r * row_units)
              + torch.arange(grid.cols, device=dev, dtype=narrow).view(1, 1, -1) * rb).view(-1)
    if rows is not None:
        origin = origin[rows]
    start = table.index_select(0, sources.reshape(-1)).view(len(origin), -1) + origin.view(-1, 1)
    if rows is None:  # the whole image, in its own element order
        # each wide element's tile start, spread over its band of region rows by a gather (a
        # broadcast add over the permuted tile layout has 1-8 long inner dimensions: 3x slower)
        slot, offset = _tile_spread(c, r, t, k, grid.cols, row_units, str(dev))
        band = (n, c, grid.rows, slot.shape[1])
        spread = start.view(n, 1, grid.rows, -1).expand(n, c, grid.rows, -1)
        index = spread.gather(3, slot.view(1, c, 1, -1).expand(band)).add_(offset.to(narrow).view(1, c, 1, -1))
        return _gather_into(wide, index, out, images.shape, images.dtype)
    # the same spread over one region's elements, in its own order (a one-column band)
    slot, offset = _tile_spread(c, r, t, k, 1, row_units, str(dev))
    slot, offset = slot.view(1, -1), offset.to(narrow).view(1, -1)
    values = wide.index_select(0, start.gather(1, slot.expand(len(rows), -1)).add_(offset).view(-1))
    dest = table.index_select(0, slot.view(-1)).view(1, -1) + offset + origin.view(-1, 1)
    out.view(torch.uint8).view(VIEW_DTYPES[chunk]).view(-1).index_copy_(0, dest.view(-1).long(), values)
    return out


def _shuffle_v2(regions, words, levels, grid, channel_order, inverse):
    """Generator 2, any levels. Full grids: one :func:`shuffle_level` per level present (on the
    CPU) or per ladder level (elsewhere: no host synchronisation), selected per region."""
    n, m, c, r, _ = regions.shape
    if not grid.full:
        rows_words = words

        def tile_perms(n_idx, r_idx, level, nt):
            return tile_permutations(rows_words[n_idx.to(words.device)], r_idx.to(words.device), level, c, nt)

        sigma = _channel_sources(words, m, c, channel_order).view(n, m, c)
        return _shuffle_by_kind(regions, levels.to(regions.device), grid, sigma, tile_perms, inverse)
    levels = levels.to(regions.device)
    ladder = tile_ladder(r)
    present = _levels_present(levels, grid)
    keys = ladder_keys(words, grid, c, channel_order, present)
    out = None
    for level in present:
        here = levels == level
        moved = shuffle_level(regions, level_sources(keys, grid, level),
                              ladder[level], inverse=inverse)
        out = moved if out is None else torch.where(here.view(n, m, 1, 1, 1), moved, out)
    return out
