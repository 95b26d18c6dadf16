"""Training-time augmentation that keeps the protection's region grid: ``visualmixer train --augment``.

A protected image is only a protected image on its own grid of regions, so an augmentation here
must move whole regions: :class:`RegionGridFlip` mirrors the grid left-right (on a width that is a
multiple of the region side, an ordinary horizontal flip), which a region-sorted model reads as
the mirrored original. Applied to a batch after its normalisation, so that a teacher computing its
soft labels on the model's inputs labels the mirrored image the model sees (consistent teaching);
released soft labels carry the mirrored images' logits as a second view (``(N, 2, K)`` targets,
:func:`visualmixer.train.soft_labels.read_soft_labels`), of which each image takes the one of its view.

The flips are keyed per epoch by the run's seed, drawn on the CPU (the same flips on every device)
and moved to the batch's device without a host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["AUGMENTATIONS", "RegionGridFlip", "check_augment", "make_augment", "mirror_grid"]

def check_augment(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each one of :data:`AUGMENTATIONS` and none twice (else ``ValueError``)."""
    names = tuple(names)
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"augment={list(names)} is not allowed: each one of {', '.join(AUGMENTATIONS)}, "
                         "none twice")
    return names


def mirror_grid(images: torch.Tensor, region: int | None = None) -> torch.Tensor:
    """``images`` ``(..., H, W)`` with their grid of ``region``-px regions mirrored left-right.

    The columns the grid covers (``W // region * region`` from the left, as the protection's
    regions) are flipped; a remainder at the right edge stays where it is, so every region lands
    on a region. ``region=None``: the whole width (a plain horizontal flip).

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(5).reshape(1, 1, 1, 5)
    >>> mirror_grid(x, 2).flatten().tolist()
    [3, 2, 1, 0, 4]
    """
    w = images.shape[-1]
    cols = w if region is None else w // int(region) * int(region)
    if cols == w:
        return images.flip(-1)
    return torch.cat([images[..., :cols].flip(-1), images[..., cols:]], dim=-1)


#: The ``--augment`` names and the view each makes of a batch ``(images, region) -> images``
#: (for released soft labels: the teacher labels each view of every image).
AUGMENTATIONS = {"hflip": mirror_grid}


class RegionGridFlip:
    """Mirror each training image's region grid left-right with probability ``p`` (:func:`mirror_grid`).

    Called on a prepared batch ``(inputs (B, C, H, W), targets)``; returns the batch with the
    chosen images mirrored. ``targets`` of shape ``(B, 2, K)`` (soft labels of the original and
    the mirrored image) become each image's own view ``(B, K)``; other targets pass unchanged.

    Parameters
    ----------
    region : int, optional
        The protection's region side; None for a plain flip (clean images).
    seed : int
        Keys the flips: epoch ``e`` draws from a generator seeded with ``seed * 1_000_003 + e``.
    p : float
        The probability of mirroring an image, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> flip = RegionGridFlip(region=4, seed=0, p=1.0)
    >>> flip.set_epoch(0)
    >>> x, y = flip(torch.arange(8.0).reshape(1, 1, 1, 8), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    >>> x.flatten().tolist(), y.tolist()
    ([7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [[0.0, 1.0]])
    """

    def __init__(self, *, region: int | None, seed: int, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.region, self.seed, self.p = region, int(seed), float(p)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self._generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))

    def make_params(self, n: int) -> torch.Tensor:
        """Which of ``n`` images to mirror: bool ``(n,)`` on the CPU, the next draw of the epoch's generator."""
        return torch.rand(n, generator=self._generator) < self.p

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = self.make_params(inputs.shape[0]).to(inputs.device, non_blocking=True)
        inputs = torch.where(flip.reshape(-1, *([1] * (inputs.ndim - 1))), mirror_grid(inputs, self.region), inputs)
        if targets.ndim == 3:  # (B, views, K): the original's and the mirrored image's soft labels
            view = flip.to(targets.device, non_blocking=True).long()
            targets = targets[torch.arange(targets.shape[0], device=targets.device), view]
        return inputs, targets


def make_augment(names: Sequence[str], *, region: int | None, seed: int) -> RegionGridFlip | None:
    """The batch augmentation for ``--augment names`` (None when empty)."""
    return RegionGridFlip(region=region, seed=seed) if "hflip" in check_augment(names) else None
