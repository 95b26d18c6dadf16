"""Balanced dealing of a mixing group's regions to its collages (:mod:`visualmixer.core.mixing`).

A group of ``v`` members is dealt over ``R`` region positions: at every position a permutation
says which member's region each collage takes. *Balanced* means every collage holds each
member's regions at ``floor(R / v)`` or ``ceil(R / v)`` positions, so no source dominates a
collage. Two constructions, both keyed by one word per group and computed with integer tensor
operations (the same bits on every device):

- ``"cyclic"`` (format version 3): the members in one keyed cycle, each position a keyed shift
  of it. Every position's permutation is then a power of the *same* cycle, and an attacker who
  fits that one cycle threads a group's regions across positions (docs/privacy.md, §4c).
- ``"switched"`` (format version 4, the default): start from a cyclic deal with an independent
  keyed cycle per block of ``v`` positions, then apply a fixed number of keyed rounds of moves
  that keep the balance exactly: *row-cycle switches* (two positions exchange their members on a
  union of cycles of the permutation between them; every collage keeps the same members, each
  position stays a permutation) and *balanced transpositions* (at one position two collages
  exchange members where both collages' counts stay within ``floor``/``ceil``). No structure is
  then shared across positions but the balance itself.

Everything a group's deal depends on is its own word, ``v`` and ``R``: never the other groups of
the call, nor the padded width of the batch, so chunked and whole-set runs deal alike.
"""

from __future__ import annotations

import torch

__all__ = ["DESIGNS", "SWITCH_ROUNDS", "cyclic_deal", "mix64", "switched_deal"]

#: Balanced constructions by name (module docstring).
DESIGNS = ("cyclic", "switched")

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic on every device)
GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
SLOT = 0xD1B54A32D192ED03 - (1 << 64)
# salts of the keyed orders (members in a cycle, positions by shift, blocks, rounds)
_CYCLE = 0x2545F4914F6CDD1D
_SHIFT = 0x5851F42D4C957F2D
_BLOCK = 0x369DEA0F31A53F85
_ROUND = 0x4F1BBCDCBFA53E0B
_MAX = torch.iinfo(torch.long).max

