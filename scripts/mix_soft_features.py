"""`visualmixer train --soft-labels` with the teacher's inner features as targets too (an experiment).

docs/privacy.md §4c ("Closing the last 0.1 points"): the model fits its teacher's probabilities on
the collages closely and still ends under it on whole images. Matching the teacher's inner
features on the same collages as well (FitNets-style) constrains the model to compute what the
teacher computes, not only to agree with it on collages. Both are `region-sorted` models, so a
layer of one has the shape of the same layer of the other. The loss becomes
``T² · KL + BETA · ‖f_model − f_teacher‖² / ‖f_teacher‖²`` (per batch) at the layer ``LAYER``:

- ``embed``: after the per-region 1×1 layer (what each region becomes, before neighbours meet);
- ``grid``: after the last 3×3 layer and the pool (the 7×7 grid the classifier reads);
- ``hidden``: the 128-unit hidden layer.

Every argument is passed to `visualmixer train` (which needs ``--model region-sorted
--soft-labels region-sorted``); ``BETA`` (default 1) and ``LAYER`` (default ``grid``) set the knobs.

    LAYER=grid BETA=1 OMP_NUM_THREADS=1 python scripts/mix_soft_features.py train --data fashion-mnist \
        --epochs 10 --model region-sorted --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted \
        --out out/f
"""

from __future__ import annotations

import os
import sys

import torch

from visualmixer.cli import main
from visualmixer.train import loop
from visualmixer.train.soft_labels import soft_label_loss

BETA = float(os.environ.get("BETA", "1.0"))
LAYER = os.environ.get("LAYER", "grid")
_library_init = loop.init_model
_students: list[torch.nn.Module] = []


def _layer(model: torch.nn.Module) -> torch.nn.Module:
    return {"embed": model.grid[1], "grid": model.grid[6], "hidden": model.classifier[2]}[LAYER]


def _tap(model: torch.nn.Module) -> dict:
    seen: dict = {}
    _layer(model).register_forward_hook(lambda mod, args, out: seen.__setitem__("f", out))
    return seen


def _init(*args, **kw):
    model = _library_init(*args, **kw)
    _students.append(model)  # loop.init_model builds the run's model only (the teacher has its own)
    return model


def _loss(teacher, temperature, **_):  # the library's own feature option stays off
    kl = soft_label_loss(teacher, temperature)
    student, t_seen = _students[-1], _tap(teacher)
    s_seen = _tap(student)

    def loss(logits, labels, inputs):
        out = kl(logits, labels, inputs)  # runs the teacher on inputs: t_seen["f"] is its feature
        target = t_seen["f"].detach()
        return out + BETA * (s_seen["f"] - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)

    return loss


if __name__ == "__main__":
    loop.init_model = _init
    loop.soft_label_loss = _loss
    sys.exit(main(sys.argv[1:]))
