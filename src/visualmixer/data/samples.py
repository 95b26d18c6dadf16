"""Built-in real photos that ship inside installed packages (no download), for demos and tests.

=============  ======================================  ==========================================
name           source                                  licence (see the loader's docstring)
=============  ======================================  ==========================================
astronaut      ``skimage.data.astronaut`` (a face)     public domain (NASA)
coffee         ``skimage.data.coffee``                 CC0 (Rachel Michetti)
chelsea        ``skimage.data.chelsea`` (a cat)        CC0 (Stefan van der Walt)
retina         ``skimage.data.retina`` (fundus photo)  CC BY 4.0 (Häggström, Wikimedia)
rocket         ``skimage.data.rocket``                 public domain (SpaceX)
motorcycle     ``skimage.data.stereo_motorcycle`` [0]  CC BY (Middlebury stereo set)
=============  ======================================  ==========================================
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTO_NAMES", "load_photo", "builtin_photos"]

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "retina", "rocket", "motorcycle")


def load_photo(name: str, size: int | None = 224) -> torch.Tensor:
    """One built-in photo as a ``(3, size, size)`` uint8 tensor (centre square crop, area-resized).

    ``size=None`` keeps the original resolution and aspect ratio.
    """
    from skimage import data

    loaders = {
        "astronaut": data.astronaut,
        "coffee": data.coffee,
        "chelsea": data.chelsea,
        "retina": data.retina,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    if name not in loaders:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTO_NAMES)}")
    arr = np.ascontiguousarray(loaders[name]()[..., :3])
    img = torch.from_numpy(arr).permute(2, 0, 1)
    if size is None:
        return img.contiguous()
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    h, w = img.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[:, top : top + side, left : left + side].unsqueeze(0).float()
    out = F.interpolate(crop, size=(size, size), mode="area")
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def builtin_photos(size: int = 224, names=PHOTO_NAMES) -> tuple[list[str], torch.Tensor]:
    """The built-in photos as one ``(N, 3, size, size)`` uint8 batch, with their names."""
    names = list(names)
    return names, torch.stack([load_photo(n, size) for n in names])
