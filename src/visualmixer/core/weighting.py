"""What :func:`~visualmixer.core.mixer.obfuscate` derives from the original images alone — the
VFE window weights and the salient regions — computed once and reused.

Online training obfuscates the same images every epoch with new keys; the saliency of an
original does not change, and it is about a third of an ``obfuscate`` call on small images
(spectral residual: two FFTs and two blurs). :func:`saliency_weights` computes it for a batch;
``obfuscate(..., saliency=weights)`` then skips it and gives the same bytes as computing it in
the call.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from visualmixer.core.planner import _pixel_saliency, _salient_regions
from visualmixer.core.regions import default_region, region_grid, resolve_region
from visualmixer.core.saliency import is_own_saliency
from visualmixer.core.validation import to_batch
from visualmixer.core.vfe import window_weights

__all__ = ["SaliencyWeights", "saliency_weights", "weigh", "check_weights", "weight_shapes"]


@dataclass(frozen=True, eq=False)  # (tensors: compare their fields, not the records)
class SaliencyWeights:
    """Per-image weights of :func:`~visualmixer.core.mixer.obfuscate`'s target, from the
    originals' saliency: made by :func:`saliency_weights`, given back as ``saliency=``.

    Attributes
    ----------
    weights : torch.Tensor
        ``(N, nh, nw)`` float64: the saliency of each VFE window (side ``default_region(H, W)``).
    salient : torch.Tensor
        ``(N, rows * cols)`` bool: the most salient quarter of each image's regions of side ``region``.
    region, height, width : int
        The region side and image size they belong to.
    """

    weights: torch.Tensor
    salient: torch.Tensor
    region: int
    height: int
    width: int

    def __post_init__(self):
        n = self.weights.shape[0] if self.weights.ndim == 3 else -1
        windows, regions = weight_shapes(self.height, self.width, self.region)
        if (self.weights.dtype != torch.float64 or tuple(self.weights.shape[1:]) != windows
                or self.salient.dtype != torch.bool or tuple(self.salient.shape) != (n, regions)):
            raise ValueError(
                f"SaliencyWeights: weights must be (N, {windows[0]}, {windows[1]}) float64 and salient "
                f"(N, {regions}) bool for {self.height}x{self.width} images and region "
                f"{self.region}; got {tuple(self.weights.shape)} {self.weights.dtype} and "
                f"{tuple(self.salient.shape)} {self.salient.dtype}"
            )

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __getitem__(self, rows) -> SaliencyWeights:
        """The images ``rows`` (an int — also a NumPy or 0-d tensor integer —, slice, index list or tensor)."""
        try:
            i = operator.index(rows)
        except TypeError:
            i = None
        if i is not None:
            if not -len(self.weights) <= i < len(self.weights):
                raise IndexError(f"SaliencyWeights index {i} out of range for {len(self.weights)} image(s)")
            rows = slice(i, i + 1 if i != -1 else None)
        return SaliencyWeights(self.weights[rows], self.salient[rows], self.region, self.height, self.width)

    def to(self, device) -> SaliencyWeights:
        """The same weights on ``device``."""
        return SaliencyWeights(self.weights.to(device), self.salient.to(device), self.region, self.height, self.width)


def weight_shapes(height: int, width: int, region: int) -> tuple[tuple[int, int], int]:
    """``((nh, nw), regions)``: the VFE windows and the number of regions of side ``region`` of
    one ``height × width`` image — the shapes of one row of :class:`SaliencyWeights`."""
    windows = region_grid(height, width, default_region(height, width))
    grid = region_grid(height, width, region)
    return (windows.rows, windows.cols), grid.rows * grid.cols


def saliency_weights(images, *, region: int | None = None, saliency=None) -> SaliencyWeights:
    """The part of :func:`~visualmixer.core.mixer.obfuscate` that depends on the images alone.

    Parameters
    ----------
    images : torch.Tensor | numpy.ndarray | PIL.Image.Image
        As for :func:`~visualmixer.core.mixer.obfuscate`: ``(N, C, H, W)`` or one image.
    region : int, optional
        The region side the weights will be used with (default: by image size).
    saliency : None | "uniform" | callable | torch.Tensor
        As for :func:`~visualmixer.core.mixer.obfuscate` (default: spectral residual).

    Returns
    -------
    SaliencyWeights
        ``N`` rows; pass them (or rows of them, in the images' order) as ``saliency=`` to
        ``obfuscate`` calls on the same images with the same ``region``: the output is the same
        bytes as without them, minus the saliency's cost.

    Examples
    --------
    >>> import torch, visualmixer as vm
    >>> key = vm.Key.from_seed(0)
    >>> x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    >>> w = vm.saliency_weights(x)
    >>> a = vm.obfuscate(x, key=key, ids=range(4), target_vfe=0.5)
    >>> b = vm.obfuscate(x, key=key, ids=range(4), target_vfe=0.5, saliency=w)
    >>> bool((a.images == b.images).all())
    True
    """
    if isinstance(saliency, SaliencyWeights):
        raise TypeError("saliency_weights: saliency is already SaliencyWeights")
    batch, _ = to_batch(images)
    return weigh(batch, resolve_region(region, *batch.shape[2:]), saliency)


def weigh(batch: torch.Tensor, region: int, saliency) -> SaliencyWeights:
    """:func:`saliency_weights` of a checked batch ``(N, C, H, W)`` and region side."""
    h, w = batch.shape[2:]
    window = default_region(h, w)  # a function of the size only, so VFE stays comparable
    smap, per_window = _pixel_saliency(batch, saliency, window)
    given = smap if per_window is None else per_window
    return SaliencyWeights(window_weights(batch, given, window, trusted=is_own_saliency(saliency)),
                           _salient_regions(smap, region_grid(h, w, region)), region, h, w)


def check_weights(weights: SaliencyWeights, batch: torch.Tensor, region: int) -> SaliencyWeights:
    """``weights`` on the batch's device after checking they belong to it (``saliency=`` of
    ``obfuscate``): one row per image, the same image size and region side."""
    n, _, h, w = batch.shape
    if (weights.height, weights.width) != (h, w) or weights.region != region or len(weights) != n:
        raise ValueError(
            f"saliency: SaliencyWeights for {len(weights)} images of {weights.height}x{weights.width} with "
            f"region {weights.region}, given with {n} images of {h}x{w} and region {region}; make them "
            "with saliency_weights(images, region=...) from the same images"
        )
    return weights.to(batch.device)
