"""An image beside its obfuscated versions, as one labelled picture (``visualmixer show``).

Pillow only (no plotting library), so the folder tools' extra is enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["side_by_side"]


def side_by_side(images: Sequence[torch.Tensor], labels: Sequence[str], *, min_side: int = 128,
                 gap: int = 4, label_height: int = 14) -> np.ndarray:
    """Place same-size images in a row, each under its label, on a white canvas.

    Parameters
    ----------
    images : sequence of torch.Tensor
        uint8 ``(C, H, W)``, all the same shape, ``C`` in {1, 3}.
    labels : sequence of str
        One per image, drawn above it.
    min_side : int, default 128
        Smaller images are enlarged by a whole factor (nearest neighbour) until their shorter side
        reaches this, so that they stay visible.
    gap, label_height : int
        Pixels between panels, and above them for the labels.

    Returns
    -------
    numpy.ndarray
        uint8 ``(label_height + H * s, n * (W * s + gap) - gap, 3)``, ``s`` the enlargement.
    """
    from PIL import Image, ImageDraw

    if len(images) != len(labels) or not images:
        raise ValueError(f"images and labels must be non-empty and as many; got {len(images)} and {len(labels)}")
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ValueError(f"images must all have the same shape; got {sorted(shapes)}")
    c, h, w = next(iter(shapes))
    scale = max(1, -(-min_side // min(h, w)))
    pw, ph = w * scale, h * scale
    row = torch.stack(list(images)).expand(-1, 3, -1, -1) if c == 1 else torch.stack(list(images))
    tiles = row.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (n, 3, ph, pw)
    canvas = np.full((label_height + ph, len(images) * (pw + gap) - gap, 3), 255, dtype=np.uint8)
    for n, tile in enumerate(tiles.permute(0, 2, 3, 1).numpy()):
        canvas[label_height:, n * (pw + gap) : n * (pw + gap) + pw] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for n, text in enumerate(labels):
        draw.text((n * (pw + gap) + 2, 1), text, fill=(0, 0, 0))
    return np.asarray(picture)
