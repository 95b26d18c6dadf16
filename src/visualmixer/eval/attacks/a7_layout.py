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
Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`). A slot may also have been
negated (``x → 1 − x``, EtC's negative–positive step, the same for every image): each slot is
matched as it is or negated, whichever fits. Block rotations and channel shuffles do not change
a block's mean, so they do not hide the layout.
"""

from __future__ import annotations

import torch

from visualmixer.core.imageops import add_batch_axis, full_blocks, region_mean_grid, to_float, with_full_blocks

__all__ = ["recover_layout", "undo_layout"]


def _features(means: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(G, K + 1)``: per class the mean of each slot's block mean, and its spread over images."""
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).double()  # (N, K)
    counts = onehot.sum(0).clamp_min(1.0)
    class_means = (onehot.T @ means) / counts[:, None]  # (K, G)
    return torch.cat([class_means.T, means.std(dim=0, unbiased=False)[:, None]], dim=1)


def recover_layout(
    protected,
    labels,
    attacker_images,
    attacker_labels,
    block: int,
    *,
    num_classes: int | None = None,
    negation: bool = True,
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

    Returns
    -------
    (source, negated) : (torch.Tensor, torch.Tensor)
        int64 ``(G,)``: ``source[p]`` is the released slot whose block originally sat at position
        ``p`` (row-major over the full-block grid); bool ``(G,)``: whether that slot is negated.

    Examples
    --------
    >>> src, neg = recover_layout(released, y, own, own_y, block=4)   # doctest: +SKIP
    >>> estimate = undo_layout(released, src, neg, block=4)            # doctest: +SKIP
    """
    from scipy.optimize import linear_sum_assignment

    x, _ = add_batch_axis(protected, "protected")
    a, _ = add_batch_axis(attacker_images, "attacker_images")
    if x.shape[1:] != a.shape[1:]:
        raise ValueError(f"attacker images {tuple(a.shape[1:])} differ from the released {tuple(x.shape[1:])}")
    k = int(num_classes or int(max(labels.max(), attacker_labels.max())) + 1)
    h, w = x.shape[2:]
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
