"""``blur:SIGMA``: Gaussian blur (deterministic)."""

from __future__ import annotations

import math

from visualmixer.core.saliency import gaussian_blur2d
from visualmixer.eval.methods.base import ModuleMethod, Param
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["GaussianBlur", "BlurMethod"]


class GaussianBlur(Baseline):
    """Gaussian blur of standard deviation ``sigma`` pixels (deterministic).

    The kernel is :func:`visualmixer.core.saliency.gaussian_blur2d` (separable, ±3σ) with
    replicate padding, so any image size works.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0; the kernel spans ±3σ.
    """

    label = "blur"

    def __init__(self, sigma: float = 2.0):
        super().__init__(None)
        if not 0 < sigma < math.inf:  # (NaN fails too)
            raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
        self.sigma = float(sigma)

    def _params(self):
        return {"sigma": self.sigma}

    def _apply(self, x, g):
        return gaussian_blur2d(x, self.sigma, padding="replicate")


@register_method("blur")
class BlurMethod(ModuleMethod):
    """``blur:SIGMA`` (default 2): :class:`GaussianBlur`."""

    params = (Param("sigma", float, 2.0),)

    def make_module(self):
        return GaussianBlur(self.sigma)
