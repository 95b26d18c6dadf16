"""``dpsgd:NOISE_MULTIPLIER``: DP-SGD, which protects the model, not the pixels.

The released images are the originals; the audit measures its utility by training with DP-SGD
(:func:`visualmixer.train.dpsgd.dpsgd_train`, Opacus) on the clean training images.
"""

from __future__ import annotations

from visualmixer.eval.methods.base import Param, ProtectionMethod
from visualmixer.eval.methods.registry import register_method

__all__ = ["DPSGDMethod"]


@register_method("dpsgd")
class DPSGDMethod(ProtectionMethod):
    """``dpsgd:NOISE_MULTIPLIER`` (default 1): clean images, a DP-SGD-trained utility model."""

    params = (Param("noise_multiplier", float, 1.0),)
    changes_pixels = False
    utility = "dpsgd"

    def validate(self):
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")

    def protect(self, images, *, ids=None, key=None):
        return images
