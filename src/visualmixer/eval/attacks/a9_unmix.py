"""A9 — un-mixing: re-link the regions of a mixed release that came from one image, then invert.

Keyed region mixing (:mod:`visualmixer.core.mixing`) releases collages: at every region position,
a group of same-class images exchanged their regions, and each region was shuffled inside. Every
region of every original is still in the release, at its own position, in one of the group's
collages. An attacker who pools all released images of a class can therefore try to put each
original back together:

1. **guide**: an estimate of each collage's main source (A3 trained on the attacker's own
   collages; or, without it, the collage's region-mean mosaic);
2. **re-link**: at every position, take from the class's pool of released regions at that
   position the one whose mean (over pixels and channels — the channel-order shuffle permutes
   channels) is closest to the guide's region mean, preferring the collage's own region when
   the two are about as close (``stay``: most regions of a collage come from its main source);
3. **invert**: the re-linked image is, where the re-linking is right, the main source with its
   regions shuffled inside — what plain VisualMixer releases — so an inversion network trained on
   the attacker's own in-region-shuffled images (A3 against VisualMixer without mixing) undoes it.

All steps are batched per class (a loop over classes, not images or regions).

:func:`thread_regions` is the stronger re-linker: at every position a pool's released regions
are its sources' regions there, one each, so following every source across the positions is a
chain of assignment problems (the Hungarian method, :func:`scipy.optimize.linear_sum_assignment`:
needs the ``eval`` extra). Solved position by position, it is a loop over pools and positions
(each assignment needs the one before); the scoring and inversion stay batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visualmixer.core.imageops import full_blocks, with_full_blocks

__all__ = ["relink_regions", "region_means", "thread_regions"]


def region_means(images: torch.Tensor, region: int) -> torch.Tensor:
    """``(N, R)`` float: the mean of every full region over its pixels and channels."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return F.avg_pool2d(x.mean(dim=1, keepdim=True), region).flatten(1)


