"""The core's Triton kernels for CUDA: work the eager path runs as many small kernels, fused.

- :func:`lane_keys` — generator 2's row keys (:func:`visualmixer.core.keyed.lane_keys`): eight
  murmur finalisers per (row, lane), some ninety element-wise kernels eagerly, in one.
- :func:`permutations` — generator 2's tile permutations (:func:`visualmixer.core.keyed.permutations`):
  one program takes a block of rows, computes their packed slot keys in registers (two murmur
  finalisers), sorts each row (``tl.sort``, a bitonic network) and writes only the slot indices.
  At 224² batch 256 on an H200 the eager sort of the 256-slot rows alone took 3.1 ms of a
  14.6 ms obfuscate, the slot-key mixing some 2-3 ms more. The keys are unique within a row
  (their low bits are the slot), so any correct sort gives the eager order. Rows that are not
  a power of two long are padded with ``INT32_MAX``, above every real key of the row.
- :func:`pair_sums` — the planner's exact pixel-pair sums of uint8 regions
  (``visualmixer.core.planner``): each region's value sum, sum of squares and squared
  differences of neighbours by column and row offset, read once instead of in some ten
  full-batch passes and strided reductions; or only the pairs across tile seams.

Every result is the eager path's integers (tested on the CPU in Triton's interpreter,
``TRITON_INTERPRET=1``, built ahead of time for sm_90, and on CUDA against the CPU where a GPU
is present). This module imports Triton; :mod:`visualmixer.core.triton_switch` imports it only
when the kernels are switched on and a call applies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from visualmixer.core import keyed

__all__ = ["MAX_SLOTS", "MAX_REGION", "MAX_LANES", "lane_keys", "permutations", "pair_sums", "launch_shapes"]

#: The longest row :func:`permutations` sorts (a 32-pixel region cut into single pixels).
MAX_SLOTS = 1024
#: The largest region side :func:`pair_sums` takes.
MAX_REGION = 32
#: The most counter lanes :func:`lane_keys` takes (the ladder's 15 levels x 4 channels + 1).
MAX_LANES = 64

# generator 2's constants (Triton reads module constants only as tl.constexpr instances)
_GOLDEN = tl.constexpr(keyed._GOLDEN)
_C1 = tl.constexpr(keyed._C1)
_C2 = tl.constexpr(keyed._C2)
_INT32_MAX = tl.constexpr(0x7FFFFFFF)
_BLOCK_VALUES = 2048  # values per program: rows x (row length rounded up to a power of two)


@triton.jit
def _fmix(h):
    """murmur3's 32-bit finaliser on int32 (wrapping; logical shifts by masking), as keyed._fmix_."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _C1
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _C2
    return h ^ ((h >> 16) & 0xFFFF)


