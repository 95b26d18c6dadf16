"""Permutation generator 2: keyed, counter-based, computed on the images' device.

Every image has a 32-byte subkey (HMAC-SHA256 of the master key, the image id and the purpose;
:mod:`visualmixer.core.keys`), read as eight little-endian 32-bit key words. The permutations of
an image are then a pure function of (key words, level, region, channel), computed with 32-bit
integer tensor operations that wrap identically on every device:

1. a *row key* pair ``(a, b)`` per (image, level, region, channel): eight rounds of the murmur3
   finaliser, each mixing in one key word, over the counter ``region * 64 + level * 4 + channel``
   (level 15 is the channel-order purpose);
2. a *slot key* per tile slot ``k`` of that row: ``fmix(fmix(a + k * golden) ^ b)``;
3. the low ``ceil(log2 n)`` bits of each slot key replaced by ``k`` (keys then are unique in a
   row, so every sorting algorithm on every device gives the same order), and the row sorted:
   the order is the tile permutation. On the CPU rows of up to 4 keys are sorted by a sorting
   network and longer ones by NumPy on the tensor's memory (5-10x faster than ``torch.sort``
   for short rows), a cache-sized block of rows at a time; elsewhere ``torch.sort`` —
   or, switched on (:mod:`visualmixer.core.triton_switch`), steps 2-3 and the identity fix below
   run as one Triton kernel per call on CUDA, and step 1 as another
   (:mod:`visualmixer.core.triton_kernels`; the same integers).

A tile permutation that came out as the identity is rotated by one (a region cut into two or
more tiles never keeps every tile in place); channel orders are uniform over all orders.

The murmur3 finaliser is not a cryptographic function; neither is generator 1's Philox. What
they must give is independent, uniform-looking permutations per image, region and level that
cannot be predicted without the 256-bit subkey. Generator 1 (:mod:`visualmixer.core.permute`,
NumPy Philox streams) is kept for restoring plans made with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from visualmixer.core import triton_switch
from visualmixer.core.fused import fused
from visualmixer.core.regions import MAX_LEVELS

__all__ = ["GENERATOR", "key_words", "row_keys", "lane_keys", "ladder_lanes", "permutations", "tile_permutations",
           "channel_permutations", "host_checks", "to_device"]

#: The generator number recorded in :class:`visualmixer.core.mixer.Plans`.
GENERATOR = 2

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9 - (1 << 32)  # as int32
_C1 = 0x85EBCA6B - (1 << 32)
_C2 = 0xC2B2AE35 - (1 << 32)
_CHANNEL_PURPOSE = MAX_LEVELS  # the "level" lane of channel-order row keys (after the ladder's)


#: Tests set this to run the CPU through the accelerator's sync-free path.
_FORCE_SYNC_FREE = False


def host_checks(device) -> bool:
    """Whether data-dependent host decisions may be taken for tensors on ``device``.

    On the CPU they are free and skip work nobody needs (levels no plan uses, rare fix-ups);
    on an accelerator each would be a host synchronisation, so the code there computes with
    masks instead, with the same results.
    """
    return torch.device(device).type == "cpu" and not _FORCE_SYNC_FREE


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on ``device`` without a host synchronisation (pinned, asynchronous copy).

    Also for the cached tables made on the host: a plain ``.to("cuda")`` of pageable memory
    is a synchronous copy (seen on an H200 under ``set_sync_debug_mode``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def key_words(subkeys: Sequence[bytes], device) -> torch.Tensor:
    """``(N, 8)`` int32 key words (little-endian) of 32-byte subkeys, on ``device``."""
    if set(map(len, subkeys)) - {32}:  # (no Python-level call per image)
        raise ValueError("subkeys must be 32 bytes each")
    words = np.frombuffer(b"".join(subkeys), dtype="<i4").astype(np.int32).reshape(len(subkeys), 8)
    return to_device(torch.from_numpy(words), device)


def _fmix_(h: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """murmur3's 32-bit finaliser, in place on an int32 tensor (wrapping; logical shifts).

    The shifted copies go to ``scratch`` (an int32 tensor of ``h``'s shape, overwritten): on the
    CPU a fresh large tensor per shift costs more than the shift (its pages are new memory)."""
    t = torch.empty_like(h) if scratch is None else scratch
    for shift, mask, mult in ((16, 0xFFFF, _C1), (13, 0x7FFFF, _C2), (16, 0xFFFF, None)):
        h.bitwise_xor_(torch.bitwise_right_shift(h, shift, out=t).bitwise_and_(mask))
        if mult is not None:
            h.mul_(mult)
    return h


def row_keys(words: torch.Tensor, regions: torch.Tensor, level: int, channels: int):
    """Row keys ``(a, b)``, each ``(G, channels)`` int32, of rows (image ``g``, ``regions[g]``).

    Parameters
    ----------
    words : torch.Tensor
        ``(G, 8)`` int32 key words of each row's image.
    regions : torch.Tensor
        ``(G,)`` integer region index of each row.
    level : int
        Ladder level (0-14), or 15 for channel orders.
    channels : int
    """
    return lane_keys(words, regions, level * 4 + torch.arange(channels, dtype=torch.int32, device=words.device))


def lane_keys(words: torch.Tensor, regions: torch.Tensor, lanes: torch.Tensor):
    """Row keys ``(a, b)``, each ``(G, K)`` int32, of rows ``g`` at counter lanes ``lanes`` (K,)
    (lane ``level * 4 + channel``; 60 is the channel order): :func:`row_keys` of several levels
    in one pass, element for element the same integers."""
    return triton_switch.call("lane_keys", words, regions, lanes, variant=(lanes.numel(),),
                              eager=lambda: _lane_keys_eager(words, regions, lanes))


def _lane_keys_eager(words: torch.Tensor, regions: torch.Tensor, lanes: torch.Tensor):
    """:func:`lane_keys` by tensor operations."""
    ctr = regions.to(torch.int32).view(-1, 1) * 64 + lanes.view(1, -1)
    a = ctr + words[:, 0:1]  # (not in place: one region may stand for many rows)
    t = torch.empty_like(a)
    _fmix_(a, t)
    for i in range(1, 4):
        _fmix_(a.bitwise_xor_(words[:, i : i + 1]), t)
    b = _fmix_(a ^ words[:, 4:5], t)
    for i in range(5, 8):
        _fmix_(b.bitwise_xor_(words[:, i : i + 1]), t)
    return a, b


def _slot_keys_eager(a: torch.Tensor, b: torch.Tensor, golden: torch.Tensor, slots: torch.Tensor,
                     keep: int) -> torch.Tensor:
    """Packed sort keys ``(..., n)`` of every slot of rows ``a, b``: the high bits of
    ``fmix(fmix(a + k * golden) ^ b)`` (``keep``), the slot ``k`` in the low bits."""
    s = a.unsqueeze(-1) + golden
    t = torch.empty_like(s)
    _fmix_(s, t)
    _fmix_(s.bitwise_xor_(b.unsqueeze(-1)), t)
    return s.bitwise_and_(keep).bitwise_or_(slots)


#: The slot keys, fused into one loop by ``torch.compile`` where :mod:`visualmixer.core.fused`
#: is enabled (opt-in; the same integers).
_slot_keys = fused(_slot_keys_eager)


@lru_cache(maxsize=64)
def _slot_terms(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``k * golden`` (wrapped to int32) and ``k`` for slots ``k < n``."""
    k = torch.arange(n, dtype=torch.int64)
    golden = (k * (_GOLDEN & _MASK32)) & _MASK32  # the uint32 product...
    golden = torch.where(golden >= 1 << 31, golden - (1 << 32), golden).to(torch.int32)  # ...as int32
    return to_device(golden, device), to_device(k.to(torch.int32), device)


#: Optimal sorting networks (compare-exchange pairs) of short rows.
_NETWORKS = {2: ((0, 1),), 3: ((0, 1), (1, 2), (0, 1)), 4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2))}


