"""``clean``: no protection, the reference row of every table."""

from __future__ import annotations

from visualmixer.eval.methods.base import ProtectionMethod
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["Identity", "CleanMethod"]


class Identity(Baseline):
    """No protection (the reference row of every table)."""

    label = "clean"

    def _apply(self, x, g):
        return x


@register_method("clean")
class CleanMethod(ProtectionMethod):
    """``clean``: the images as they are; the utility reference of the audit."""

    changes_pixels = False
    reference = True

    def protect(self, images, *, ids=None, key=None):
        return images

    def as_module(self) -> Identity:
        """The method as an ``nn.Module`` transform."""
        return Identity()
