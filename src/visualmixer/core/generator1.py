"""Permutation generator 1 (plans made before 2026-11-27), kept so old plans restore bit-exactly.

Every image's random stream is Philox-4x64-10 (numpy's :class:`numpy.random.Philox`, whose raw
stream numpy keeps stable across versions) keyed by the first 16 bytes of the subkey, read as
little-endian 32-bit words and compared as signed int32. With ``M = regions * C``, words
``[0, M)`` order the channels of each region and word ``M + slot * M + region * C + c`` is the
sort key of tile slot ``slot`` in channel ``c`` of ``region`` (slot-major). A region cut into
``n`` tiles takes the sort order of its first ``n`` slot keys as its tile permutation. The stream
is drawn and the permutations sorted on the CPU. :func:`visualmixer.core.permute.shuffle_regions`
applies it (``generator=1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from visualmixer.core.regions import VIEW_DTYPES, RegionGrid, tile_ladder, widest_word

__all__ = ["random_words", "sort_permutations", "words_needed"]


def words_needed(grid: RegionGrid, channels: int, max_level: int | None = None) -> int:
    """Stream length an image of this geometry reads when no region exceeds ``max_level``."""
    top = grid.levels if max_level is None else max_level
    tiles = max(grid.table(kind, level).ntiles for kind in range(4) for level in range(top + 1))
    return grid.count * channels * (1 + tiles)


def random_words(subkeys: Sequence[bytes], count: int) -> np.ndarray:
    """``(N, count)`` int32 array: the first ``count`` words of each subkey's Philox stream."""
    n_raw = (count + 1) // 2
    out = np.empty((len(subkeys), 2 * n_raw), dtype="<u4")
    for i, sub in enumerate(subkeys):  # one call per image; the stream itself is vectorised C
        if len(sub) < 16:
            raise ValueError("subkeys must be at least 16 bytes")
        k = np.frombuffer(sub[:16], dtype="<u8").astype(np.uint64)
        out[i] = np.random.Philox(key=k).random_raw(n_raw).astype("<u8", copy=False).view("<u4")
    return np.ascontiguousarray(out[:, :count]).view("<i4").astype(np.int32, copy=False)


def sort_permutations(keys: np.ndarray, *, avoid_identity: bool = True) -> np.ndarray:
    """Permutations ordering each row of int32 ``keys`` ascending: ``(..., n)`` -> int64.

    The low ``ceil(log2 n)`` bits of each key are replaced by the slot index, which makes keys
    unique within a row: the result is then the same for any sorting algorithm, CPU or version
    (ties would otherwise be ordered by implementation details). With ``avoid_identity`` (tile
    permutations) a permutation that came out as the identity is rotated by one, so a region cut
    into two or more tiles never keeps every tile in place. Channel orders use
    ``avoid_identity=False``: uniform over all ``n!`` orders, because excluding the identity
    tells an attacker one order the region certainly does not have and makes the rotation twice
    as likely as the others (attack A5 exploited exactly that).
    """
    n = keys.shape[-1]
    if n < 2:
        return np.zeros(keys.shape, dtype=np.int64)
    bits = (n - 1).bit_length()
    mask = np.int32((1 << bits) - 1)
    packed = (keys & ~mask) | np.arange(n, dtype=np.int32)
    packed.sort(axis=-1)
    perm = (packed & mask).astype(np.int64)
    ident = (perm == np.arange(n)).all(axis=-1)
    if avoid_identity and ident.any():
        perm[ident] = np.roll(perm[ident], 1, axis=-1)
    return perm


