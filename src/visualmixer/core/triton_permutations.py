"""Generator 2's permutations in one Triton kernel: slot keys, row sort and identity fix fused.

On a GPU the eager :func:`visualmixer.core.keyed.permutations` is some twenty element-wise
kernels over every tile slot of every row (two murmur finalisers) and a segmented radix sort;
at 224² batch 256 the sort of the 256-slot rows alone took 3.1 ms of a 14.6 ms obfuscate on an
H200, the mixing about 3 ms more. Here one program takes a block of rows, computes their packed
slot keys in registers, sorts each row (``tl.sort``, a bitonic network) and writes only the slot
indices: the row keys are read and the permutations written, nothing in between.

The keys are unique within a row (their low bits are the slot), so any correct sort gives the
order the eager path gives: the same integers (tested on the CPU in Triton's interpreter,
``TRITON_INTERPRET=1``, and on CUDA against the CPU). Rows that are not a power of two long are
padded with ``INT32_MAX``, which every real key of the row is below (its low bits are ``< n``).

This module imports Triton at import; :mod:`visualmixer.core.keyed` imports it only when the
kernel is switched on (``VISUALMIXER_TRITON=1``) and the tensors are on a CUDA device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["MAX_SLOTS", "permutations"]

#: The longest row the kernel sorts (a 32-pixel region cut into single pixels); longer rows
#: stay on the eager path.
MAX_SLOTS = 1024

# (Triton reads module constants only as tl.constexpr instances)
_GOLDEN = tl.constexpr(0x9E3779B9 - (1 << 32))  # as int32; keyed._GOLDEN
_C1 = tl.constexpr(0x85EBCA6B - (1 << 32))
_C2 = tl.constexpr(0xC2B2AE35 - (1 << 32))
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


def permutations(a: torch.Tensor, b: torch.Tensor, n: int, avoid_identity: bool) -> torch.Tensor:
    """``(..., n)`` int32 permutations from int32 row keys ``a, b`` (same shape ``(...)``):
    :func:`visualmixer.core.keyed.permutations`, element for element, for ``2 <= n <= MAX_SLOTS``."""
    if not 2 <= n <= MAX_SLOTS:
        raise ValueError(f"n must be in [2, {MAX_SLOTS}], got {n}")
    flat_a = a.reshape(-1).contiguous()
    flat_b = b.reshape(-1).contiguous()
    rows = flat_a.numel()
    out = torch.empty(a.shape + (n,), dtype=torch.int32, device=a.device)
    if rows == 0:
        return out
    slots = triton.next_power_of_2(n)
    per_program = max(1, _BLOCK_VALUES // slots)
    bits = (n - 1).bit_length()
    keep = ~((1 << bits) - 1)
    _permutations_kernel[(triton.cdiv(rows, per_program),)](
        flat_a, flat_b, out, rows, n, keep, (1 << bits) - 1,
        AVOID_IDENTITY=avoid_identity, ROWS=per_program, SLOTS=slots)
    return out
