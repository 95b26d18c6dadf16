"""Per-slot transforms of attack A7 from seams pooled over the whole released set.

Once A7 has put every block back in place, each slot still carries its key-wide transform (turn,
mirror, negation, channel order: the same in every image). Class-mean blocks pick it well where
the classes pin the block's look; they do not where the content varies from image to image (a
random tint, random backgrounds). Seams do: in every image, the pixels on either side of the
border between two neighbouring blocks are alike, and every image carries the same transforms,
so the mean squared difference across each border, over all released images, is small only for
the right transforms of the two slots — whatever the tint, which varies from image to image but
is the same on both sides of a seam (so the channel orders are pinned too).

The seams' cost is a sum over the borders of the grid (a pairwise Markov random field, one label
per slot out of the candidate transforms); it is minimised by iterated conditional modes (each
slot in turn takes its best transform given its neighbours', until none changes), starting from
the class-mean choice. Seams cannot tell the transforms from the same channel order and negation
applied to every slot on top; that one global choice is left to the class means.

Everything is computed from per-slot first and second moments of the block pixels, so the cost
does not grow with the number of images beyond one pass over them.
"""

from __future__ import annotations

import torch

__all__ = ["seam_transforms"]

#: How much the class-mean cost counts beside the seams' (as a share of their spreads).
CLASS_WEIGHT = 1e-3


def _edges(gh: int, gw: int) -> list[tuple[int, int, bool]]:
    """The grid's borders ``(slot, neighbour, vertical)``: the neighbour right of or below the slot."""
    out = []
    for r in range(gh):
        for c in range(gw):
            if c + 1 < gw:
                out.append((r * gw + c, r * gw + c + 1, False))
            if r + 1 < gh:
                out.append((r * gw + c, (r + 1) * gw + c, True))
    return out


def _pair_cost(xs, xt, m1, m2, s, t, near, far, negs) -> torch.Tensor:
    """``(T, T)``: the mean over images of the squared difference between the side ``near[a]``
    of slot ``s`` under transform ``a`` and the facing side ``far[b]`` of slot ``t`` under ``b``.
    ``near``/``far``: ``(T, L)`` pixel indices into the flattened block; ``negs``: ``(T,)`` bool."""
    n = xs.shape[0]
    cross = (xs.T @ xt) / n  # (D, D): E[x_s[i] x_t[j]]
    sign = torch.where(negs, -1.0, 1.0).double()
    off = negs.double()

    def square(slot, idx):  # E|side|^2 of every candidate: (T,)
        plain = m2[slot][idx].sum(dim=1)
        flipped = (1.0 - 2.0 * m1[slot] + m2[slot])[idx].sum(dim=1)
        return torch.where(negs, flipped, plain)

    length = near.shape[1]
    xy = cross[near[:, None, :], far[None, :, :]].sum(dim=2)  # (T, T)
    mu_s, mu_t = m1[s][near].sum(dim=1), m1[t][far].sum(dim=1)  # (T,)
    prod = (sign[:, None] * sign[None, :] * xy + sign[:, None] * off[None, :] * mu_s[:, None]
            + off[:, None] * sign[None, :] * mu_t[None, :] + off[:, None] * off[None, :] * length)
    return (square(s, near)[:, None] + square(t, far)[None, :] - 2.0 * prod) / length


def _tables(blocks: torch.Tensor, maps: torch.Tensor, negs: torch.Tensor, grid: tuple[int, int]):
    """Every border's ``(T, T)`` seam cost, as ``[(slot, neighbour, table)]``."""
    n, g = blocks.shape[:2]
    x = blocks.reshape(n, g, -1).double()  # (N, G, D)
    m1, m2 = x.mean(dim=0), (x * x).mean(dim=0)
    t = maps.shape[0]
    right, left = maps[..., -1].reshape(t, -1), maps[..., 0].reshape(t, -1)
    bottom, top = maps[..., -1, :].reshape(t, -1), maps[..., 0, :].reshape(t, -1)
    out = []
    for s, u, vertical in _edges(*grid):  # a loop over the borders, each batched over candidate pairs
        near, far = (bottom, top) if vertical else (right, left)
        out.append((s, u, _pair_cost(x[:, s], x[:, u], m1, m2, s, u, near, far, negs)))
    return out


