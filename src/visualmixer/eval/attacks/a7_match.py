"""The layout matcher of attack A7: which released block slot sat at which position.

Every image of the released set carries the same secret block layout, so anything measured per
slot can be pooled over the whole set. Two kinds of evidence, both computed from per-image block
statistics that survive the slot's key-wide turn, mirror and channel order and an in-region pixel
shuffle (the block's mean and its pixel spread; a negation flips the sign of the mean):

- **where** a slot belongs: per class, the mean of each statistic over the released images
  against the attacker's own clean images at each position (what aligned data give away);
- **what lies next to what** (a pooled jigsaw): across the released images, the correlation of
  slot ``i``'s statistics with slot ``j``'s. Neighbouring blocks of real images move together
  (a bright block has bright neighbours), so the slots' correlation matrix is the attacker's
  correlation matrix between positions, re-ordered by the layout — even where no class anchors
  a position (randomly cropped photos).

Both are scored as squared standardised errors (a Gaussian log-likelihood: the class means by
their standard errors, the correlations by ``(1 - r²)² (1/N + 1/M)``) and the layout minimising
the sum is searched as a quadratic assignment problem: the Hungarian solution of the first term as
the start, then steepest descent over all swaps of two slots (every swap's change computed at once
from two matrix products), restarted from random perturbations of the best layout so far for a
bounded number of rounds, and the 8 (4) symmetries of the square (oblong) grid tried at the end.

Where every block of the attacker's images rises and falls together (their correlation matrix
near rank one, :func:`near_rank_one`), the correlations carry no layout and
:func:`~visualmixer.eval.attacks.a7_layout.recover_layout` falls back to its ``"means"`` matcher.
A slot's negation comes from the correlations too: a negated slot correlates negatively with its
neighbours, so the signs of the leading eigenvector of the mean's correlation matrix say which
slots share a sign; which sign is the original one is decided by the class means.
"""

from __future__ import annotations

import torch

__all__ = ["block_statistics", "match_layout", "near_rank_one"]

#: Least within-class variance of a statistic, as a share of its mean over classes and positions.
VAR_FLOOR = 0.05
#: A slot's negation is decided by its class means alone when they favour one sign by this much
#: (log-likelihood); otherwise by the sign of its correlations with the others.
DECISIVE = 10.0
#: The jigsaw is left out where the leading eigenvalue of the attacker's correlations between the
#: positions' block means holds more than this share of their sum: every block rises and falls
#: together, so the correlations say nothing about who neighbours whom (only noise).
RANK_ONE = 0.95


