"""``pixelate:BLOCK``: block means, upsampled (edge strips are blocks too)."""

from __future__ import annotations

from visualmixer.core.imageops import region_mean
from visualmixer.eval.methods.base import ModuleMethod, Param
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["Pixelate", "PixelateMethod"]


class Pixelate(Baseline):
    """Pixelation: replace each ``block``×``block`` cell (edge strips included) by its mean.

    Parameters
    ----------
    block : int
        Cell side in pixels, >= 1.
    """

    label = "pixelate"

    def __init__(self, block: int = 4):
        super().__init__(None)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = int(block)

    def _params(self):
        return {"block": self.block}

    def _apply(self, x, g):
        return region_mean(x, self.block)


@register_method("pixelate")
class PixelateMethod(ModuleMethod):
    """``pixelate:BLOCK`` (default 4): :class:`Pixelate`."""

    params = (Param("block", int, 4),)

    def make_module(self):
        return Pixelate(self.block)
