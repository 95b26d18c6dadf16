"""`visualmixer train` with an ensemble of N owner's teachers for the soft labels (logits averaged).

An experiment of docs/privacy.md §4c ("Soft labels"): does a better-calibrated teacher — N
region-sorted teachers trained on the originals from seeds S, S+100, ... — give a better model?
Every argument is passed to `visualmixer train`; the teachers are not saved for --resume.

    TEACHERS=3 OMP_NUM_THREADS=1 python scripts/mix_soft_ensemble.py train --data fashion-mnist \
        --epochs 10 --model region-sorted --target-vfe 1.0 --mix 16 --mix-balanced \
        --soft-labels region-sorted --out out/mix-train/ens3
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from visualmixer.cli import main
from visualmixer.train import loop

N_TEACHERS = int(os.environ.get("TEACHERS", "2"))
_one_teacher = loop.teacher_for


class Ensemble(nn.Module):
    """The mean of its members' logits."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def teachers_for(model, images, labels, num_classes, *, seed=None, state=None, **kw) -> nn.Module:
    if state is not None:
        raise SystemExit("mix_soft_ensemble.py does not resume: start a fresh --out")
    return Ensemble([_one_teacher(model, images, labels, num_classes, seed=seed + 100 * i, **kw)
                     for i in range(N_TEACHERS)]).eval()


if __name__ == "__main__":
    loop.teacher_for = teachers_for
    sys.exit(main(sys.argv[1:]))
