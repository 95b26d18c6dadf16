"""Attack A7: recover a key-wide block layout from the whole released set.

Some protections move whole blocks with ONE secret permutation shared by every image of a data
set — keyed block scrambling of the Encryption-then-Compression family
(:class:`visualmixer.eval.baselines.BlockScramble`, ``per_image=False``) and the audit's
``visualmixer:τ/keyblocks`` variant — because a model must see the same layout in training and
at test time to learn it. One image alone is a hard jigsaw; a whole released set is not: every
image carries the same permutation, so statistics pooled over many images identify each block's
original position.

The attacker knows the labels (they are released with the images) and has clean images of its
own. For every block slot it computes, over the released images, the mean value of the block for
each class (a ``K``-vector) and the spread of the block's mean across images; it computes the
same for every position of its own clean images, and assigns slots to positions with the
Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`) — the ``"means"`` matcher. The
default ``"jigsaw"`` matcher (:mod:`visualmixer.eval.attacks.a7_match`) adds a pooled jigsaw: how
the slots' block statistics correlate across the released images says which slots were
neighbours, even where no class anchors a position (randomly cropped photos). A slot may also have been
negated (``x → 1 − x``, EtC's negative–positive step, the same for every image): each slot is
matched as it is or negated, whichever fits. Block rotations and channel shuffles do not change
a block's mean, so they do not hide the layout.

Those are key-wide too (EtC turns, mirrors, negates and re-orders the channels of the block in
each slot the same way in every image), so they are undone the same way
(:func:`recover_block_transforms`): once the blocks are back in place, each slot gets the one of
the 16 transforms (4 turns × mirror × negation; × the channel orders for colour) that makes its class-mean
block image closest to the attacker's class-mean block at that position, then
(:mod:`visualmixer.eval.attacks.a7_seams`) by the seams between neighbouring blocks, pooled over
the released images, which pin each slot's turn, mirror and channel order whatever the content.
"""

from __future__ import annotations

import itertools

import torch

from visualmixer.core.imageops import add_batch_axis, full_blocks, region_mean_grid, to_float, with_full_blocks
from visualmixer.eval.attacks.a7_match import block_statistics, class_means, match_layout, near_rank_one
from visualmixer.eval.attacks.a7_seams import seam_transforms

__all__ = ["recover_layout", "undo_layout", "block_transforms", "recover_block_transforms",
           "undo_block_transforms"]