def relink_regions(
    protected: torch.Tensor,
    labels: torch.Tensor,
    guide: torch.Tensor,
    region: int,
    *,
    stay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each region of each released image by the same-class released region (at the same
    position) whose mean best matches ``guide``.

    Parameters
    ----------
    protected : torch.Tensor
        ``(N, C, H, W)`` uint8 released (mixed) images.
    labels : torch.Tensor
        ``(N,)`` their classes (they leak by construction).
    guide : torch.Tensor
        ``(N, C', H, W)`` float in [0, 1]: an estimate of each image's main source.
    region : int
        Region side.
    stay : float
        Mean difference (on the [0, 1] scale) below which the image keeps its own region.

    Returns
    -------
    relinked : torch.Tensor
        ``(N, C, H, W)`` uint8: the re-linked images (edge strips that are not a full region stay).
    chosen : torch.Tensor
        ``(N, R)`` int64: which released image each full region was taken from.
    """
    n, _, h, w = protected.shape
    gh, gw = h // region, w // region
    pool = region_means(protected, region)  # (N, R)
    want = region_means(guide, region)  # (N, R)
    labels = torch.as_tensor(labels).reshape(-1).to(protected.device)
    chosen = torch.arange(n, device=protected.device).view(-1, 1).expand(n, gh * gw).clone()
    for cls in torch.unique(labels).tolist():  # a loop over classes
        members = torch.nonzero(labels == cls).flatten()
        # (R, m, m): |guide mean of image a - released mean of image b| at each position
        d = (want[members].T.unsqueeze(2) - pool[members].T.unsqueeze(1)).abs()
        own = torch.eye(members.numel(), dtype=torch.bool, device=d.device).unsqueeze(0)
        d = d + stay * (~own)  # switching costs `stay`
        chosen[members] = members[d.argmin(dim=2)].T
    pos = torch.arange(gh * gw, device=protected.device).view(1, -1)
    picked = full_blocks(protected, region)[chosen, pos]  # (N, R, C, r, r)
    return with_full_blocks(protected, picked), chosen


def thread_regions(protected: torch.Tensor, pools, region: int, *,
                   balanced_visits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Follow every source of each pool of released images across the region positions.

    At every position the regions of a pool (a class's released images — or a group's, for an
    attacker who learned the groups) are its sources' regions there, one each. Thread ``i``
    starts from released image ``i``'s region at the centre position ``(gh // 2, gw // 2)`` and
    grows in a spiral; each new position is an assignment of the pool's regions there to the
    pool's threads, by the L1 distance of the regions' sorted values (what the in-region shuffle
    keeps) to the threads' regions at the already-threaded neighbouring positions.

    Parameters
    ----------
    protected : torch.Tensor
        ``(N, C, H, W)`` uint8 released (mixed) images.
    pools : sequence of torch.Tensor
        Index tensors into the release that partition it (one per class, or per group).
    region : int
        Region side.
    balanced_visits : bool
        Also use what balanced mixing guarantees: a thread takes a region from each released image
        of its pool at most ``ceil(R / v)`` times (``R`` regions of the whole grid, edge strips
        included, as the deal counts them; ``v`` pool members; enforced as a prohibitive cost).
        Only meaningful for a pool that is one balanced group mixed with share 1.

    Returns
    -------
    threaded : torch.Tensor
        ``(N, C, H, W)`` uint8: thread ``i``'s regions assembled (edge strips that are not a
        full region stay image ``i``'s).
    chosen : torch.Tensor
        ``(N, R)`` int64: which released image each full region of thread ``i`` was taken from.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(2, dtype=torch.uint8).mul(200).view(2, 1, 1, 1).expand(2, 1, 8, 8).contiguous()
    >>> mixed = x.clone(); mixed[0, :, :4, :4], mixed[1, :, :4, :4] = x[1, :, :4, :4], x[0, :, :4, :4]
    >>> threaded, chosen = thread_regions(mixed, [torch.arange(2)], 4)
    >>> bool((threaded == x).all())  # each thread is one source again: the one of image i's centre region
    True
    """
    from visualmixer.core.optional import require

    linear_sum_assignment = require("scipy.optimize", extra="eval", purpose="threading").linear_sum_assignment
    blocks = full_blocks(protected, region)  # (N, R, C, r, r)
    n = blocks.shape[0]
    gh, gw = protected.shape[2] // region, protected.shape[3] // region
    desc = blocks.flatten(2).float().sort(dim=2).values
    grid = -(-protected.shape[2] // region) * -(-protected.shape[3] // region)  # the deal's positions
    cy, cx = gh // 2, gw // 2
    order = sorted(((i, j) for i in range(gh) for j in range(gw)), key=lambda p: (abs(p[0] - cy) + abs(p[1] - cx), p))
    chosen = torch.arange(n, device=protected.device).view(-1, 1).repeat(1, gh * gw)
    for m in pools:
        m = torch.as_tensor(m, device=protected.device).reshape(-1)
        taken = {order[0]: m}
        visits = torch.eye(len(m), device=protected.device)  # [thread, pool member]: thread i starts in member i
        cap = -(-grid // max(1, len(m)))
        for p in order[1:]:
            cost = torch.zeros(len(m), len(m), device=protected.device)
            for q in ((p[0] - 1, p[1]), (p[0] + 1, p[1]), (p[0], p[1] - 1), (p[0], p[1] + 1)):
                if q in taken:
                    cost += torch.cdist(desc[taken[q], q[0] * gw + q[1]], desc[m, p[0] * gw + p[1]], p=1)
            if balanced_visits:
                cost += 1e6 * (visits >= cap)
            _, cols = linear_sum_assignment(cost.cpu().numpy())
            cols = torch.as_tensor(cols, device=protected.device)
            visits[torch.arange(len(m), device=protected.device), cols] += 1
            taken[p] = m[cols]
        for p, who in taken.items():
            chosen[m, p[0] * gw + p[1]] = who
    pos = torch.arange(gh * gw, device=protected.device).view(1, -1)
    return with_full_blocks(protected, blocks[chosen, pos]), chosen
