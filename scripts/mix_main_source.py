"""How much a mixed release's main-source re-identification moves with the key alone (docs/privacy.md §4c).

The audit scores a collage's estimate against its *main source*, the source most of its regions
come from (``torch.mode`` of the collage's region sources). Where a group has at least as many
members as the grid has positions (k = 64 on Fashion-MNIST's 7 x 7 grid of 4-pixel regions) every
source of a collage holds one region, the most common source is a tie, and ``torch.mode`` breaks it
by the smallest index: a group's smallest-index member is then the main source of every collage
that holds one of its regions (49 of 64). Re-identification hits come in lumps of up to 49 victims.

This script measures that, for both balanced deals, over several keys on the same victims:

- the number of distinct main sources among the victims' collages and the largest lump;
- the main-source re-identification of a fixed, untrained stand-in for the learned inversion
  (each collage's region means, the statistic the in-region shuffle keeps, as an image; its
  nearest victim in L2 is its guess), so that what varies from key to key is the release alone.

    OMP_NUM_THREADS=1 python scripts/mix_main_source.py --k 64 --splits 0 1 2 --keys 12 --json out/main-source.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from visualmixer.core.keys import Key
from visualmixer.core.mixing import mix
from visualmixer.core.regions import default_region
from visualmixer.data.datasets import load_dataset


def one_release(x: torch.Tensor, y: torch.Tensor, *, key: Key, k: int, design: str) -> dict:
    """Main-source lumps and the stand-in's re-identification (percent) of one balanced release."""
    r = mix(x, y, key=key, ids=range(len(x)), k=k, target_vfe=1.0, balanced=True, design=design)
    region = default_region(*x.shape[-2:])
    means = F.interpolate(F.avg_pool2d(r.images.float(), region), scale_factor=region, mode="nearest")
    main = torch.mode(r.sources, dim=1).values
    guess = torch.cdist(means.flatten(1), x.float().flatten(1)).argmin(dim=1)
    counts = main.unique(return_counts=True)[1]
    return {"distinct_main_sources": len(counts), "largest_lump": int(counts.max()),
            "reid_percent": 100 * float((guess == main).double().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--victims", type=int, default=2000)
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], help="seeds of the victim draws")
    ap.add_argument("--keys", type=int, default=12, help="release keys per split and deal")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = load_dataset("fashion-mnist", "train")
    out: dict = {"k": args.k, "victims": args.victims, "keys": args.keys, "splits": {}}
    for split in args.splits:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(split))
        x, y = data.images[order[: args.victims]], data.labels[order[: args.victims]]
        out["splits"][split] = {}
        for design in ("cyclic", "switched"):
            runs = [one_release(x, y, key=Key.from_seed(1000 * split + i), k=args.k, design=design)
                    for i in range(args.keys)]
            rates = [r["reid_percent"] for r in runs]
            summary = {"reid_mean": statistics.mean(rates), "reid_sd": statistics.stdev(rates),
                       "reid_min": min(rates), "reid_max": max(rates),
                       "distinct_main_sources": statistics.mean(r["distinct_main_sources"] for r in runs),
                       "largest_lump": max(r["largest_lump"] for r in runs), "runs": runs}
            out["splits"][split][design] = summary
            print(f"split {split} {design:8s} stand-in re-id {summary['reid_mean']:.2f} % "
                  f"(sd {summary['reid_sd']:.2f}, {min(rates):.2f}-{max(rates):.2f}) over {args.keys} keys; "
                  f"{summary['distinct_main_sources']:.0f} distinct main sources of {args.victims}, "
                  f"lumps up to {summary['largest_lump']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
