"""``Baseline``: the ``nn.Module`` base of the baseline image transforms.

Every baseline transform takes ``(N, C, H, W)`` or ``(C, H, W)`` images, uint8 or floating in
[0, 1], and returns the same shape and dtype (float results are clipped to [0, 1] and rounded for
uint8). Randomness is fresh per call from the OS unless ``seed`` is given (a seed is for
experiments only: it is not secret). The registered methods around them live in the family
modules (``noise``, ``dppix``, ``blur``, ``pixelate``, ``scramble``, ``instahide``, ``clean``).
"""

from __future__ import annotations

import torch
from torch import nn

from visualmixer.core.imageops import add_batch_axis, from_float, to_float
from visualmixer.eval.methods.base import os_seed

__all__ = ["Baseline"]


def _generator(seed: int | None, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(os_seed() if seed is None else int(seed))


class Baseline(nn.Module):
    """Base class: handles shapes, dtype round trips and the random generator.

    Subclasses implement ``_apply(x, g)`` on float32 ``(N, C, H, W)`` in [0, 1] and return float
    images (they are clipped to [0, 1] and cast back here).
    """

    #: short name used in reports
    label = "baseline"

    def __init__(self, seed: int | None = None):
        super().__init__()
        self.seed = seed
        self._calls = 0

    def _next_generator(self, device) -> torch.Generator:
        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        return _generator(seed, device)

    def forward(self, images):  # noqa: D102 - documented in the class
        x, added = add_batch_axis(images)
        out = from_float(self._apply(to_float(x), self._next_generator(x.device)), x)
        return out[0] if added else out

    def _apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._params().items())

    def _params(self) -> dict:
        return {}

    @property
    def name(self) -> str:
        """``label:param`` string, as in reports."""
        p = self._params()
        return self.label + (":" + ",".join(str(v) for v in p.values()) if p else "")
