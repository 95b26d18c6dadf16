"""A2 region mosaic: average each region and upsample.

In-region shuffling keeps the multiset of values of every region, so each region's mean colour
leaks by construction; this attack shows that mosaic. With VisualMixer's channel-order
shuffle the per-region means of the channels are permuted, which scrambles the colour but not the
luminance (the channel mean of a region is unchanged).
"""

from __future__ import annotations

import torch

from visualmixer.core.imageops import add_batch_axis, region_mean, to_float
from visualmixer.core.regions import default_region

__all__ = ["region_mosaic"]


def region_mosaic(obfuscated, region: int | None = None, *, grey: bool = False) -> torch.Tensor:
    """Per-region mean of each channel, upsampled back to the image size.

    Parameters
    ----------
    obfuscated : torch.Tensor
        ``(N, C, H, W)`` or ``(C, H, W)``, uint8 or float in [0, 1].
    region : int, optional
        Region side; default the public rule ``visualmixer.default_region(H, W)``.
    grey : bool
        Average the channels too (the part that survives channel-order shuffling), repeated to C.

    Returns
    -------
    torch.Tensor
        float32 ``(N, C, H, W)`` in [0, 1].
    """
    x, _ = add_batch_axis(obfuscated, "obfuscated")
    x = to_float(x)
    r = default_region(x.shape[2], x.shape[3]) if region is None else int(region)
    out = region_mean(x, r)
    if grey and x.shape[1] > 1:
        out = out.mean(dim=1, keepdim=True).expand_as(out).contiguous()
    return out