@lru_cache(maxsize=256)
def _subtile_map(region: int, tile: int, sub: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a full region cut into ``tile``-sided tiles, seen as ``sub``-sided sub-tiles:
    the tile of each sub-tile, each sub-tile's offset from its tile's first sub-tile, and the
    first sub-tile of each tile (all flat, row-major)."""
    side, f, tiles = region // sub, tile // sub, region // tile
    qy, qx = np.divmod(np.arange(side * side), side)
    tile_of = (qy // f) * tiles + qx // f
    offset = (qy % f) * side + qx % f
    ky, kx = np.divmod(np.arange(tiles * tiles), tiles)
    start = ky * f * side + kx * f
    return tile_of, offset, start


def _tile_keys(words: np.ndarray, n_idx: np.ndarray, r_idx: np.ndarray, m: int, c: int, nt: int) -> np.ndarray:
    """Sort keys ``(g, C, nt)`` of the tile slots of regions ``(n_idx, r_idx)``."""
    mc = m * c
    view = words[:, mc : mc + nt * mc].reshape(words.shape[0], nt, m, c)
    return np.ascontiguousarray(view[n_idx, :, r_idx, :].transpose(0, 2, 1))




def _shuffle_full_grid(regions, words, levels, grid, sigma, inverse):
    """All regions full-sized: one gather over the whole batch.

    Every level present is expressed at the finest tile side ``sub`` in the call, and the data is
    viewed as wider integers so that one element holds (a power-of-two chunk of) one tile row:
    the gather moves whole tile rows without any strided tile copy.
    """
    n, m, c, r, _ = regions.shape
    ladder = tile_ladder(r)
    lv = levels.numpy()
    present = np.unique(lv).tolist()
    # the coarsest side every present tile side is a multiple of (divisor ladders such as 14, 7,
    # 2, 1 are not nested: 7 and 2 meet at single pixels)
    sub = math.gcd(*[ladder[level] for level in present])
    side = r // sub
    ns = side * side
    # base[q] = first element (in wide units) of the source sub-tile that lands on sub-tile q
    row_bytes = sub * regions.element_size()
    chunk = widest_word(row_bytes)
    k = row_bytes // chunk  # wide elements per tile row
    per_row = r * regions.element_size() // chunk  # wide elements per region row
    src = np.empty((n, m, c, ns), dtype=np.int64)
    for level in present:  # <= len(ladder) iterations, each batched over all its regions
        n_idx, r_idx = np.nonzero(lv == level)
        t = ladder[level]
        tile_of, offset, start = _subtile_map(r, t, sub)
        if level == 0:
            pi = np.zeros((len(n_idx), c, 1), dtype=np.int64)
        else:
            pi = sort_permutations(_tile_keys(words, n_idx, r_idx, m, c, (r // t) ** 2))
        moved = pi if t == sub else start[pi[..., tile_of]] + offset  # t == sub: tiles are sub-tiles
        moved += sigma[n_idx, r_idx, :, None] * ns
        if len(n_idx) == n * m:  # the level covers every region: no scattered assignment needed
            src = np.ascontiguousarray(moved).reshape(n, m, c, ns)
        else:
            src[n_idx, r_idx] = moved
    dev = regions.device
    if sub == 1:  # single pixels: the sub-tile index is the element index
        index = torch.from_numpy(src * k if k > 1 else src).to(dev)
        if k > 1:
            index = (index.unsqueeze(-1) + torch.arange(k, device=dev)).reshape(n, m, -1)
    else:
        ch, q = np.divmod(src, ns)
        sy, sx = np.divmod(q, side)
        base = torch.from_numpy(ch * (r * per_row) + sy * (sub * per_row) + sx * k).to(dev)
        inner = (torch.arange(sub, device=dev) * per_row).view(sub, 1, 1) + torch.arange(k, device=dev)
        index = base.view(n, m, c, side, 1, side, 1) + inner.view(1, 1, 1, 1, sub, 1, k)
    index = index.view(n, m, c * r * per_row)
    wide = regions.contiguous().view(n, m, -1).view(torch.uint8).view(VIEW_DTYPES[chunk])
    if inverse:
        moved = torch.empty_like(wide).scatter_(2, index, wide)
    else:
        moved = wide.gather(2, index)
    return moved.view(torch.uint8).view(regions.dtype).view(n, m, c, r, r)
