"""A1 direct view: the attacker looks at the obfuscated image itself."""

from __future__ import annotations

import torch

from visualmixer.core.imageops import add_batch_axis, to_float

__all__ = ["direct_view"]


def direct_view(obfuscated) -> torch.Tensor:
    """Return the obfuscated images as the estimate of the originals.

    Parameters
    ----------
    obfuscated : torch.Tensor
        ``(N, C, H, W)`` or ``(C, H, W)``, uint8 or float in [0, 1].

    Returns
    -------
    torch.Tensor
        float32 ``(N, C, H, W)`` in [0, 1].
    """
    x, _ = add_batch_axis(obfuscated, "obfuscated")
    return to_float(x).clamp(0, 1)
