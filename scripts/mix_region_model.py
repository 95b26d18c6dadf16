"""A mixing-aware model, tried: an additive classifier over regions (docs/privacy.md §4c).

Keyed region mixing keeps, at every region position, the distribution of same-class regions; a
classifier that adds up per-region scores (each from the region's *sorted* values, which the
in-region shuffle does not change, and its position) sees the same per-position statistics in a
collage as in a single image, so mixing might cost it nothing. This trains it (``RegionBag``) on
the first N Fashion-MNIST training images released as ``scripts/mix_utility.py`` releases them
(same keys and seeds) and tests it on the 10,000 test images protected one by one.

    OMP_NUM_THREADS=1 python scripts/mix_region_model.py --train 20000 --epochs 5 --settings clean shuffle mix4-random
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from mix_utility import protect_train
from torch import nn

from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.train.fit import evaluate_classifier, fit_classifier, init_model


class RegionBag(nn.Module):
    """Logits = mean over regions of an MLP of (the region's sorted values, its position)."""

    def __init__(self, channels: int = 1, size: int = 28, region: int = 4, classes: int = 10, hidden: int = 256):
        super().__init__()
        self.region = region
        positions, values = (size // region) ** 2, channels * region * region
        self.position = nn.Parameter(torch.randn(positions, hidden) * 0.1)
        self.l1, self.l2, self.out = nn.Linear(values, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions = F.unfold(x, self.region, stride=self.region).transpose(1, 2)  # (N, positions, values)
        h = F.relu(self.l1(regions.sort(dim=-1).values) + self.position)
        return self.out(F.relu(self.l2(h))).mean(dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--settings", nargs="+", default=["clean", "shuffle", "mix4-random"])
    a = ap.parse_args()
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    x, y = tr.images[: a.train], tr.labels[: a.train]
    protected_test = obfuscate(te.images, key=Key.from_seed(2000 + a.seed), ids=range(te.images.shape[0]),
                               target_vfe=a.tau).images
    for setting in a.settings:
        t = time.time()
        released = protect_train(setting, x, y, Key.from_seed(1000 + a.seed), a.tau)
        model = init_model(lambda: RegionBag(), seed=a.seed)
        fit_classifier(model, (released, y), epochs=a.epochs, batch_size=128, lr=1e-3, seed=a.seed)
        with torch.no_grad():
            _, acc = evaluate_classifier(model, te.images if setting == "clean" else protected_test, te.labels)
        print(json.dumps({"setting": setting, "seed": a.seed, "accuracy": acc, "seconds": round(time.time() - t)}),
              flush=True)


if __name__ == "__main__":
    main()
