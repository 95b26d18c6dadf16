"""``noise:SIGMA``: additive Gaussian pixel noise, the "DP-style" image-noise baseline."""

from __future__ import annotations

import math

import torch

from visualmixer.eval.methods.base import ModuleMethod, Param
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["GaussianNoise", "NoiseMethod"]


class GaussianNoise(Baseline):
    """Additive Gaussian pixel noise of standard deviation ``sigma`` (in [0, 1] units), clipped.

    Parameters
    ----------
    sigma : float
        Noise standard deviation, >= 0 (0.1 = 25.5 grey levels).
    seed : int, optional
        Fixed seed (experiments only); default fresh OS randomness per call.
    """

    label = "noise"

    def __init__(self, sigma: float = 0.1, seed: int | None = None):
        super().__init__(seed)
        if not 0 <= sigma < math.inf:  # (NaN fails too)
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.sigma = float(sigma)

    def _params(self):
        return {"sigma": self.sigma}

    def _apply(self, x, g):
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + self.sigma * noise


@register_method("noise")
class NoiseMethod(ModuleMethod):
    """``noise:SIGMA`` (default 0.1): :class:`GaussianNoise`."""

    params = (Param("sigma", float, 0.1),)

    def make_module(self):
        return GaussianNoise(self.sigma, seed=self.seed)
