"""Visual Feature Entropy.

For channel ``c`` and a non-overlapping window ``w`` of ``s x s`` pixels::

    G(c, w) = sum over adjacent pixel pairs (p, q) inside w of (I_c(p) - I_c(q))**2
    V(c, w) = sum over pixels p in w of (I_c(p) - mean_w I_c)**2
    v(c, w) = k(w) * G / V        (0 where V == 0)

with ``k = (s + 1) / (4 s)`` for a full window (``(ab - 1) / (2 (a(b-1) + (a-1)b))`` for a partial
``a x b`` edge window), so i.i.d. noise scores 1 and a smooth image close to 0. Only pairs inside the
window count. The image VFE is the saliency-weighted mean of the channel-averaged ``v`` over
windows; window weights are the summed per-pixel saliency of each window.

uint8 input is computed exactly (integer sums); floating input with a two-pass variance, float64
in float64 and other floating dtypes in float32 (within 2e-6 of float64 for values of magnitude
1e-18 to 1e12; beyond, float32's squares overflow or underflow: pass float64), so the value does
not depend on offset or contrast scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from visualmixer.core.imageops import block_sum, pad_to_multiple
from visualmixer.core.regions import default_region
from visualmixer.core.saliency import is_own_saliency, resolve_saliency
from visualmixer.core.validation import to_batch

__all__ = ["vfe", "vfe_map", "window_scores", "scores_from_windows", "window_weights", "weighted_vfe"]


def window_norm(h: int, w: int, s: int, device: torch.device) -> torch.Tensor:
    """(nh, nw) normalisation k(w) so that i.i.d. noise scores 1 in every window."""
    nh, nw = -(-h // s), -(-w // s)
    # Window sides: s, and what is left for the last one; made with device ops (assigning a
    # Python number to an element of a GPU tensor is a host synchronisation).
    a = (h - torch.arange(nh, dtype=torch.float64, device=device) * s).clamp_(max=s).view(-1, 1)
    b = (w - torch.arange(nw, dtype=torch.float64, device=device) * s).clamp_(max=s).view(1, -1)
    pairs = a * (b - 1) + (a - 1) * b
    return torch.where(pairs > 0, (a * b - 1) / (2 * pairs.clamp_min(1)), torch.zeros_like(pairs))


def _square_(x: torch.Tensor) -> torch.Tensor:
    """In-place square; ``x * x`` (``square_`` on integers is a slow integer ``pow``)."""
    return x.mul_(x)


def exact_square_sum(d: torch.Tensor, dim: int) -> torch.Tensor:
    """Exact ``sum(d ** 2)`` over ``dim`` (at most 128 long) of int16 values ``|d| <= 255``, int32.

    ``d * d`` wraps in int16; its two bytes are summed separately in int16 (each sum fits), which
    avoids 32-bit element-wise passes: converting uint8/int16 to int32 is the slowest step of
    integer scoring on the CPU.
    """
    q = d * d
    hi = q.bitwise_right_shift(8).bitwise_and_(0xFF).sum(dim, dtype=torch.int16)
    lo = q.bitwise_and_(0xFF).sum(dim, dtype=torch.int16)
    return hi.to(torch.int32).mul_(256).add_(lo)


def integral_ratio(g: torch.Tensor, total: torch.Tensor, sumsq: torch.Tensor, count) -> torch.Tensor:
    """``G / V`` (times the pixel count's bookkeeping) from exact integer window sums.

    ``g``, ``total`` and ``sumsq`` are float64 holding exact integers (sum of squared pair
    differences, of values, of squared values); ``count`` the pixels per window. The one-pass
    ``n V = n sum(x^2) - sum(x)^2`` is then exact. One home for this arithmetic, so a window's
    score computed from sums gathered elsewhere (the one-pass targeting in
    :mod:`visualmixer.core.mixer`) is bit-identical to :func:`scores_from_windows`.
    """
    nv = count * sumsq - total * total
    return torch.where(nv > 0, g * count / nv.clamp_min(1), torch.zeros_like(g))


def scores_from_windows(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-channel VFE of images already cut into windows.

    Parameters
    ----------
    windows : torch.Tensor
        ``(N, C, nh, nw, s, s)`` (any strides), zero beyond the image's ``height x width``.
    height, width : int
        The image size the windows cover.

    Returns
    -------
    torch.Tensor
        ``(N, C, nh, nw)`` float64.
    """
    n, c, nh, nw, s, _ = windows.shape
    dev = windows.device
    # uint8 input is scored with integer arithmetic (int32 differences and squares, exact integer
    # sums): exact, so the one-pass variance is exact too.
    integral = windows.dtype == torch.uint8
    work = torch.float64 if windows.dtype == torch.float64 else (torch.int32 if integral else torch.float32)
    # A private, contiguous working copy (modified in place below): window sums then run over
    # contiguous memory, which is several times faster than over a strided view of an image.
    x = torch.empty(windows.shape, dtype=work, device=windows.device).copy_(windows)
    padded = nh * s != height or nw * s != width
    if padded:
        inside = _inside(nh, nw, s, height, width, dev).to(x.dtype)  # (nh, nw, s, s)
    dh = _square_(x[..., 1:] - x[..., :-1])
    dv = _square_(x[..., 1:, :] - x[..., :-1, :])
    if padded:  # a pair counts only when both pixels are inside the image
        dh.mul_(inside[..., 1:] * inside[..., :-1])
        dv.mul_(inside[..., 1:, :] * inside[..., :-1, :])
        count = inside.sum(dim=(-2, -1)).to(torch.float64)
    else:
        count = torch.full((nh, nw), float(s * s), dtype=torch.float64, device=dev)
    # Reduce in the working dtype (a float64 accumulator is several times slower on CPU); integer
    # window sums stay in int32 where they cannot overflow (any window up to 90 px).
    acc = torch.int32 if integral and 2 * s * s * 255**2 < 2**31 else None
    g = dh.sum(dim=(-2, -1), dtype=acc).double() + dv.sum(dim=(-2, -1), dtype=acc).double()
    total = x.sum(dim=(-2, -1), dtype=acc).double()
    if integral:
        ratio = integral_ratio(g, total, _square_(x).sum(dim=(-2, -1), dtype=acc).double(), count)
    else:
        mean = (total / count).to(x.dtype)
        scale = x.abs().sum(dim=(-2, -1)).double() / count  # magnitude of the values
        dev2 = x.sub_(mean[..., None, None]).square_()
        if padded:
            dev2.mul_(inside)
        var = dev2.sum(dim=(-2, -1)).double()
        flat = var <= (1e-10 * scale.square()) * count
        ratio = torch.where(flat, torch.zeros_like(g), g / var.clamp_min(1e-300))
    return ratio * window_norm(height, width, s, dev)


def _inside(nh: int, nw: int, s: int, height: int, width: int, dev) -> torch.Tensor:
    """``(nh, nw, s, s)`` bool: which window pixels lie inside the image."""
    rows = torch.arange(nh * s, device=dev).view(nh, 1, s, 1) < height
    cols = torch.arange(nw * s, device=dev).view(1, nw, 1, s) < width
    return rows & cols


def window_scores(images: torch.Tensor, window: int) -> torch.Tensor:
    """Per-channel, per-window VFE ``v`` of a validated ``(N, C, H, W)`` batch.

    Returns
    -------
    torch.Tensor
        ``(N, C, ceil(H / window), ceil(W / window))`` float64.
    """
    n, c, h, w = images.shape
    s = int(window)
    x = pad_to_multiple(images, s)
    nh, nw = x.shape[-2] // s, x.shape[-1] // s
    windows = x.view(n, c, nh, s, nw, s).permute(0, 1, 2, 4, 3, 5)
    return scores_from_windows(windows, h, w)


def window_weights(
    images: torch.Tensor,
    saliency: Callable | torch.Tensor | str | None,
    window: int,
    *,
    trusted: bool = False,
) -> torch.Tensor:
    """Window weights ``(N, nh, nw)`` float64 from a saliency model, map, or ``"uniform"``.

    ``saliency`` may be ``None`` (spectral residual), ``"uniform"`` (equal weight per pixel), a
    callable :class:`~visualmixer.core.saliency.Saliency`, or a precomputed tensor: per pixel
    ``(N, 1, H, W)``/``(N, H, W)`` or per window ``(N, nh, nw)``. A map made by this package
    (``None``, ``"uniform"``, or ``trusted=True``) is not checked for finite, non-negative
    values (the check costs a host synchronisation on accelerators).
    """
    s = int(window)
    smap, per_window = resolve_saliency(saliency, images, s)
    weights = smap if per_window else block_sum(smap, s)[:, 0]
    checked = trusted or is_own_saliency(saliency)
    if not checked and (not bool(torch.isfinite(weights).all()) or bool((weights < 0).any())):
        raise ValueError("saliency weights must be finite and non-negative")
    return weights


def weighted_vfe(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Image VFE from per-channel window scores ``(N, C, nh, nw)`` and weights ``(N, nh, nw)``.

    Images whose weights are all zero fall back to equal weights.
    """
    v = scores.mean(dim=1)
    wsum = weights.sum(dim=(1, 2))
    uniform = wsum <= 0  # (no branch: no host synchronisation on accelerators)
    weights = torch.where(uniform.view(-1, 1, 1), torch.ones_like(weights), weights)
    wsum = torch.where(uniform, weights.sum(dim=(1, 2)), wsum)
    return (v * weights).sum(dim=(1, 2)) / wsum


def _resolve_window(images: torch.Tensor, window: int | None) -> int:
    if window is None:
        return default_region(images.shape[-2], images.shape[-1])
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive int or None (default for the size), got {window!r}")
    return window


def vfe_map(images, window: int | None = None) -> torch.Tensor:
    """Per-channel, per-window VFE.

    Parameters
    ----------
    images : torch.Tensor | numpy.ndarray | PIL.Image.Image
        ``(N, C, H, W)`` or ``(C, H, W)`` tensor (or an ``(H, W[, C])`` array / PIL image),
        C in {1, 3}, uint8 or floating.
    window : int, optional
        Window side ``s``; default :func:`~visualmixer.core.regions.default_region` of the image size.

    Returns
    -------
    torch.Tensor
        ``(N, C, ceil(H/s), ceil(W/s))`` float64 (no batch dimension for a single image).

    Examples
    --------
    >>> import torch
    >>> m = vfe_map(torch.rand(2, 3, 32, 32), window=8)
    >>> m.shape
    torch.Size([2, 3, 4, 4])
    """
    batch, info = to_batch(images)
    out = window_scores(batch, _resolve_window(batch, window))
    return out if info.kind == "tensor4" else out[0]


def vfe(images, saliency=None, window: int | None = None) -> torch.Tensor:
    """Visual Feature Entropy per image (higher = less recognisable structure).

    Parameters
    ----------
    images : torch.Tensor | numpy.ndarray | PIL.Image.Image
        ``(N, C, H, W)`` or ``(C, H, W)`` tensor, C in {1, 3}, uint8 or floating.
    saliency : None | "uniform" | callable | torch.Tensor
        Machine-side weighting (default: spectral-residual saliency of ``images`` themselves).
    window : int, optional
        Window side; default :func:`~visualmixer.core.regions.default_region` of the image size.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float64 (a 0-d tensor for a single unbatched image).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> noise = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8, generator=g)
    >>> round(float(vfe(noise)), 1)
    1.0
    """
    batch, info = to_batch(images)
    s = _resolve_window(batch, window)
    out = weighted_vfe(window_scores(batch, s), window_weights(batch, saliency, s))
    return out if info.kind == "tensor4" else out[0]
