"""``dppix:EPS[/BLOCK]``: DP-Pix (Fan, 2018), pixelisation plus Laplace noise per cell."""

from __future__ import annotations

import math

import torch

from visualmixer.core.imageops import region_mean
from visualmixer.eval.methods.base import ModuleMethod, Param
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["DPPix", "DPPixMethod"]


def _laplace(shape, scale: float, g: torch.Generator, device, dtype) -> torch.Tensor:
    u = torch.rand(shape, generator=g, device=device, dtype=torch.float64) - 0.5
    u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)
    return (-scale * torch.sign(u) * torch.log1p(-2 * u.abs())).to(dtype)


class DPPix(Baseline):
    """DP-Pix (Fan, 2018): pixelise with ``block``-pixel cells, then add Laplace noise per cell.

    The noise scale is ``m / (block² · epsilon)`` in [0, 1] units, i.e. ε-differential privacy for
    images that differ in at most ``m`` pixels (sensitivity of a cell mean: ``m / block²``).

    Parameters
    ----------
    block : int
        Cell side in pixels.
    epsilon : float
        Privacy budget, > 0 (smaller = more noise).
    m : int
        Number of pixels a neighbouring image may differ in (default 16, as in the paper).
    """

    label = "dppix"

    def __init__(self, block: int = 4, epsilon: float = 1.0, m: int = 16, seed: int | None = None):
        super().__init__(seed)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        if not 0 < epsilon < math.inf:  # (NaN fails too; infinity would be no noise, called DP)
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.block, self.epsilon, self.m = int(block), float(epsilon), int(m)

    def _params(self):
        return {"epsilon": self.epsilon, "block": self.block}

    def _apply(self, x, g):
        b = self.block
        n, c, h, w = x.shape
        cells = (n, c, math.ceil(h / b), math.ceil(w / b))
        scale = self.m / (b * b * self.epsilon)
        noise = _laplace(cells, scale, g, x.device, x.dtype)
        noise = noise.repeat_interleave(b, 2).repeat_interleave(b, 3)[:, :, :h, :w]
        return region_mean(x, b) + noise


@register_method("dppix")
class DPPixMethod(ModuleMethod):
    """``dppix:EPS[/BLOCK]`` (defaults 1 and 4-px cells): :class:`DPPix`."""

    params = (Param("epsilon", float, 1.0), Param("block", int, 4))

    def make_module(self):
        return DPPix(block=self.block, epsilon=self.epsilon, seed=self.seed)
