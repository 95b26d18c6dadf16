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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visualmixer.core.imageops import full_blocks, with_full_blocks

__all__ = ["relink_regions", "region_means"]


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
