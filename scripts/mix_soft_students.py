"""`visualmixer train` with other region-sorted students (experiments; docs/privacy.md §4c).

Registers three ``--model`` names for the student; the teacher stays ``--soft-labels region-sorted``:

- ``region-sorted-wide`` — :class:`~visualmixer.train.models.RegionSortedCNN` with twice the
  channels (128 / 256 / 256) and a 256-unit hidden layer, 4.1 M parameters against 1.03 M;
- ``region-sorted-dropout`` — the same network with dropout (p = 0.3) on the flattened grid and on
  the hidden layer while training;
- ``region-sorted-regiondrop`` — the same network with every region-grid position's features zeroed
  with probability 0.1 while training (after the 1×1 layer; the rest rescaled by 1/0.9).

Every argument is passed to `visualmixer train`:

    OMP_NUM_THREADS=2 python scripts/mix_soft_students.py train --data fashion-mnist --epochs 10 \
        --model region-sorted-wide --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted --out out/w
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from visualmixer.cli import main
from visualmixer.train import models
from visualmixer.train.models import RegionSortedCNN


class WideRegionSortedCNN(RegionSortedCNN):
    """The region-sorted CNN at twice the width."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, region: int = 4) -> None:
        super().__init__(in_channels, num_classes, region)
        self.grid = nn.Sequential(
            nn.Conv2d(in_channels * region * region, 128, 1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256 * 7 * 7, 256), nn.ReLU(inplace=True),
                                        nn.Linear(256, num_classes))


class DropoutRegionSortedCNN(RegionSortedCNN):
    """The region-sorted CNN with dropout before both linear layers."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, region: int = 4) -> None:
        super().__init__(in_channels, num_classes, region)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 7 * 7, 128),
                                        nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(128, num_classes))


class _GridPositionDropout(nn.Module):
    """Zero each grid position's feature vector with probability ``p`` in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = (torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class RegionDropRegionSortedCNN(RegionSortedCNN):
    """The region-sorted CNN with whole grid positions dropped in training."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, region: int = 4) -> None:
        super().__init__(in_channels, num_classes, region)
        self.grid = nn.Sequential(self.grid[0], self.grid[1], _GridPositionDropout(0.1), *self.grid[2:])


if __name__ == "__main__":
    models.MODELS["region-sorted-wide"] = lambda c, k, r: WideRegionSortedCNN(c, k, r)
    models.MODELS["region-sorted-dropout"] = lambda c, k, r: DropoutRegionSortedCNN(c, k, r)
    models.MODELS["region-sorted-regiondrop"] = lambda c, k, r: RegionDropRegionSortedCNN(c, k, r)
    sys.exit(main(sys.argv[1:]))
