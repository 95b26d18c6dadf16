"""Keyed, counter-based permutations for a whole batch; apply and invert them (SPEC §5.4–5.6).

Every image has a 32-byte subkey. Its random stream is Philox-4x64-10 (numpy's
:class:`numpy.random.Philox`, whose raw stream is stable across numpy versions) keyed by the first
16 bytes of the subkey, read as 32-bit words. Word ``((r * C) + c) * R*R + slot`` is the sort key of
tile slot ``slot`` in channel ``c`` of region ``r``; the words after those order the channels of
each region. A region cut into ``n`` tiles takes the stable argsort of its first ``n`` sort keys as
its tile permutation, so the permutation of a region depends only on the key, the image id, the
region and its level — never on the device, the batch or a global seed. The stream is drawn on the
CPU and moved to the images' device, so CPU and GPU give identical permutations.

The permutation of every pixel becomes one flat index per output value, in a region-major layout
``(N, regions, C * R * R)``; obfuscation is one ``gather`` and restoration one ``scatter``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.regions import RegionGrid

__all__ = ["random_words", "build_index", "to_regions", "from_regions", "apply_index", "invert_index"]


def random_words(subkeys: Sequence[bytes], count: int) -> torch.Tensor:
    """``(N, count)`` int64 tensor of uint32 words from each subkey's Philox stream (CPU)."""
    n_raw = (count + 1) // 2
    out = np.empty((len(subkeys), 2 * n_raw), dtype=np.int64)
    for i, sub in enumerate(subkeys):  # one call per image; the stream itself is vectorised C
        if len(sub) < 16:
            raise ValueError("subkeys must be at least 16 bytes")
        k = np.frombuffer(sub[:16], dtype="<u8").astype(np.uint64)
        raw = np.random.Philox(key=k).random_raw(n_raw)
        out[i, 0::2] = raw & np.uint64(0xFFFFFFFF)
        out[i, 1::2] = raw >> np.uint64(32)
    return torch.from_numpy(out[:, :count])


def words_needed(grid: RegionGrid, channels: int) -> int:
    """Stream length an image of this geometry consumes."""
    return grid.count * channels * (grid.region**2 + 1)


def _stable_perm(keys: torch.Tensor) -> torch.Tensor:
    """Argsort of the last dim; a permutation that came out as the identity is rotated by one,
    so a shuffled region of two or more tiles never keeps all tiles in place."""
    perm = torch.argsort(keys, dim=-1, stable=True)
    n = perm.shape[-1]
    if n >= 2:
        ident = (perm == torch.arange(n, device=perm.device)).all(dim=-1, keepdim=True)
        perm = torch.where(ident, perm.roll(1, dims=-1), perm)
    return perm


def build_index(
    words: torch.Tensor,
    levels: torch.Tensor,
    grid: RegionGrid,
    channels: int,
    channel_order: bool,
) -> torch.Tensor:
    """Flat source index of every output value, region-major.

    Parameters
    ----------
    words : torch.Tensor
        ``(N, words_needed(grid, channels))`` int64 random stream (on the target device).
    levels : torch.Tensor
        ``(N, grid.count)`` int64 ladder level per region.
    grid : RegionGrid
    channels : int
    channel_order : bool
        Also permute the channel order per region.

    Returns
    -------
    torch.Tensor
        ``(N, grid.count, channels * R * R)`` int64 indices into the same layout.
    """
    n = words.shape[0]
    rr = grid.region**2
    c = channels
    dev = words.device
    tile_keys = words[:, : grid.count * c * rr].view(n, grid.count, c, rr)
    src = torch.empty((n, grid.count, c, rr), dtype=torch.int64, device=dev)
    kinds = grid.kinds.to(dev).expand(n, -1)
    # A loop over the (<= 4) region shapes and the ladder's levels; each step is batched over all
    # regions of every image that have that shape and level.
    for kind in range(4):
        kind_mask = kinds == kind
        if not bool(kind_mask.any()):
            continue
        for level in range(grid.levels + 1):
            mask = kind_mask & (levels == level)
            if not bool(mask.any()):
                continue
            table = grid.table(kind, level)
            tile_of = table.tile_of.to(dev)
            tile_start = table.tile_start.to(dev)
            offset = table.offset.to(dev)
            keys = tile_keys[mask][..., : table.ntiles]  # (m, C, ntiles)
            perm = _stable_perm(keys)
            perm = F.pad(perm, (0, 1), value=table.ntiles)  # sentinel slot for padding pixels
            src[mask] = tile_start[perm[..., tile_of]] + offset
    if channel_order and c > 1:
        ch_keys = words[:, grid.count * c * rr : grid.count * c * (rr + 1)].view(n, grid.count, c)
        sigma = torch.argsort(ch_keys, dim=-1, stable=True)  # output channel c <- source sigma[c]
        src = src + (sigma * rr).unsqueeze(-1)
    else:
        src = src + (torch.arange(c, device=dev) * rr).view(1, 1, c, 1)
    return src.view(n, grid.count, c * rr)


def to_regions(images: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, regions, C * R * R)`` (zero-padded to whole regions)."""
    n, c, h, w = images.shape
    r = grid.region
    hp, wp = grid.padded
    x = F.pad(images, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else images
    x = x.view(n, c, grid.rows, r, grid.cols, r).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, grid.count, c * r * r)


def from_regions(regions: torch.Tensor, grid: RegionGrid, channels: int) -> torch.Tensor:
    """Inverse of :func:`to_regions`, cropped back to ``(N, C, H, W)``."""
    n = regions.shape[0]
    r = grid.region
    x = regions.view(n, grid.rows, grid.cols, channels, r, r).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(n, channels, grid.rows * r, grid.cols * r)
    return x[..., : grid.height, : grid.width].contiguous()


def apply_index(images: torch.Tensor, index: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """Obfuscate: ``out[p] = in[index[p]]`` in region-major layout."""
    c = images.shape[1]
    return from_regions(to_regions(images, grid).gather(2, index), grid, c)


def invert_index(images: torch.Tensor, index: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """Restore: ``out[index[p]] = in[p]`` (the exact inverse of :func:`apply_index`)."""
    c = images.shape[1]
    shuffled = to_regions(images, grid)
    out = torch.empty_like(shuffled).scatter_(2, index, shuffled)
    return from_regions(out, grid, c)
