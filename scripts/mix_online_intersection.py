"""A10 on Fashion-MNIST: how much of each original several online-mixing releases give back.

    python scripts/mix_online_intersection.py --n 20000 --epochs 1 2 4 8 10 --json out/a10.json

For every setting, the training set is mixed as ``visualmixer train --mix K --mode online`` does
(ids ``(index, epoch)``), once per epoch; A10 (:mod:`visualmixer.eval.attacks.a10_intersect`)
intersects the first E releases. Scored with the mixing's private record of sources: the share of
region positions whose re-linked region has the content of the original's own region (same
sorted values), and the share of originals re-assembled at >= 90 % of their positions. With one
release this is what the collage alone gives (its regions from the anchor's image).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from visualmixer.core.keys import Key
from visualmixer.core.mixing import mix
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.eval.attacks.a10_intersect import intersect_releases, region_fingerprints

SETTINGS = {"mix2/similar": (2, "similar"), "mix4/similar": (4, "similar"), "mix2": (2, "random"),
            "mix4": (4, "random")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="training images (the first N of the train split)")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4, 8, 10], help="releases intersected")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    data = load_fashion_mnist("train")
    x, y = data.images[: a.n], data.labels[: a.n]
    key = Key.from_seed(a.seed)
    results = {"n": a.n, "target_vfe": a.target, "seed": a.seed, "settings": {}}
    for name in a.settings:
        k, grouping = SETTINGS[name]
        t = time.perf_counter()
        releases = [mix(x, y, key=key, ids=[(i, e) for i in range(a.n)], k=k, grouping=grouping,
                        target_vfe=a.target) for e in range(max(a.epochs))]
        region = releases[0].groups.region
        truth = region_fingerprints(x, region)
        rows = []
        for e in a.epochs:
            out = intersect_releases([r.images for r in releases[:e]], region)
            source = releases[0].sources[:, out.anchor]  # the image whose anchor region each row follows
            right = out.fingerprints == truth[source]
            rows.append({"releases": e, "regions_right": float(right.float().mean()),
                         "images_90pct": float((right.float().mean(1) >= 0.9).float().mean())})
            print(f"{name:14s} E={e:2d}: regions re-linked right {rows[-1]['regions_right']:.3f}, "
                  f"originals >= 90 % right {rows[-1]['images_90pct']:.3f}", flush=True)
        results["settings"][name] = {"k": k, "grouping": grouping, "region": region, "rows": rows,
                                     "seconds": round(time.perf_counter() - t, 1)}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