def _network_sort(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of ``n <= 4`` keys sorted by a sorting network over the columns: NumPy's sort pays
    ~25 ns per row whatever its length (rows of 4: 1.15 ms for 49 152 rows, the network 0.47)."""
    cols = list(keys.reshape(-1, n).T.contiguous().unbind(0))
    for i, j in _NETWORKS[n]:
        cols[i], cols[j] = torch.minimum(cols[i], cols[j]), torch.maximum(cols[i], cols[j])
    return torch.stack(cols, dim=-1).view(keys.shape)


def _sorted_order(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Sort unique packed int32 keys along the last axis; the slot indices (int32) in sorted order."""
    bits = max(1, (n - 1).bit_length())
    mask = (1 << bits) - 1
    if keys.device.type == "cpu" and n in _NETWORKS:  # (unique keys: every sort gives this order)
        ordered = _network_sort(keys, n)
    elif keys.device.type == "cpu":
        arr = keys.numpy()
        arr.sort(axis=-1)  # NumPy's sort of short rows is several times faster than torch's
        ordered = keys
    else:
        ordered = torch.sort(keys, dim=-1).values
    return ordered.bitwise_and_(mask)


def ladder_lanes(levels: Sequence[int], channels: int, device) -> torch.Tensor:
    """The counter lanes of ladder ``levels`` (level-major, then channel), and last the
    channel-order lane: ``(len(levels) * channels + 1,)`` int32, made on ``device`` by device
    arithmetic (one range per level), with no host copy."""
    ranges = [torch.arange(level * 4, level * 4 + channels, dtype=torch.int32, device=device) for level in levels]
    return torch.cat(ranges + [torch.full((1,), _CHANNEL_PURPOSE * 4, dtype=torch.int32, device=device)])


def permutations(a: torch.Tensor, b: torch.Tensor, n: int, avoid_identity: bool) -> torch.Tensor:
    """``(..., n)`` int32 permutations from row keys ``a, b`` of shape ``(...)`` (tile
    permutations avoid the identity; channel orders do not)."""
    if n < 2:
        return torch.zeros(a.shape + (1,), dtype=torch.int32, device=a.device)
    return triton_switch.call("permutations", a, b, n, avoid_identity, variant=(n, avoid_identity),
                              eager=lambda: _permutations_eager(a, b, n, avoid_identity))


#: Slot keys per block of rows in :func:`_permutations_eager` on the CPU (int32: 2 MiB, about
#: one core's L2 cache).
PERM_BLOCK_KEYS = 1 << 19


def _permutations_eager(a: torch.Tensor, b: torch.Tensor, n: int, avoid_identity: bool) -> torch.Tensor:
    """:func:`permutations` by tensor operations (and NumPy's sort on the CPU)."""
    golden, slots = _slot_terms(n, str(a.device))
    keep = ~((1 << (n - 1).bit_length()) - 1)
    step = max(1, PERM_BLOCK_KEYS // n)
    if not host_checks(a.device) or a.numel() <= step:
        return _block_permutations(a, b, n, avoid_identity, golden, slots, keep)
    # On the CPU a block of rows at a time: the ~25 passes of key mixing, sort and fix-up stay in
    # cache (224² b64 restore's 64-slot rows: slot keys 9-15 -> 5 ms, one thread). Blocks of
    # memory, not images: the accelerators' path is one block; same integers.
    shape, a, b = a.shape, a.reshape(-1), b.reshape(-1)
    out = torch.empty(len(a), n, dtype=torch.int32)
    for i in range(0, len(a), step):
        out[i : i + step] = _block_permutations(a[i : i + step], b[i : i + step], n, avoid_identity, golden, slots,
                                                keep)
    return out.view(shape + (n,))


def _block_permutations(a, b, n, avoid_identity, golden, slots, keep):
    """:func:`_permutations_eager` of rows ``a, b`` in one pass over them."""
    perm = _sorted_order(_slot_keys(a, b, golden, slots, keep), n)
    if avoid_identity:
        if host_checks(perm.device):  # rare: check only rows starting with slot 0, fix those
            flat = perm.view(-1, n)
            rows = (flat[:, 0] == 0).nonzero().squeeze(1)
            rows = rows[(flat[rows] == slots).all(dim=-1)]
            flat[rows] = flat[rows].roll(1, dims=-1)
        else:  # no host synchronisation on accelerators
            ident = (perm == slots).all(dim=-1, keepdim=True)
            # an identity row rolled by one is (k - 1) mod n: an n-element constant, not a roll of every row
            perm = torch.where(ident, torch.remainder(slots - 1, n), perm)
    return perm


def tile_permutations(words: torch.Tensor, regions: torch.Tensor, level: int, channels: int, ntiles: int):
    """``(G, channels, ntiles)`` int32 tile permutations of rows (image words ``words[g]``,
    region ``regions[g]``) at ``level``: output slot ``k`` takes source tile ``perm[k]``."""
    a, b = row_keys(words, regions, level, channels)
    return permutations(a, b, ntiles, avoid_identity=True)


def channel_permutations(words: torch.Tensor, regions: torch.Tensor, channels: int) -> torch.Tensor:
    """``(G, channels)`` int32 channel orders (uniform over all orders): output channel ``c``
    of region ``regions[g]`` takes source channel ``perm[c]``."""
    a, b = row_keys(words, regions, _CHANNEL_PURPOSE, 1)
    return permutations(a[:, 0], b[:, 0], channels, avoid_identity=False)
