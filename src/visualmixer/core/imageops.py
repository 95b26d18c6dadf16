"""Small batched image helpers shared by the core (``vfe``, ``mixer``) and by ``metrics``,
``baselines``, ``attacks`` and ``report``: the one home of block sums / block means.

Everything here works on ``(N, C, H, W)`` tensors without Python loops over pixels or regions.
(The API-edge adapter for user input -- tensors, numpy ``(H, W, C)`` arrays, PIL images -- is
:func:`visualmixer.core.validation.to_batch`; :func:`add_batch_axis` here only adds a missing
batch axis to an already ``(C, H, W)``-laid-out tensor or array.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "add_batch_axis",
    "to_float",
    "from_float",
    "pad_to_multiple",
    "block_sum",
    "region_mean_grid",
    "region_mean",
    "full_blocks",
    "with_full_blocks",
    "to_uint8_hwc",
]


def add_batch_axis(images, name: str = "images") -> tuple[torch.Tensor, bool]:
    """Return ``images`` as an ``(N, C, H, W)`` tensor and whether a batch axis was added.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        ``(N, C, H, W)`` or ``(C, H, W)`` tensor; a numpy array is accepted in the same layouts.
    name : str
        Name used in error messages.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.ndim == 3:
        return images.unsqueeze(0), True
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels, got {images.shape[1]}")
    return images, False


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; floating input is returned as float32 unchanged in value."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
    return images.float()


def from_float(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Clip float images to [0, 1] and cast back to the dtype of ``like`` (rounding for uint8)."""
    images = images.clamp(0.0, 1.0)
    if like.dtype == torch.uint8:
        return images.mul(255.0).round_().to(torch.uint8)
    return images.to(like.dtype)


def pad_to_multiple(x: torch.Tensor, block: int) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` at the bottom/right up to multiples of ``block``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % block, (-w) % block
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def block_sum(x: torch.Tensor, block: int) -> torch.Tensor:
    """Sum of every ``block``×``block`` block, edge strips over their own pixels (zero padding).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)``.
    block : int
        Block side in pixels (>= 1).

    Returns
    -------
    torch.Tensor
        ``(N, C, ceil(H / block), ceil(W / block))``, the dtype of ``x``.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    x = pad_to_multiple(x, block)
    n, c, hp, wp = x.shape
    return x.reshape(n, c, hp // block, block, wp // block, block).sum(dim=(3, 5))


def region_mean_grid(images: torch.Tensor, region: int) -> torch.Tensor:
    """Per-channel mean of every ``region``×``region`` block, edge strips by their own pixels.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` floating tensor.
    region : int
        Block side in pixels (>= 1).

    Returns
    -------
    torch.Tensor
        ``(N, C, ceil(H / region), ceil(W / region))``, the dtype of ``images``.
    """
    if region < 1:
        raise ValueError(f"region must be >= 1, got {region}")
    h, w = images.shape[-2:]
    ones = torch.ones((1, 1, h, w), dtype=images.dtype, device=images.device)
    return block_sum(images, region) / block_sum(ones, region)


def region_mean(images: torch.Tensor, region: int) -> torch.Tensor:
    """Replace every ``region``×``region`` block (edge strips included) by its per-channel mean:
    :func:`region_mean_grid` upsampled by repetition to the shape of ``images``."""
    h, w = images.shape[2:]
    m = region_mean_grid(images, region)
    up = m.repeat_interleave(region, dim=2).repeat_interleave(region, dim=3)
    return up[:, :, :h, :w].contiguous()


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """One ``(C, H, W)`` image (uint8 or float in [0, 1]) -> ``(H, W, 3)`` uint8 numpy array."""
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = x.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).contiguous().numpy()


def full_blocks(images: torch.Tensor, block: int) -> torch.Tensor:
    """The full ``block``×``block`` blocks of every image, row-major over the grid.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``, any dtype.
    block : int
        Block side; edge strips narrower than a block are left out.

    Returns
    -------
    torch.Tensor
        ``(N, (H // block) * (W // block), C, block, block)``.
    """
    n, c, h, w = images.shape
    gh, gw = h // block, w // block
    x = images[:, :, : gh * block, : gw * block].reshape(n, c, gh, block, gw, block)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c, block, block)


def with_full_blocks(images: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` whose full blocks are ``blocks`` (the layout of :func:`full_blocks`);
    edge strips are kept. The result has the dtype of ``images``."""
    n, c, h, w = images.shape
    b = blocks.shape[-1]
    gh, gw = h // b, w // b
    grid = blocks.reshape(n, gh, gw, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * b, gw * b)
    out = images.clone()
    out[:, :, : gh * b, : gw * b] = grid.to(images.dtype)
    return out