def block_statistics(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(N, G, 2)`` float64 per image and full block (row-major): the mean over pixels and
    channels, and the pixel standard deviation. ``x`` float in [0, 1], ``(N, C, H, W)``."""
    n, c, h, w = x.shape
    gh, gw = h // block, w // block
    core = x[:, :, : gh * block, : gw * block].double()
    blocks = core.reshape(n, c, gh, block, gw, block).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, -1)
    return torch.stack([blocks.mean(dim=2), blocks.std(dim=2, unbiased=False)], dim=2)


def _cross_correlation(f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``(G, G)``: the correlation over images of ``f[:, i]`` with ``h[:, j]`` (``(N, G)`` each);
    0 where a slot does not vary."""
    def standard(v):
        z = v - v.mean(dim=0)
        sd = z.pow(2).mean(dim=0).sqrt()
        return z / sd.clamp_min(1e-9), sd > 1e-9

    (zf, okf), (zh, okh) = standard(f), standard(h)
    r = (zf.T @ zh) / f.shape[0]
    return (r * (okf[:, None] & okh[None, :])).clamp(-1.0, 1.0)


def _correlation(f: torch.Tensor) -> torch.Tensor:
    """``(G, G)`` correlation over images of ``f`` ``(N, G)``; 0 where a slot does not vary."""
    return _cross_correlation(f, f)


def class_means(values: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K, ...)`` float64 per-class means of ``values`` ``(N, ...)`` (0 for a class without
    images) and ``(K,)`` class counts: the one per-class mean of A7's matchers and transforms."""
    onehot = torch.nn.functional.one_hot(labels.long(), k).double()
    counts = onehot.sum(0)
    flat = onehot.T @ values.double().reshape(values.shape[0], -1)
    means = flat / counts.clamp_min(1.0)[:, None]
    return means.reshape(k, *values.shape[1:]), counts


def _class_moments(f: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Per class: ``(K, G, F)`` means and within-class variances of ``f`` ``(N, G, F)``, and ``(K,)`` counts."""
    mean, counts = class_means(f, labels, k)
    sq, _ = class_means(f * f, labels, k)
    return mean, (sq - mean * mean).clamp_min(0.0), counts


def _position_cost(rel: torch.Tensor, labels, own: torch.Tensor, own_labels, k: int) -> torch.Tensor:
    """``(slots, positions)``: half the squared standardised difference of the class means."""
    mu, _, n_rel = _class_moments(rel, labels, k)
    nu, var, n_own = _class_moments(own, own_labels, k)
    both = (n_rel > 0) & (n_own > 0)
    mu, nu, var = mu[both], nu[both], var[both]  # (K', G, F)
    # a floor on the variance: a position flat in the attacker's images of a class (a black corner)
    # must not make a small difference there decisive
    var = torch.maximum(var, VAR_FLOOR * var.mean(dim=(0, 1)).clamp_min(1e-12))
    w = 1.0 / (var * (1.0 / n_rel[both] + 1.0 / n_own[both])[:, None, None])  # (K', positions, F)
    # sum_k,f w[k,p,f] (mu[k,s,f] - nu[k,p,f])^2, expanded into matrix products
    cost = torch.einsum("ksf,kpf->sp", mu * mu, w) - 2 * torch.einsum("ksf,kpf->sp", mu, w * nu)
    cost = cost + (w * nu * nu).sum(dim=(0, 2))[None, :]
    return 0.5 * cost


def _negations(rel, labels, own, own_labels, k: int, negation: bool) -> tuple[torch.Tensor, ...]:
    """A first guess of the ``(G,)`` ±1 per slot (−1: negated), and the ``(slots, positions)``
    class-mean cost of the slots as they are and negated. Slots that take part in the leading eigenvector of the
    correlations share its signs up to one global sign, which the class means decide; the others
    (flat or unrelated slots) are decided one by one by the class means."""
    as_is = _position_cost(rel, labels, own, own_labels, k)
    g = rel.shape[1]
    if not negation:
        return torch.ones(g, dtype=torch.float64), as_is, as_is
    other = rel.clone()
    other[:, :, 0] = 1.0 - rel[:, :, 0]
    negated = _position_cost(other, labels, own, own_labels, k)
    fit_pos, fit_neg = as_is.min(dim=1).values, negated.min(dim=1).values
    level = torch.where(fit_neg < fit_pos, -1.0, 1.0).double()
    sure = (fit_neg - fit_pos).abs() > DECISIVE  # the class means alone decide these slots
    _, vecs = torch.linalg.eigh(_correlation(rel[:, :, 0]))
    v = vecs[:, -1]
    eig = torch.where(v < 0, -1.0, 1.0).double()
    strong = (v.abs() > 0.5 / g**0.5) & ~sure
    keep = torch.where(eig > 0, fit_pos, fit_neg)[strong].sum()
    turn = torch.where(eig > 0, fit_neg, fit_pos)[strong].sum()
    eig = -eig if float(turn) < float(keep) else eig  # one sign for them all: as their class means say
    signs = torch.where(strong, eig, level)
    return signs, as_is, negated


def _pair_terms(rel: torch.Tensor, own: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The jigsaw term as ``[(P, S)]`` pairs: ``sum_pq P[p, q] S[slot(p), slot(q)]`` is half the
    squared standardised difference between the slots' and the positions' correlations (of each
    statistic, and across the two: a bright block above a busy one is not the same as below it)."""
    n, m = rel.shape[0], own.shape[0]
    terms = []
    for f, h in ((0, 0), (1, 1), (0, 1)):  # a loop over the (three) pairs of statistics
        a = _cross_correlation(rel[:, :, f], rel[:, :, h]).fill_diagonal_(0.0)
        b = _cross_correlation(own[:, :, f], own[:, :, h])
        inv = 1.0 / ((1.0 - b * b).clamp_min(0.05) ** 2 * (1.0 / n + 1.0 / m))
        inv.fill_diagonal_(0.0)
        half = 0.25 if f == h else 0.5  # a symmetric matrix counts each pair twice
        terms += [(half * inv, a * a), (-2 * half * inv * b, a)]
    return terms


def _total(order: torch.Tensor, lin: torch.Tensor, terms) -> float:
    """The cost of placing slot ``order[p]`` at position ``p``."""
    cost = lin[order, torch.arange(len(order))].sum()
    for p, s in terms:
        cost = cost + (p * s[order][:, order]).sum()
    return float(cost)


def _swap_gains(order: torch.Tensor, lin: torch.Tensor, terms) -> torch.Tensor:
    """``(G, G)``: the change of the cost when the slots at positions ``r`` and ``s`` trade places
    (every ``P``, ``S`` with zero diagonals; not necessarily symmetric)."""
    lp = lin[order]  # lp[p, q]: cost of the slot now at p placed at q
    d = lp.diagonal()
    delta = lp + lp.T - d[:, None] - d[None, :]
    for p, s in terms:
        x = s[order][:, order]
        t = p @ x.T + p.T @ x
        dt = t.diagonal()
        q = p * x
        delta = delta + t + t.T - dt[:, None] - dt[None, :] + q + q.T + p * x.T + p.T * x
    return delta


def _descend(order: torch.Tensor, lin: torch.Tensor, terms, max_steps: int = 2000) -> torch.Tensor:
    """Steepest descent over swaps until no swap lowers the cost."""
    g = len(order)
    for _ in range(max_steps):
        delta = _swap_gains(order, lin, terms)
        best = int(delta.argmin())
        if float(delta.view(-1)[best]) > -1e-9:
            break
        r, s = divmod(best, g)
        order = order.clone()
        order[r], order[s] = order[s].clone(), order[r].clone()
    return order


def _grid_symmetries(gh: int, gw: int) -> list[torch.Tensor]:
    """Position maps of the grid's symmetries: ``order[sym]`` is the layout turned/mirrored."""
    idx = torch.arange(gh * gw).view(gh, gw)
    maps = [idx, idx.flip(0), idx.flip(1), idx.flip(0).flip(1)]
    if gh == gw:
        maps += [m.T for m in maps]
    return [m.reshape(-1) for m in maps]


def _hungarian(cost: torch.Tensor) -> torch.Tensor:
    """``order[p]``: the slot the assignment of least ``cost[slot, position]`` puts at ``p``."""
    from scipy.optimize import linear_sum_assignment

    slots, positions = linear_sum_assignment(cost.numpy())
    order = torch.empty(len(positions), dtype=torch.int64)
    order[torch.as_tensor(positions)] = torch.as_tensor(slots, dtype=torch.int64)
    return order


def _spectral_starts(similarity: torch.Tensor, grid: tuple[int, int], angles: int = 12) -> list[torch.Tensor]:
    """Layouts from the slots' spectral embedding: the 2nd and 3rd eigenvectors of a stationary
    correlation matrix are the slowest waves across the grid (a position's coordinates, up to a
    turn of the plane), assigned to the grid by the Hungarian algorithm at ``angles`` turns."""
    gh, gw = grid
    if gh * gw < 3:  # no 2nd and 3rd eigenvector: the swap descent alone tries every layout
        return []
    _, vecs = torch.linalg.eigh(similarity)
    e = vecs[:, -3:-1]
    e = (e - e.mean(dim=0)) / e.std(dim=0).clamp_min(1e-12)
    yy, xx = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], dim=1)
    pos = (pos - pos.mean(dim=0)) / pos.std(dim=0).clamp_min(1e-12)
    starts = []
    for i in range(angles):  # a loop over the (few) turns of the embedding
        t = torch.tensor(torch.pi * i / angles, dtype=torch.float64)
        rot = torch.stack([torch.stack([t.cos(), -t.sin()]), torch.stack([t.sin(), t.cos()])])
        starts.append(_hungarian(torch.cdist(e @ rot, pos) ** 2))
    return starts


