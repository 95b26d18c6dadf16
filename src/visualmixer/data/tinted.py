"""``tinted-fm``: a colour set whose label is the shape, not the colour.

The ``photos`` set's classes are its source photos, so colour *is* the label there and a
channel-order shuffle destroys it. Most real tasks (objects, faces, scenes) are not like that.
This set keeps Fashion-MNIST's ten garment classes and makes them colour images whose colour
says nothing about the class: each 28×28 garment is padded to 32×32, tinted with a random
colour (uniform in RGB, drawn independently of the class) and laid over a random 32×32 crop of
the packaged photos (:func:`visualmixer.data.datasets.load_photos`, train crops for the train
split and test crops — from disjoint areas of the photos — for the test split)::

    out = background * (1 - a) + colour * a,    a = garment / 255

Deterministic for a seed; needs Fashion-MNIST (see :func:`load_fashion_mnist`) and the photos'
packages (``visualmixer[data]``).

>>> ds = load_tinted_fashion("test", limit=8)     # doctest: +SKIP
>>> ds.images.shape                                # doctest: +SKIP
torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visualmixer.data.datasets import FASHION_MNIST_CLASSES, ImageSet, load_fashion_mnist, load_photos

__all__ = ["load_tinted_fashion", "tint_over"]


def tint_over(shapes: torch.Tensor, backgrounds: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Lay grey ``shapes`` tinted with ``colours`` over colour ``backgrounds``.

    Parameters
    ----------
    shapes : torch.Tensor
        ``(N, 1, H, W)`` uint8 grey shapes (their intensity is the opacity).
    backgrounds : torch.Tensor
        ``(N, 3, H, W)`` uint8.
    colours : torch.Tensor
        ``(N, 3)`` uint8 tint of each shape.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` uint8.
    """
    if shapes.ndim != 4 or shapes.shape[1] != 1:
        raise ValueError(f"shapes must be (N, 1, H, W), got {tuple(shapes.shape)}")
    if backgrounds.shape != (shapes.shape[0], 3, *shapes.shape[2:]):
        raise ValueError(f"backgrounds must be (N, 3, H, W) like shapes, got {tuple(backgrounds.shape)}")
    if colours.shape != (shapes.shape[0], 3):
        raise ValueError(f"colours must be (N, 3), got {tuple(colours.shape)}")
    a = shapes.float() / 255.0
    out = backgrounds.float() * (1.0 - a) + colours.float().view(-1, 3, 1, 1) * a
    return out.round().clamp(0, 255).to(torch.uint8)


def load_tinted_fashion(
    split: str = "train",
    *,
    root=None,
    limit: int | None = None,
    seed: int = 0,
    size: int = 32,
) -> ImageSet:
    """Fashion-MNIST garments, tinted at random, over crops of real photos (colour ≠ label).

    Parameters
    ----------
    split : {"train", "test"}
    root : path-like, optional
        Fashion-MNIST directory (default: the Debian package path).
    limit : int, optional
        Keep the first ``limit`` garments (all 60k/10k by default).
    seed : int
        Seed of colours and background choice (the test split uses ``seed + 1``).
    size : int
        Output side (>= 28); garments are centred and padded.

    Returns
    -------
    ImageSet
        ``(N, 3, size, size)`` uint8, labels 0–9 (Fashion-MNIST's classes).
    """
    if size < 28:
        raise ValueError(f"size must be >= 28 (garments are 28×28), got {size}")
    fm = load_fashion_mnist(split, root=root)
    x, y = fm.images, fm.labels
    n = x.shape[0]
    # draws are made for the whole split, so a limited set is a prefix of the full one
    g = torch.Generator().manual_seed(int(seed) + (1 if split == "test" else 0))
    pad = size - 28
    shapes = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    photos = load_photos(split, size=size, channels=3, seed=int(seed))
    pick = torch.randint(0, photos.images.shape[0], (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5  # more backgrounds from the same crops
    bg = photos.images[pick[:limit]]
    bg = torch.where(flip[:limit].view(-1, 1, 1, 1), bg.flip(-1), bg)
    colours = torch.randint(0, 256, (n, 3), generator=g, dtype=torch.int64).to(torch.uint8)
    keep = slice(0, limit)
    return ImageSet(tint_over(shapes[keep], bg, colours[keep]), y[keep].clone(), FASHION_MNIST_CLASSES,
                    f"tinted-fm/{split}")
