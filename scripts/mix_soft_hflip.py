"""`visualmixer train` with random horizontal flips while training (an experiment; docs/privacy.md §4c).

Registers ``<model>-hflip`` for every model of ``--model``: the same network, which in training mode
flips each input left-right with probability 0.5 (the usual ``RandomHorizontalFlip``; evaluation is
unchanged). On a protected image whose width is a multiple of the region side a flip maps regions onto
regions, so a region-sorted model sees the mirrored region grid. ``region-sorted-hflip`` is also allowed
as the ``--soft-labels`` teacher. With ``FLIP_BATCHES=1`` the model's training batches are flipped
before the model *and the in-process teacher* see them (consistent teaching: the teacher's
probabilities are those of the flipped image). Every argument is passed to `visualmixer train`:

    OMP_NUM_THREADS=1 python scripts/mix_soft_hflip.py train --data fashion-mnist --epochs 10 \
        --model region-sorted-hflip --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted --out out/f
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from visualmixer.cli import main
from visualmixer.train import loop, models, soft_labels


class RandomFlipWhileTraining(nn.Module):
    """``inner`` behind a per-image random left-right flip in training mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return self.inner(x)


def _flipping(prepare):
    def flipped(xb: torch.Tensor) -> torch.Tensor:
        x = prepare(xb)
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    return flipped


def _fit_with_flipped_batches(model, data, **kw):
    kw["prepare"] = _flipping(kw["prepare"])
    return _fit(model, data, **kw)


_fit = loop.fit_classifier


if __name__ == "__main__":
    for name, make in list(models.MODELS.items()):
        models.MODELS[f"{name}-hflip"] = lambda c, k, r, make=make: RandomFlipWhileTraining(make(c, k, r))
    soft_labels.SHUFFLE_BLIND_MODELS = (*soft_labels.SHUFFLE_BLIND_MODELS, "region-sorted-hflip")
    if os.environ.get("FLIP_BATCHES") == "1":
        loop.fit_classifier = _fit_with_flipped_batches
    sys.exit(main(sys.argv[1:]))