def _best_symmetry(order: torch.Tensor, lin: torch.Tensor, terms, grid: tuple[int, int]) -> torch.Tensor:
    """The least costly of the layout turned and mirrored as a whole (each then descended): the
    jigsaw cannot tell them apart where the images have no up or left, the class means can."""
    best, best_cost = order, _total(order, lin, terms)
    for sym in _grid_symmetries(*grid)[1:]:
        cand = _descend(order[sym], lin, terms)
        cost = _total(cand, lin, terms)
        if cost < best_cost - 1e-9:
            best, best_cost = cand, cost
    return best


def _search(lin: torch.Tensor, terms, similarity, grid: tuple[int, int], rounds: int, seed: int) -> torch.Tensor:
    """Local search for the layout of least cost, from the Hungarian solution of ``lin`` and from
    spectral layouts, then restarted from random perturbations of the best so far."""
    order = _hungarian(lin)
    if not terms:
        return order
    best, best_cost = order, float("inf")
    for start in [order, *_spectral_starts(similarity, grid)]:
        cand = _descend(start, lin, terms)
        cost = _total(cand, lin, terms)
        if cost < best_cost - 1e-9:
            best, best_cost = cand, cost
    best = _best_symmetry(best, lin, terms, grid)
    best_cost = _total(best, lin, terms)
    gen = torch.Generator().manual_seed(seed)
    g = len(order)
    for _ in range(rounds):  # a bounded number of restarts, each batched over all swaps
        cand = best.clone()
        for _ in range(int(torch.randint(2, max(3, g // 8), (1,), generator=gen))):
            r, s = torch.randint(0, g, (2,), generator=gen).tolist()
            cand[r], cand[s] = cand[s].clone(), cand[r].clone()
        cand = _descend(cand, lin, terms)
        cost = _total(cand, lin, terms)
        if cost < best_cost - 1e-9:
            best, best_cost = cand, cost
    return best


def match_layout(
    released: torch.Tensor,
    labels: torch.Tensor,
    own: torch.Tensor,
    own_labels: torch.Tensor,
    k: int,
    grid: tuple[int, int],
    *,
    negation: bool = True,
    jigsaw: bool = True,
    rounds: int = 40,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match slots to positions from :func:`block_statistics` of the released and the attacker's
    images (``(N, G, 2)``, ``(M, G, 2)``); returns ``(source, negated)`` as
    :func:`~visualmixer.eval.attacks.a7_layout.recover_layout`. ``jigsaw=False``: the class means
    only (one Hungarian assignment); ``rounds``: restarts of the local search."""
    signs, as_is, negated = _negations(released, labels, own, own_labels, k, negation)
    source = None
    for _ in range(4):  # layout and negations in turn, until the negations stand
        lin, terms, similarity = _problem(released, own, signs, as_is, negated, jigsaw)
        source = _search(lin, terms, similarity, grid, rounds, seed) if source is None else \
            _best_symmetry(source, lin, terms, grid)
        if not (negation and jigsaw):
            break
        new = _best_signs(released, own, signs, as_is, negated, source)
        if torch.equal(new, signs):
            break
        signs = new
    return source, signs[source] < 0


def near_rank_one(f: torch.Tensor) -> bool:
    """Whether the correlation over images of ``f`` ``(M, G)`` is near rank one (:data:`RANK_ONE`)."""
    values = torch.linalg.eigvalsh(_correlation(f))
    return bool(values[-1] > RANK_ONE * values.sum().clamp_min(1e-12))


def _problem(released, own, signs, as_is, negated, jigsaw: bool):
    """The cost terms (class means, jigsaw) and the similarity of the slots with the negations
    ``signs`` undone."""
    flipped = released.clone()
    flipped[:, :, 0] = torch.where(signs[None, :] < 0, 1.0 - released[:, :, 0], released[:, :, 0])
    lin = torch.where(signs[:, None] < 0, negated, as_is)
    terms = _pair_terms(flipped, own) if jigsaw else []
    similarity = sum(_correlation(flipped[:, :, f]) for f in range(flipped.shape[2]))
    return lin, terms, similarity


def _best_signs(released, own, signs, as_is, negated, source) -> torch.Tensor:
    """With the layout ``source`` fixed, turn each slot's negation while that lowers the cost."""
    lin, terms, _ = _problem(released, own, signs, as_is, negated, True)
    best = _total(source, lin, terms)
    lin, terms, _ = _problem(released, own, -signs, as_is, negated, True)
    if _total(source, lin, terms) < best - 1e-9:  # all of them at once: only the class means tell
        best, signs = _total(source, lin, terms), -signs
    signs = signs.clone()
    for i in range(len(signs)):  # a loop over the slots, each one batched cost
        signs[i] = -signs[i]
        lin, terms, _ = _problem(released, own, signs, as_is, negated, True)
        cost = _total(source, lin, terms)
        if cost < best - 1e-9:
            best = cost
        else:
            signs[i] = -signs[i]
    return signs