def _icm(label: torch.Tensor, tables, unary: torch.Tensor, max_sweeps: int = 50) -> torch.Tensor:
    """Iterated conditional modes: each slot in turn takes its cheapest candidate given its
    neighbours' labels, until a sweep changes nothing."""
    g, t = unary.shape
    around: list[list[tuple[torch.Tensor, int, bool]]] = [[] for _ in range(g)]
    for s, u, tab in tables:
        around[s].append((tab, u, True))
        around[u].append((tab, s, False))
    label = label.clone()
    for _ in range(max_sweeps):  # bounded sweeps over the slots
        changed = False
        for s in range(g):
            cost = unary[s].clone()
            for tab, other, first in around[s]:
                cost += tab[:, label[other]] if first else tab[label[other], :]
            best = int(cost.argmin())
            if cost[best] < cost[label[s]] - 1e-12:
                label[s], changed = best, True
        if not changed:
            break
    return label


def _globals(maps: torch.Tensor, negs: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """The candidates that move no pixel within its channel (channel orders, negation), each with
    ``(T,)`` the candidate equal to ``a`` followed by it (``-1``: none)."""
    t = maps.shape[0]
    flat = maps.reshape(t, -1)
    plane = maps[0, 0].numel()
    key = {(tuple(flat[i].tolist()), bool(negs[i])): i for i in range(t)}
    out = []
    for h in range(t):  # a loop over the candidates, on small index maps
        if not bool((flat[h] % plane == torch.arange(flat.shape[1]) % plane).all()):
            continue
        both = flat[:, flat[h]]  # (T, D): candidate a, then h
        out.append((h, torch.tensor([key.get((tuple(both[a].tolist()), bool(negs[a]) ^ bool(negs[h])), -1)
                                     for a in range(t)], dtype=torch.int64)))
    return out


def seam_transforms(
    blocks: torch.Tensor,
    start: torch.Tensor,
    class_cost: torch.Tensor,
    maps: torch.Tensor,
    negs: torch.Tensor,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Choose every slot's transform by its seams with its neighbours, pooled over the images.

    Parameters
    ----------
    blocks : torch.Tensor
        ``(N, G, C, b, b)`` float blocks of the released images, back in place (row-major slots).
    start : torch.Tensor
        ``(G,)`` int64 first guess (the class-mean choice).
    class_cost : torch.Tensor
        ``(T, G)`` float64 class-mean cost of every candidate at every slot (``inf``: excluded).
    maps, negs : torch.Tensor
        ``(T, C, b, b)`` int64: the flattened-block index each output pixel of a candidate comes
        from; ``(T,)`` bool: whether the candidate negates.
    grid : (int, int)
        Rows and columns of slots.

    Returns
    -------
    torch.Tensor
        ``(G,)`` int64 indices of the candidates.
    """
    t, g = class_cost.shape
    if g < 2:
        return start
    tables = _tables(blocks, maps, negs, grid)
    finite = torch.isfinite(class_cost)
    spread = torch.stack([tab.std() for _, _, tab in tables]).mean()
    unary = torch.where(finite, class_cost, torch.zeros((), dtype=torch.float64))
    scale = (unary[finite].std() if finite.sum() > 1 else torch.ones((), dtype=torch.float64)).clamp_min(1e-12)
    unary = torch.where(finite, CLASS_WEIGHT * spread / scale * unary, float("inf")).T.contiguous()  # (G, T)
    label = _icm(start, tables, unary)
    best, best_cost = label, float("inf")
    for _, then in _globals(maps, negs):  # the global channel orders / negation the seams cannot see
        moved = then[label]
        if bool((moved < 0).any()) or not bool(torch.isfinite(unary[torch.arange(g), moved]).all()):
            continue
        cost = float(class_cost[moved, torch.arange(g)].sum())  # the class means decide
        if cost < best_cost:
            best, best_cost = moved, cost
    return best
