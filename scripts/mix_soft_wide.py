"""`visualmixer train` with a wider region-sorted student (an experiment; docs/privacy.md §4c).

Registers ``region-sorted-wide`` — :class:`~visualmixer.train.models.RegionSortedCNN` with twice the
channels (128 / 256 / 256) and a 256-unit hidden layer, 4.1 M parameters against 1.03 M — as a
``--model`` for the student; the teacher stays ``--soft-labels region-sorted``. Every argument is
passed to `visualmixer train`:

    OMP_NUM_THREADS=2 python scripts/mix_soft_wide.py train --data fashion-mnist --epochs 10 \
        --model region-sorted-wide --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted --out out/w
"""

from __future__ import annotations

import sys

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


if __name__ == "__main__":
    models.MODELS["region-sorted-wide"] = lambda c, k, r: WideRegionSortedCNN(c, k, r)
    sys.exit(main(sys.argv[1:]))