#: Keyed switching rounds of a "switched" deal (each moves every position; part of the format).
SWITCH_ROUNDS = 16


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 words (``>>`` on int64 is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 words (wrapping arithmetic, same bits on CPU and GPU)."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _below(words: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Words to integers in ``[0, n)`` (``n`` broadcast; the modulo bias is below 2**-56)."""
    return _shr(words, 1) % n


def _rank(words: torch.Tensor) -> torch.Tensor:
    """The rank of every entry of the last dimension in the order of ``words`` (stable)."""
    order = torch.argsort(words, dim=-1, stable=True)
    pos = torch.arange(words.shape[-1], device=words.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, pos)


def _cyclic(cycle: torch.Tensor, shift: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(G, R, M)``: collage ``cycle[i]`` takes member ``cycle[(i + shift) mod v]``; empty slots
    (``i >= v``) stay in place. ``cycle`` is ``(G, R, M)`` or ``(G, 1, M)``, ``shift`` ``(G, R)``."""
    g, regions = shift.shape
    m = cycle.shape[-1]
    i = torch.arange(m, device=cycle.device, dtype=torch.long).view(1, 1, m)
    v3 = v.view(g, 1, 1)
    shifted = torch.where(i < v3, (i + shift.view(g, regions, 1) % v3) % v3, i)
    cycle = cycle.expand(g, regions, m)
    out = torch.empty(g, regions, m, dtype=torch.long, device=cycle.device)
    return out.scatter_(2, cycle, cycle.gather(2, shifted))


def _cycle_order(words: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Slots in keyed order along the last dimension, empty slots last (in place)."""
    return torch.argsort(torch.where(valid, words, _MAX), dim=-1, stable=True)


def cyclic_deal(seeds: torch.Tensor, valid: torch.Tensor, regions: int) -> torch.Tensor:
    """``(G, R, M)`` int64: the ``"cyclic"`` balanced deal (format version 3; module docstring).

    ``seeds`` is ``(G,)`` int64 (one keyed word per group), ``valid`` ``(G, M)`` bool (the slots
    that hold a member). ``out[g, r, s]`` is the slot whose region collage ``s`` takes at position
    ``r``; empty slots map to themselves.
    """
    g, m = valid.shape
    device = valid.device
    v = valid.sum(dim=1)
    s = torch.arange(m, device=device, dtype=torch.long).view(1, m)
    cycle = _cycle_order(mix64(seeds.view(g, 1) + _CYCLE + s * SLOT), valid)  # (G, M)
    r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions)
    rank = _rank(mix64(seeds.view(g, 1) + _SHIFT + r * GOLDEN))  # (G, R)
    return _cyclic(cycle.view(g, 1, m), rank, v)


def switched_deal(seeds: torch.Tensor, valid: torch.Tensor, regions: int, *,
                  rounds: int = SWITCH_ROUNDS) -> torch.Tensor:
    """``(G, R, M)`` int64: the ``"switched"`` balanced deal (format version 4; module docstring).

    Arguments and result as :func:`cyclic_deal`. ``rounds`` keyed switching rounds: each pairs
    all positions for row-cycle switches and proposes one balanced transposition per position.
    """
    g, m = valid.shape
    v = valid.sum(dim=1)
    out = torch.arange(m, device=valid.device).repeat(g, regions, 1)
    if g == 0:
        return out
    # the filled slots first (records fill from the left; a hand-made row may have gaps)
    slot = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # (G, M): compact -> slot
    # groups in buckets of like size (a group's deal never depends on the padding, so this only
    # saves work: a few large remainder groups would otherwise widen every group's tensors)
    sizes = v.tolist()
    width = torch.tensor([1 << (n - 1).bit_length() if n > 1 else 0 for n in sizes], device=valid.device)
    for w in sorted(set(width.tolist()) - {0}):  # a loop over group-size classes (powers of two)
        sel = (width == w).nonzero().view(-1)
        compact = torch.arange(w, device=valid.device).view(1, w) < v[sel].view(-1, 1)
        deal = _switched(seeds[sel], compact, regions, rounds)[:, :, :min(w, m)]  # (S, R, <= M)
        here = slot[sel, : deal.shape[2]].unsqueeze(1).expand_as(deal)  # compact index -> slot
        filled = out[sel]
        filled.scatter_(2, here, here.gather(2, deal))
        out[sel] = filled
    return out


def _switched(seeds: torch.Tensor, valid: torch.Tensor, regions: int, rounds: int) -> torch.Tensor:
    g, m = valid.shape
    device = valid.device
    v = valid.sum(dim=1)  # (G,)
    s = torch.arange(m, device=device, dtype=torch.long)
    r = torch.arange(regions, device=device, dtype=torch.long)
    rank = _rank(mix64(seeds.view(g, 1) + _SHIFT + r.view(1, regions) * GOLDEN))  # (G, R)
    block = rank // v.view(g, 1)  # blocks of v positions, each with its own cycle
    words = mix64(seeds.view(g, 1, 1) + _CYCLE + block.view(g, regions, 1) * _BLOCK + s.view(1, 1, m) * SLOT)
    deal = _cyclic(_cycle_order(words, valid.view(g, 1, m)), rank, v)
    for t in range(int(rounds)):  # a fixed count of rounds, each batched over groups and positions
        salt = mix64(seeds + _ROUND + torch.tensor(t, device=device) * GOLDEN)  # (G,)
        _row_switches_(deal, salt, v)
        _transpositions_(deal, salt, v)
    return deal


def _row_switches_(deal: torch.Tensor, salt: torch.Tensor, v: torch.Tensor) -> None:
    """Pair the positions by a keyed order; each pair exchanges its members on a keyed union of
    the cycles of the permutation between the two positions (collages keep their members)."""
    g, regions, m = deal.shape
    half = regions // 2
    if half == 0:
        return
    r = torch.arange(regions, device=deal.device, dtype=torch.long)
    order = torch.argsort(mix64(salt.view(g, 1) + r.view(1, regions) * GOLDEN), dim=1, stable=True)
    first = order[:, 0:2 * half:2].unsqueeze(2).expand(g, half, m)
    second = order[:, 1:2 * half:2].unsqueeze(2).expand(g, half, m)
    p1, p2 = deal.gather(1, first), deal.gather(1, second)
    s = torch.arange(m, device=deal.device, dtype=torch.long)
    step = torch.empty_like(p2).scatter_(2, p2, s.expand_as(p2)).gather(2, p1)  # collage -> the one holding,
    label = s.expand_as(step)                                          # second, its member at the first
    for _ in range(max(1, (m - 1).bit_length())):  # orbit minimum by pointer doubling
        label = torch.minimum(label, label.gather(2, step))
        step = step.gather(2, step)
    pair = mix64(salt.view(g, 1) + _CYCLE + r[:half].view(1, half) * GOLDEN).unsqueeze(2)  # (G, half, 1)
    # 64 coin bits per word: the pair's word for cycles whose smallest slot is below 64, then one
    # more word per further 64 slots
    word = torch.where(label < 64, pair, mix64(pair + ((label >> 6) - 1) * GOLDEN))
    bits = word >> (label & 63)
    take = (bits & 1).bool() & (label < v.view(g, 1, 1))  # each cycle with probability 1/2
    deal.scatter_(1, first, torch.where(take, p2, p1))
    deal.scatter_(1, second, torch.where(take, p1, p2))


def _transpositions_(deal: torch.Tensor, salt: torch.Tensor, v: torch.Tensor, tries: int = 4) -> None:
    """At every position propose to exchange the members of two collages; accept where every
    count stays at ``floor(R / v)`` or ``ceil(R / v)``, at most one move per collage per round."""
    g, regions, m = deal.shape
    device = deal.device
    r = torch.arange(regions, device=device, dtype=torch.long).view(1, regions)
    vv = v.clamp(min=1).view(g, 1)
    lo = regions // vv  # (G, 1)
    base = mix64(salt.view(g, 1) + _SHIFT + r * GOLDEN)  # (G, R): one proposal per position
    c1 = _below(mix64(base + 1), vv)
    a = deal.gather(2, c1.unsqueeze(2)).squeeze(2)
    cand = _below(mix64(base.unsqueeze(2) + 2 + torch.arange(tries, device=device) * SLOT), vv.unsqueeze(2))
    s = torch.arange(m, device=device, dtype=torch.long)
    counts = torch.zeros(g, m * m, dtype=torch.int32, device=device)  # [g, c * m + x]: positions dealing x to c
    one = torch.ones(1, dtype=torch.int32, device=device)
    counts.scatter_add_(1, (s * m + deal).view(g, -1), one.expand(g, regions * m))

    def held(c, x):
        return counts.gather(1, c * m + x).view(x.shape)

    low = held(c1.unsqueeze(2).expand_as(cand).reshape(g, -1), cand.reshape(g, -1)).view(cand.shape) == lo.unsqueeze(2)
    b = cand.gather(2, low.int().argmax(dim=2, keepdim=True)).squeeze(2)  # the first under-dealt member
    c2 = torch.empty_like(deal).scatter_(2, deal, s.expand_as(deal)).gather(2, b.unsqueeze(2)).squeeze(2)
    ok = (held(c1, a) == lo + 1) & (held(c1, b) == lo) & (held(c2, b) == lo + 1) & (held(c2, a) == lo)
    prio = torch.where(ok, (_shr(mix64(base + 3), 17) << 16) | r, -1)  # unique per position
    best = torch.full((g, m), -1, dtype=torch.long, device=device)
    best = best.scatter_reduce(1, c1, prio, "amax").scatter_reduce(1, c2, prio, "amax")
    move = ok & (best.gather(1, c1) == prio) & (best.gather(1, c2) == prio)
    deal.scatter_(2, c1.unsqueeze(2), torch.where(move, b, a).unsqueeze(2))
    deal.scatter_(2, c2.unsqueeze(2), torch.where(move, a, b).unsqueeze(2))

