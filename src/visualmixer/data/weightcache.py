"""The saliency weights of a dataset's images, kept from their first obfuscation for the next
ones (online mode obfuscates the same images every epoch with new keys; the originals'
saliency does not change)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from visualmixer.core.weighting import SaliencyWeights, weight_shapes

__all__ = ["WeightsCache"]


class WeightsCache:
    """:class:`~visualmixer.core.weighting.SaliencyWeights` rows of ``n`` images of one size,
    filled as images are first seen.

    On the CPU the rows live in shared memory where the platform allows, so DataLoader worker
    processes started after the cache fill and read one cache; on a GPU they stay on the device
    (only the flags of which rows are filled live on the host: no synchronisation).
    ``9 * regions``-ish bytes per image: 0.56 bytes per pixel for 28² images (4-px regions).
    """

    def __init__(self, n: int, height: int, width: int, region: int, device: torch.device | str = "cpu"):
        windows, regions = weight_shapes(height, width, region)
        self.region, self.height, self.width = region, height, width
        self.weights = torch.zeros((n, *windows), dtype=torch.float64, device=device)
        self.salient = torch.zeros((n, regions), dtype=torch.bool, device=device)
        self.filled = torch.zeros(n, dtype=torch.bool)
        for t in (self.weights, self.salient, self.filled):
            if t.device.type == "cpu":
                try:
                    t.share_memory_()
                except RuntimeError:  # (no shared memory here: each worker keeps its own rows)
                    pass

    def rows(self, images: torch.Tensor, indices: Sequence[int],
             compute: Callable[[torch.Tensor], SaliencyWeights]) -> SaliencyWeights:
        """The weights of ``images`` (``(len(indices), C, H, W)``, the dataset's images at
        ``indices``): the rows filled before, and ``compute`` of the others (then kept)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        new = (~self.filled[idx]).nonzero().flatten()  # (host tensors)
        if len(new):
            made = compute(images[new.to(images.device)])
            at = idx[new].to(self.weights.device)
            self.weights[at] = made.weights.to(self.weights.device)
            self.salient[at] = made.salient.to(self.salient.device)
            self.filled[idx[new]] = True  # after the rows: a reader that sees the flag sees them
        at = idx.to(self.weights.device)
        return SaliencyWeights(self.weights[at], self.salient[at], self.region, self.height, self.width)