def _features(means: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(G, K + 1)``: per class the mean of each slot's block mean, and its spread over images."""
    per_class, _ = class_means(means, labels, num_classes)  # (K, G)
    return torch.cat([per_class.T, means.std(dim=0, unbiased=False)[:, None]], dim=1)


def recover_layout(
    protected,
    labels,
    attacker_images,
    attacker_labels,
    block: int,
    *,
    num_classes: int | None = None,
    negation: bool = True,
    matcher: str = "jigsaw",
    rounds: int = 40,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate the shared block permutation (and per-block negation) of a released set.

    Parameters
    ----------
    protected : torch.Tensor
        ``(N, C, H, W)`` released images that share one block layout (uint8 or float in [0, 1]).
    labels : torch.Tensor
        ``(N,)`` their labels (released with them).
    attacker_images, attacker_labels : torch.Tensor
        The attacker's own clean images ``(M, C, H, W)`` of the same kind, and labels ``(M,)``.
    block : int
        Block side (public: the method's block or region size).
    num_classes : int, optional
        Default ``max label + 1``.
    negation : bool
        Also consider that a slot was negated.
    matcher : {"jigsaw", "means"}
        ``"jigsaw"`` (default): class means and the pooled jigsaw of
        :mod:`~visualmixer.eval.attacks.a7_match` (block means and spreads, their correlations
        between slots); it falls back to ``"means"`` where the attacker's block means all rise and
        fall together (:func:`~visualmixer.eval.attacks.a7_match.near_rank_one`). ``"means"``: the
        class means of the block means alone, one Hungarian assignment (the matcher before 2026-11-29).
    rounds, seed : int
        ``"jigsaw"``: restarts of its local search, and their seed.

    Returns
    -------
    (source, negated) : (torch.Tensor, torch.Tensor)
        int64 ``(G,)``: ``source[p]`` is the released slot whose block originally sat at position
        ``p`` (row-major over the full-block grid); bool ``(G,)``: whether that slot is negated.

    Examples
    --------
    >>> import torch
    >>> from torch.nn.functional import interpolate
    >>> from visualmixer.eval.methods.scramble import BlockScramble
    >>> g, ramp = torch.Generator().manual_seed(0), torch.arange(16.0)
    >>> def photos(n):  # 16x16 grey: a ramp (each 4x4 block its own mean) under smooth random shading
    ...     shade = interpolate(torch.rand(n, 1, 4, 4, generator=g), (16, 16), mode="bilinear", align_corners=True)
    ...     return (4 * ramp[:, None] + ramp) / 160 + 0.2 * shade + 0.02 * torch.rand(n, 1, 16, 16, generator=g)
    >>> x, own, y = photos(100), photos(100), torch.zeros(100, dtype=torch.long)  # one class
    >>> released = BlockScramble(4, key=0, rotate=False)(x)  # one key-wide block order and negation
    >>> src, neg = recover_layout(released, y, own, y, block=4)
    >>> torch.allclose(undo_layout(released, src, neg, block=4), x, atol=1e-6)
    True
    """
    from scipy.optimize import linear_sum_assignment

    x, _ = add_batch_axis(protected, "protected")
    a, _ = add_batch_axis(attacker_images, "attacker_images")
    if x.shape[1:] != a.shape[1:]:
        raise ValueError(f"attacker images {tuple(a.shape[1:])} differ from the released {tuple(x.shape[1:])}")
    k = int(num_classes or int(max(labels.max(), attacker_labels.max())) + 1)
    h, w = x.shape[2:]
    if matcher == "jigsaw":
        own = block_statistics(to_float(a), block)
        if not near_rank_one(own[:, :, 0]):
            return match_layout(block_statistics(to_float(x), block), labels, own, attacker_labels, k,
                                (h // block, w // block), negation=negation, rounds=rounds, seed=seed)
        matcher = "means"  # every block rises and falls together: the correlations carry no layout
    if matcher != "means":
        raise ValueError(f"matcher must be 'jigsaw' or 'means', got {matcher!r}")
    full = (slice(None), slice(None), slice(0, h // block * block), slice(0, w // block * block))
    # mean over pixels and channels of every full block: (N, G) float64, row-major slots
    released = region_mean_grid(to_float(x)[full].double(), block).mean(dim=1).flatten(1)
    own = region_mean_grid(to_float(a)[full].double(), block).mean(dim=1).flatten(1)
    f_pos = _features(own, attacker_labels, k)  # (G, K+1) per original position
    f_slot = _features(released, labels, k)  # per released slot
    scale = f_pos.std(dim=0, unbiased=False).clamp_min(1e-6)
    cost = torch.cdist(f_slot / scale, f_pos / scale)  # (slots, positions)
    neg_cost = torch.full_like(cost, float("inf"))
    if negation:
        f_neg = torch.cat([1.0 - f_slot[:, :k], f_slot[:, k:]], dim=1)  # a negated block's means
        neg_cost = torch.cdist(f_neg / scale, f_pos / scale)
    best = torch.minimum(cost, neg_cost)
    slots, positions = linear_sum_assignment(best.numpy())
    source = torch.empty(len(positions), dtype=torch.int64)
    source[torch.as_tensor(positions)] = torch.as_tensor(slots, dtype=torch.int64)
    negated = (neg_cost < cost)[source, torch.arange(len(source))]
    return source, negated


def undo_layout(protected, source: torch.Tensor, negated: torch.Tensor, block: int) -> torch.Tensor:
    """Put every block back at its estimated position (and undo its negation).

    Returns float32 ``(N, C, H, W)`` in [0, 1]; edge strips outside the full-block grid are kept.
    """
    x, _ = add_batch_axis(protected, "protected")
    x = to_float(x)
    core = full_blocks(x, block)[:, source.to(x.device)]
    flip = negated.to(x.device)[None, :, None, None, None]
    return with_full_blocks(x, torch.where(flip, 1.0 - core, core))


def block_transforms(channels: int) -> list[tuple[int, bool, bool, tuple[int, ...]]]:
    """Every transform :func:`recover_block_transforms` considers for a block, identity first:
    ``(quarter turns, mirrored, negated, channel order)``, applied in the order channels, negation,
    turn (:func:`torch.rot90`), mirror (left-right). They form a group: each EtC block scramble
    (turn, flip, negation, channel shuffle) is undone by one of them."""
    orders = list(itertools.permutations(range(channels)))
    return [(k, mirror, neg, order) for neg in (False, True) for order in orders for mirror in (False, True)
            for k in range(4)]


def _transform(blocks: torch.Tensor, t: tuple[int, bool, bool, tuple[int, ...]]) -> torch.Tensor:
    """One of :func:`block_transforms` applied to float blocks ``(..., C, b, b)``."""
    k, mirror, neg, order = t
    x = blocks[..., list(order), :, :]
    x = 1.0 - x if neg else x
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if mirror else x


def recover_block_transforms(
    ordered,
    labels,
    attacker_images,
    attacker_labels,
    block: int,
    *,
    num_classes: int | None = None,
    negation: bool = True,
    channels: bool = True,
    seams: bool = True,
) -> torch.Tensor:
    """Estimate the key-wide transform of every block slot of a released set whose blocks are
    already back in place (:func:`undo_layout`).

    For every slot and every candidate of :func:`block_transforms`, the mean squared difference
    between the candidate applied to the slot's class-mean block (over the released images) and
    the class-mean block of the attacker's own images at that position, averaged over the
    classes both sets have; each slot takes the closest (ties: the identity). Then (``seams``)
    every slot's transform is chosen again by the seams with its neighbours, pooled over all the
    released images (:mod:`~visualmixer.eval.attacks.a7_seams`): the class means only decide the
    one channel order and negation of the whole grid that seams cannot see.

    Parameters
    ----------
    ordered : torch.Tensor
        ``(N, C, H, W)`` released images with the blocks back at their positions (uint8 or float
        in [0, 1]).
    labels, attacker_images, attacker_labels, block, num_classes
        As for :func:`recover_layout`.
    negation, channels : bool
        Also consider negated blocks / other channel orders (colour images).
    seams : bool
        Refine the class-mean choice by the pooled seams (default; ``False``: the class means
        alone, the step before 2026-11-29).

    Returns
    -------
    torch.Tensor
        int64 ``(G,)``: per slot (row-major over the full-block grid), the index into
        ``block_transforms(C)`` of the transform that undoes it (0: none).

    Examples
    --------
    >>> import torch
    >>> from torch.nn.functional import interpolate
    >>> from visualmixer.eval.methods.scramble import BlockScramble
    >>> g, ramp = torch.Generator().manual_seed(0), torch.arange(16.0)
    >>> def photos(n):  # as for recover_layout
    ...     shade = interpolate(torch.rand(n, 1, 4, 4, generator=g), (16, 16), mode="bilinear", align_corners=True)
    ...     return (4 * ramp[:, None] + ramp) / 160 + 0.2 * shade + 0.02 * torch.rand(n, 1, 16, 16, generator=g)
    >>> x, own, y = photos(100), photos(100), torch.zeros(100, dtype=torch.long)
    >>> released = BlockScramble(4, key=0)(x)  # blocks also turned and mirrored, the same in every image
    >>> ordered = undo_layout(released, *recover_layout(released, y, own, y, block=4), block=4)
    >>> which = recover_block_transforms(ordered, y, own, y, block=4)
    >>> torch.allclose(undo_block_transforms(ordered, which, block=4), x, atol=1e-6)
    True
    """
    x, _ = add_batch_axis(ordered, "ordered")
    a, _ = add_batch_axis(attacker_images, "attacker_images")
    if x.shape[1:] != a.shape[1:]:
        raise ValueError(f"attacker images {tuple(a.shape[1:])} differ from the released {tuple(x.shape[1:])}")
    k = int(num_classes or int(max(labels.max(), attacker_labels.max())) + 1)
    blocks = full_blocks(to_float(x), block)
    cost = _class_cost(blocks, labels, full_blocks(to_float(a), block), attacker_labels, k, negation=negation,
                       channels=channels)
    which = cost.argmin(dim=0)
    if not seams:
        return which
    maps, negs = _index_maps(x.shape[1], block)
    return seam_transforms(blocks, which, cost, maps, negs, (x.shape[2] // block, x.shape[3] // block))


def _class_cost(blocks, labels, own_blocks, own_labels, k: int, *, negation: bool, channels: bool) -> torch.Tensor:
    """``(T, G)``: per candidate of :func:`block_transforms` and slot, the mean squared difference
    of the transformed class-mean block and the attacker's (averaged over the classes both sets
    have; ``inf``: a candidate not considered)."""
    released, n_rel = class_means(blocks, labels, k)  # (K, G, C, b, b) class-mean blocks
    own, n_own = class_means(own_blocks, own_labels, k)
    both = ((n_rel > 0) & (n_own > 0)).double()  # classes seen in both sets count alike
    weight = both / both.sum().clamp_min(1.0)
    cands = block_transforms(blocks.shape[2])
    identity = tuple(range(blocks.shape[2]))
    cost = torch.full((len(cands), released.shape[1]), float("inf"), dtype=torch.float64)
    for i, t in enumerate(cands):  # a loop over the (at most 16 · C!) candidates, each batched
        if (t[2] and not negation) or (t[3] != identity and not channels):
            continue
        diff = ((_transform(released, t) - own) ** 2).mean(dim=(2, 3, 4))  # (K, G)
        cost[i] = weight @ diff
    return cost


def _index_maps(channels: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, C, b, b)`` int64: for every candidate of :func:`block_transforms`, the index into the
    flattened ``(C, b, b)`` block that each output pixel comes from; ``(T,)`` bool: it negates."""
    cands = block_transforms(channels)
    base = torch.arange(channels * block * block, dtype=torch.float64).view(channels, block, block)
    maps = torch.stack([_transform(base, (t[0], t[1], False, t[3])) for t in cands]).round().long()
    return maps, torch.tensor([t[2] for t in cands])


def undo_block_transforms(images, which: torch.Tensor, block: int) -> torch.Tensor:
    """Apply to every full block slot its transform ``block_transforms(C)[which[slot]]``
    (:func:`recover_block_transforms`). Returns float32 ``(N, C, H, W)`` in [0, 1]; edge strips
    outside the full-block grid are kept."""
    x, _ = add_batch_axis(images, "images")
    x = to_float(x)
    blocks = full_blocks(x, block).clone()
    cands = block_transforms(x.shape[1])
    which = which.to(torch.int64).cpu()
    for t in which.unique().tolist():  # a loop over the distinct transforms, each batched over slots
        slots = (which == t).nonzero().flatten().to(x.device)
        blocks[:, slots] = _transform(blocks[:, slots], cands[t])
    return with_full_blocks(x, blocks)