@triton.jit(do_not_specialize=["rows"])  # (one build per block shape, not per batch size)
def _lane_keys_kernel(words_ptr, regions_ptr, lanes_ptr, a_ptr, b_ptr, rows, lanes,
                      ROWS: tl.constexpr, LANES: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = row < rows
    lane = tl.arange(0, LANES)
    region = tl.load(regions_ptr + row, mask=live, other=0)
    counter = tl.load(lanes_ptr + lane, mask=lane < lanes, other=0)
    words = words_ptr + row.to(tl.int64) * 8
    h = (region * 64)[:, None] + counter[None, :] + tl.load(words, mask=live, other=0)[:, None]
    h = _fmix(h)
    for i in tl.static_range(1, 4):
        h = _fmix(h ^ tl.load(words + i, mask=live, other=0)[:, None])
    a = h
    for i in tl.static_range(4, 8):
        h = _fmix(h ^ tl.load(words + i, mask=live, other=0)[:, None])
    at = row[:, None] * lanes + lane[None, :]
    keep = live[:, None] & (lane[None, :] < lanes)
    tl.store(a_ptr + at, a, mask=keep)
    tl.store(b_ptr + at, h, mask=keep)


def lane_keys(words: torch.Tensor, regions: torch.Tensor, lanes: torch.Tensor):
    """Row keys ``(a, b)``, each ``(G, K)`` int32: :func:`visualmixer.core.keyed.lane_keys` of
    int32 key words ``(G, 8)``, region indices ``(G,)`` and counter lanes ``(K,)``, element for
    element; None for more than :data:`MAX_LANES` lanes (the eager path's)."""
    k = lanes.numel()
    if k > MAX_LANES:
        return None
    rows = words.shape[0]
    a = torch.empty((rows, k), dtype=torch.int32, device=words.device)
    b = torch.empty_like(a)
    if rows and k:
        width = triton.next_power_of_2(k)
        per_program = max(1, _BLOCK_VALUES // width)
        _lane_keys_kernel[(triton.cdiv(rows, per_program),)](
            words.to(torch.int32).contiguous(), regions.to(torch.int32).contiguous(),
            lanes.to(torch.int32).contiguous(), a, b, rows, k, ROWS=per_program, LANES=width)
    return a, b


@triton.jit(do_not_specialize=["rows"])  # (one build per row length, not per batch size)
def _permutations_kernel(a_ptr, b_ptr, out_ptr, rows, n, keep, low,
                         AVOID_IDENTITY: tl.constexpr, ROWS: tl.constexpr, SLOTS: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = row < rows
    a = tl.load(a_ptr + row, mask=live, other=0)
    b = tl.load(b_ptr + row, mask=live, other=0)
    k = tl.arange(0, SLOTS)
    s = _fmix(a[:, None] + k[None, :] * _GOLDEN)
    s = _fmix(s ^ b[:, None])
    s = (s & keep) | k[None, :]
    real = k[None, :] < n
    s = tl.where(real, s, _INT32_MAX)  # padding sorts after every real key of the row
    perm = tl.sort(s, 1) & low
    if AVOID_IDENTITY:  # a row that came out as the identity takes slot k - 1 (mod n), as keyed
        moved = tl.where(real & (perm != k[None, :]), 1, 0)
        identity = tl.max(moved, 1) == 0
        perm = tl.where(identity[:, None], (k[None, :] + n - 1) % n, perm)
    tl.store(out_ptr + row[:, None] * n + k[None, :], perm, mask=live[:, None] & real)


def permutations(a: torch.Tensor, b: torch.Tensor, n: int, avoid_identity: bool) -> torch.Tensor | None:
    """``(..., n)`` int32 permutations from int32 row keys ``a, b`` (same shape ``(...)``):
    :func:`visualmixer.core.keyed.permutations`, element for element, for ``2 <= n``; None for
    rows longer than :data:`MAX_SLOTS` (the eager path's)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if n > MAX_SLOTS:
        return None
    flat_a = a.reshape(-1).contiguous()
    flat_b = b.reshape(-1).contiguous()
    rows = flat_a.numel()
    out = torch.empty(a.shape + (n,), dtype=torch.int32, device=a.device)
    if rows == 0:
        return out
    slots = triton.next_power_of_2(n)
    per_program = max(1, _BLOCK_VALUES // slots)
    bits = (n - 1).bit_length()
    _permutations_kernel[(triton.cdiv(rows, per_program),)](
        flat_a, flat_b, out, rows, n, ~((1 << bits) - 1), (1 << bits) - 1,
        AVOID_IDENTITY=avoid_identity, ROWS=per_program, SLOTS=slots)
    return out


@triton.jit
def _squared_steps(x_ptr, base, i, j, r, DI: tl.constexpr, DJ: tl.constexpr):
    """Squared difference of each pixel (i, j) and its neighbour (i + DI, j + DJ), 0 where the
    neighbour is outside the region: int32 ``(ROWS, SIDE, SIDE)``."""
    inside = (i + DI < r) & (j + DJ < r)
    here = tl.load(x_ptr + base + i * r + j, mask=inside, other=0).to(tl.int32)
    there = tl.load(x_ptr + base + (i + DI) * r + (j + DJ), mask=inside, other=0).to(tl.int32)
    return (there - here) * (there - here)


@triton.jit(do_not_specialize=["rows"])
def _pair_sums_kernel(x_ptr, rows, r, t, total_ptr, sumsq_ptr, col_ptr, row_ptr, seam_ptr,
                      SEAMS: tl.constexpr, ROWS: tl.constexpr, SIDE: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = row < rows
    i = tl.arange(0, SIDE)[None, :, None]  # pixel row in the region
    j = tl.arange(0, SIDE)[None, None, :]  # pixel column
    base = row.to(tl.int64)[:, None, None] * (r * r)
    horizontal = _squared_steps(x_ptr, base, i, j, r, 0, 1)  # (i, j) and (i, j + 1)
    vertical = _squared_steps(x_ptr, base, i, j, r, 1, 0)  # (i, j) and (i + 1, j)
    if SEAMS:  # only pairs across tile seams (j + 1 a multiple of t): their sum per region
        horizontal = tl.where((j + 1) % t == 0, horizontal, 0)
        vertical = tl.where((i + 1) % t == 0, vertical, 0)
        seam = tl.sum(tl.sum(horizontal + vertical, 2), 1)
        tl.store(seam_ptr + row, seam, mask=live)
    else:
        x = tl.load(x_ptr + base + i * r + j, mask=(i < r) & (j < r), other=0).to(tl.int32)
        tl.store(total_ptr + row, tl.sum(tl.sum(x, 2), 1), mask=live)
        tl.store(sumsq_ptr + row, tl.sum(tl.sum(x * x, 2), 1), mask=live)
        offset = tl.arange(0, SIDE)[None, :]
        keep = live[:, None] & (offset < r - 1)
        tl.store(col_ptr + row[:, None] * (r - 1) + offset, tl.sum(horizontal, 1), mask=keep)  # by column
        tl.store(row_ptr + row[:, None] * (r - 1) + offset, tl.sum(vertical, 2), mask=keep)  # by row


def pair_sums(regions: torch.Tensor, tile: int = 0):
    """Exact pixel-pair sums of uint8 regions ``(..., R, R)``, ``2 <= R <= MAX_REGION``, int32.

    With ``tile`` 0: ``(pairs, total, sum of squares, by column, by row)`` — ``(...)`` each, the
    last two ``(..., R - 1)``: the squared differences of horizontal neighbours summed by column
    offset ``j`` (pixels ``j`` and ``j + 1``) and of vertical neighbours by row offset, and
    ``pairs`` all of them (the planner's ``_float_sums``). With ``tile`` ``t`` (``1 <= t < R``):
    ``(...)``, the squared differences of the pairs across the seams of ``t``-sided tiles only
    (the planner's two ``_seam_sum`` calls added). None where ``R`` is out of range.
    """
    r = regions.shape[-1]
    if not 2 <= r <= MAX_REGION or regions.dtype != torch.uint8 or regions.shape[-2] != r:
        return None
    lead = regions.shape[:-2]
    x = regions.contiguous()
    rows = x.numel() // (r * r)
    side = triton.next_power_of_2(r)
    per_program = max(1, _BLOCK_VALUES // (side * side))
    grid = (max(1, triton.cdiv(rows, per_program)),)

    def new(*shape):
        return torch.empty(lead + shape, dtype=torch.int32, device=x.device)

    if tile:
        seam = new()
        if rows:
            _pair_sums_kernel[grid](x, rows, r, tile, seam, seam, seam, seam, seam,
                                    SEAMS=True, ROWS=per_program, SIDE=side)
        return seam
    total, sumsq, col, row = new(), new(), new(r - 1), new(r - 1)
    if rows:
        _pair_sums_kernel[grid](x, rows, r, 1, total, sumsq, col, row, total,
                                SEAMS=False, ROWS=per_program, SIDE=side)
    return col.sum(-1, dtype=torch.int32) + row.sum(-1, dtype=torch.int32), total, sumsq, col, row


def launch_shapes():
    """``(label, kernel, signature, constants)`` of every block shape the core launches — lane
    keys of 4-64 lanes, permutations of 4-1024 slots, pair sums of 8-32 px regions (all pairs; seams only) — for
    building them ahead of time with ``triton.compile`` (``benchmarks/triton_build.py``)."""
    pointers = {name: "*i32" for name in ("a_ptr", "b_ptr", "out_ptr")}
    for lanes in (4, 16, 64):  # (a single level; the ladder of 1-3 channels; of 4)
        constants = {"ROWS": _BLOCK_VALUES // lanes, "LANES": lanes}
        signature = {name: "*i32" for name in ("words_ptr", "regions_ptr", "lanes_ptr", "a_ptr", "b_ptr")}
        yield (f"lane keys, {lanes} lanes", _lane_keys_kernel,
               _with(signature | {"rows": "i32", "lanes": "i32"}, constants), constants)
    for slots in (4, 16, 64, 256, 1024):
        constants = {"AVOID_IDENTITY": True, "ROWS": max(1, _BLOCK_VALUES // slots), "SLOTS": slots}
        signature = pointers | {name: "i32" for name in ("rows", "n", "keep", "low")}
        yield f"permutations, {slots} slots", _permutations_kernel, _with(signature, constants), constants
    outputs = {name: "*i32" for name in ("total_ptr", "sumsq_ptr", "col_ptr", "row_ptr", "seam_ptr")}
    for side in (8, 16, 32):
        for seams in (False, True):
            constants = {"SEAMS": seams, "ROWS": max(1, _BLOCK_VALUES // side**2), "SIDE": side}
            signature = {"x_ptr": "*u8"} | outputs | {name: "i32" for name in ("rows", "r", "t")}
            yield (f"pair sums, {side} px{', seams' if seams else ''}", _pair_sums_kernel,
                   _with(signature, constants), constants)


def _with(signature: dict, constants: dict) -> dict:
    return signature | {name: "constexpr" for name in constants}
