"""Training-free machine-vision saliency: spectral residual (Hou & Zhang, CVPR 2007).

VFE weights each region by how much a vision model relies on it. The default is the
spectral-residual map, which needs no model or weights. Any callable with the :class:`Saliency`
signature can replace it (e.g. class-activation maps of the user's own model).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from visualmixer.core.keyed import to_device

__all__ = ["Saliency", "spectral_residual", "gaussian_blur2d"]


@runtime_checkable
class Saliency(Protocol):
    """A saliency model: ``(N, C, H, W)`` images -> ``(N, 1, H, W)`` (or ``(N, H, W)``) weights.

    Values are non-negative; larger means "a model looks here more". A per-region map of shape
    ``(N, ceil(H/s), ceil(W/s))`` for the VFE window side ``s`` is accepted as well.
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _abs2(z: torch.Tensor) -> torch.Tensor:
    """``|z|^2`` of a complex tensor, as a real tensor."""
    re, im = z.real, z.imag
    return (re * re).add_(im * im)  # (one temporary fewer than re * re + im * im; same sums)


@lru_cache(maxsize=64)
def _blur_matrix(size: int, sigma: float, mode: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``(size, size)`` matrix ``B`` with ``B @ v`` = the 1-D Gaussian blur of ``v`` (padding folded in)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return _band_matrix(size, tuple((k / k.sum()).tolist()), mode, dtype, device)


@lru_cache(maxsize=64)
def _band_matrix(size: int, kernel: tuple, mode: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``(size, size)`` matrix applying a centred 1-D ``kernel`` with ``mode`` padding folded in."""
    radius = len(kernel) // 2
    k = torch.tensor(kernel, dtype=torch.float64)
    src = torch.arange(size).view(-1, 1) + torch.arange(-radius, radius + 1).view(1, -1)
    if mode == "reflect":
        src = src.abs()
        src = torch.where(src > size - 1, 2 * (size - 1) - src, src)
    else:
        src = src.clamp(0, size - 1)
    mat = torch.zeros(size, size, dtype=torch.float64)
    mat.scatter_add_(1, src, k.expand(size, -1).contiguous())
    return to_device(mat.to(dtype), device)


def gaussian_blur2d(x: torch.Tensor, sigma: float, *, padding: str | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` float input (kernel radius ``ceil(3 sigma)``).

    The one Gaussian blur of the package. It runs as two banded matrix products ``B_h X B_w^T``
    with the padding folded into the matrices (about 10x faster than two ``conv2d`` at the small
    sizes saliency works at).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` floating.
    sigma : float
        Standard deviation in pixels (> 0).
    padding : {"reflect", "replicate"}, optional
        Border rule; default reflect, or replicate where a side is not longer than the radius.
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    h, w = x.shape[-2:]
    mode = padding or ("reflect" if min(h, w) > radius else "replicate")
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"padding must be 'reflect' or 'replicate', got {padding!r}")
    if mode == "reflect" and min(h, w) <= 1:
        mode = "replicate"
    bh = _blur_matrix(h, float(sigma), mode, x.dtype, str(x.device))
    bw = bh if w == h else _blur_matrix(w, float(sigma), mode, x.dtype, str(x.device))
    return torch.matmul(torch.matmul(bh, x), bw.T)


def spectral_residual(images: torch.Tensor, *, size: int = 64, sigma: float = 2.5) -> torch.Tensor:
    """Spectral-residual saliency, batched.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``, uint8 or floating; the mean over channels is used.
    size : int
        Side of the square working resolution (the method works at a fixed small scale);
        images whose longer side is shorter work at that side instead (never upsampled).
    sigma : float
        Gaussian smoothing of the saliency map, in pixels of a ``size``-sided working image
        (scaled down with the working resolution for small images).

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)`` float32 (float64 for float64 input) in ``[0, 1]``, min-max normalised
        per image; a map without any contrast (e.g. of a flat image) is all ones.

    Examples
    --------
    >>> import torch
    >>> s = spectral_residual(torch.rand(2, 3, 40, 30))
    >>> s.shape, float(s.min()) >= 0, float(s.max()) <= 1
    (torch.Size([2, 1, 40, 30]), True, True)
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    # The map is built at size x size in float64 (cheap), normalised there, and only then
    # upsampled, so it hardly depends on the input dtype and costs little at full resolution.
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    # C <= 3: adds are much faster than a reduction over dim 1 (uint8 channels summed in int16)
    # (in place on a copy of the first channel: full-size temporaries are page faults on the CPU)
    # (contiguous: the flat views below need it, whatever the caller's strides)
    grey = images[:, :1].to(torch.int16 if images.dtype == torch.uint8 else work, copy=True,
                            memory_format=torch.contiguous_format)
    for ch in range(1, images.shape[1]):
        grey.add_(images[:, ch : ch + 1])
    grey = grey.to(work).div_(images.shape[1])
    work_size = max(8, min(size, max(h, w)))
    sigma = sigma * work_size / size
    size = work_size
    if (h, w) == (size, size):  # already at the working size: no resize
        small = grey.to(torch.float64, copy=True)  # (changed in place below; grey is used again)
    else:
        small = F.interpolate(grey, size=(size, size), mode="area" if min(h, w) >= size else "bilinear")
        small = small.to(torch.float64)
    # Remove the mean and use a relative floor, so the map ignores brightness offset and contrast.
    small.sub_(small.view(n, -1).mean(dim=1).view(n, 1, 1, 1))  # (flat views reduce faster)
    flat_small = small.view(n, -1)  # max |small| without a full-size abs()
    spread = torch.maximum(flat_small.amax(dim=1), flat_small.amin(dim=1).neg()).view(n, 1, 1, 1)
    # The spectrum in float32 for uint8/float32 input (half the work; the map is then within ~1e-6
    # of the float64 one); the mean removal above stays in float64 so a flat image stays exactly
    # flat.
    spectrum = torch.fft.fft2(small if work == torch.float64 else small.float())
    true_amp = _abs2(spectrum).sqrt_()  # |z| without complex abs's slow hypot
    amp = true_amp.clone()
    amp[..., 0, 0].fill_(0)  # the DC term is rounding noise after removing the mean (fill_:
    # assigning a Python number would be a host synchronisation on a GPU)
    tiny = torch.finfo(amp.dtype).tiny
    # in place from here on: each full-size temporary is working memory beside a training step
    log_amp = amp.add_(1e-6 * amp.view(n, -1).amax(dim=1).view(n, 1, 1, 1)).add_(tiny).log_()
    box = _band_matrix(size, (1 / 3, 1 / 3, 1 / 3), "replicate", log_amp.dtype, str(log_amp.device))
    smooth = torch.matmul(torch.matmul(box, log_amp), box.T)  # 3x3 mean, replicate padding
    # exp(residual + i phase) = exp(residual) * spectrum / |spectrum| (no atan2, no complex exp;
    # a zero coefficient has phase 0)
    nonzero = true_amp > 0
    unit = torch.where(nonzero, spectrum, 1.0)
    unit.mul_(log_amp.sub_(smooth).exp_().div_(torch.where(nonzero, true_amp, 1.0)))
    sal = _abs2(torch.fft.ifft2(unit))
    sal = gaussian_blur2d(sal.to(work), sigma).double()
    flat = sal.reshape(n, -1)
    lo = flat.min(dim=1).values.view(n, 1, 1, 1)
    hi = flat.max(dim=1).values.view(n, 1, 1, 1)
    span = hi - lo
    # A flat input (or a map without contrast) weighs every place equally.
    flat_grey = grey.view(n, -1)  # max |grey| without a full-size abs() (aminmax is slower)
    scale = torch.maximum(flat_grey.amax(dim=1), flat_grey.amin(dim=1).neg()).view(n, 1, 1, 1).to(torch.float64)
    has_contrast = (span > 1e-9 * hi.abs().clamp_min(1e-300)) & (spread > 1e-12 * scale)
    sal = torch.where(has_contrast, sal.sub_(lo).div_(span.clamp_min(1e-300)), 1.0)
    if (h, w) == (size, size):
        return sal.to(work).clamp_(0, 1)
    out = F.interpolate(sal.to(work), size=(h, w), mode="bilinear", align_corners=False)
    return out.clamp_(0, 1)


def is_own_saliency(saliency) -> bool:
    """Whether ``saliency`` names one of the library's own maps (``None``: spectral residual, or
    a name such as ``"uniform"``): made per image, finite and non-negative by construction."""
    return saliency is None or isinstance(saliency, str)


def resolve_saliency(saliency, images: torch.Tensor, window: int) -> tuple[torch.Tensor, bool]:
    """The saliency map the public functions were given, as float64 on the images' device.

    ``saliency`` may be ``None`` (:func:`spectral_residual`), ``"uniform"`` (equal weight per
    pixel), a callable :class:`Saliency`, or a tensor: per pixel ``(N, 1, H, W)`` / ``(N, H, W)``
    or per window ``(N, ceil(H / window), ceil(W / window))``.

    Returns
    -------
    (torch.Tensor, bool)
        The map — ``(N, 1, H, W)`` per pixel, or ``(N, nh, nw)`` per window — and whether it is
        per window.
    """
    n, _, h, w = images.shape
    nh, nw = -(-h // window), -(-w // window)
    if isinstance(saliency, str):
        if saliency != "uniform":
            raise ValueError(f"saliency must be None, 'uniform', a callable or a tensor; got {saliency!r}")
        smap = torch.ones((n, 1, h, w), dtype=torch.float64, device=images.device)
    elif saliency is None:
        smap = spectral_residual(images)
    elif isinstance(saliency, torch.Tensor):
        smap = saliency
    elif callable(saliency):
        smap = saliency(images)
        if not isinstance(smap, torch.Tensor):
            raise TypeError(f"the saliency callable must return a tensor, got {type(smap).__name__}")
    else:
        raise TypeError(f"saliency must be None, 'uniform', a callable or a tensor; got {type(saliency).__name__}")
    smap = smap.to(device=images.device, dtype=torch.float64)
    if smap.shape == (n, nh, nw) and (nh, nw) != (h, w):
        return smap, True
    if smap.ndim == 3:
        smap = smap.unsqueeze(1)
    if smap.shape != (n, 1, h, w):
        raise ValueError(
            f"saliency map has shape {tuple(smap.shape)}; expected per pixel ({n}, 1, {h}, {w}) "
            f"/ ({n}, {h}, {w}) or per window ({n}, {nh}, {nw})"
        )
    return smap, False
