"""What structure a balanced deal shares across positions, by switching rounds (docs/privacy.md §4c).

At every position a deal is a permutation: which member's region each collage takes. The
*relative* permutation of two positions ``r, r'`` sends the member at ``r`` in a collage to the
member at ``r'`` in the same collage. Under the cyclic deal (format version 3) every relative
permutation is a power of one keyed cycle, so any two of them commute; that shared cycle is what
the red team's cycle fit exploits. This script measures, for the cyclic deal and the switched deal
after 0, 1, 2, 4, 8, 16, 32 and 64 keyed switching rounds (16 is the format; other counts are for
measuring only):

- ``commute``: the share of pairs of relative permutations from one base position, ``(0, r)`` and
  ``(0, r')``, that commute (independent random permutations of 16 or more members almost never do);
- ``cycles``: the mean number of cycles of a relative permutation, and ``same_length``: the share
  whose cycles all have one length (every power of a single v-cycle has that property), each beside
  the same for uniformly random permutations of the group's size and for random ones without fixed
  points (the balance forbids fixed points where ``v >= R``: a collage then holds each member once).

    OMP_NUM_THREADS=1 python scripts/mix_deal_structure.py --sizes 16 24 64 --groups 64 --json out/deal-structure.json
"""

from __future__ import annotations

import argparse
import json

import torch

from visualmixer.core.mixdeal import cyclic_deal, switched_deal

REGIONS = 49  # Fashion-MNIST's 7 x 7 grid of 4-pixel regions


def relative(deal: torch.Tensor) -> torch.Tensor:
    """``(G, R, v)``: for each position ``r`` the relative permutation of positions ``0`` and ``r``."""
    inverse = torch.empty_like(deal[:, 0]).scatter_(1, deal[:, 0], torch.arange(deal.shape[2]).expand_as(deal[:, 0]))
    return deal.gather(2, inverse.unsqueeze(1).expand_as(deal))  # member at 0 -> its collage -> member at r


def cycle_stats(perms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of cycles and whether all cycles have one length, for ``(..., v)`` permutations."""
    v = perms.shape[-1]
    flat = perms.reshape(-1, v)
    # each element's cycle length: iterate the permutation v times (a fixed count, batched)
    length = torch.zeros_like(flat)
    cur = torch.arange(v).expand_as(flat).clone()
    for step in range(1, v + 1):
        cur = flat.gather(1, cur)
        back = (cur == torch.arange(v)) & (length == 0)
        length[back] = step
    cycles = (1.0 / length.double()).sum(dim=1).round()
    same = (length == length[:, :1]).all(dim=1)
    return cycles.view(perms.shape[:-1]), same.view(perms.shape[:-1])


def commuting_share(rel: torch.Tensor) -> float:
    """Share of pairs ``(r, r')``, ``1 <= r < r'``, of ``(G, R, v)`` permutations that commute."""
    a, b = torch.triu_indices(rel.shape[1] - 1, rel.shape[1] - 1, offset=1) + 1
    pa, pb = rel[:, a], rel[:, b]  # (G, P, v)
    return float((pa.gather(2, pb) == pb.gather(2, pa)).all(dim=2).double().mean())


def measure(v: int, groups: int, design: str, rounds: int | None) -> dict:
    seeds = torch.arange(groups, dtype=torch.long) * 7919 + 17 * v
    valid = torch.ones(groups, v, dtype=torch.bool)
    deal = (cyclic_deal(seeds, valid, REGIONS) if design == "cyclic"
            else switched_deal(seeds, valid, REGIONS, rounds=rounds))
    rel = relative(deal)[:, 1:]
    cycles, same = cycle_stats(rel)
    return {"commute": commuting_share(relative(deal)), "cycles": float(cycles.mean()),
            "same_length": float(same.double().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 64], help="group sizes v")
    ap.add_argument("--groups", type=int, default=64, help="keyed groups per size and deal")
    ap.add_argument("--rounds", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out: dict = {"regions": REGIONS, "groups": args.groups, "sizes": {}}
    for v in args.sizes:
        g = torch.Generator().manual_seed(v)
        random = torch.argsort(torch.rand(4 * args.groups * (REGIONS - 1), v, generator=g), dim=1)
        deranged = random[(random != torch.arange(v)).all(dim=1)][: args.groups * (REGIONS - 1)]
        random = random[: args.groups * (REGIONS - 1)]
        row = {}
        for name, perms in (("random", random), ("random-deranged", deranged)):
            cycles, same = cycle_stats(perms)
            row[name] = {"commute": commuting_share(perms[: args.groups * (REGIONS - 1)].view(args.groups, -1, v)),
                         "cycles": float(cycles.mean()), "same_length": float(same.double().mean())}
        row["cyclic"] = measure(v, args.groups, "cyclic", None)
        for n in args.rounds:
            row[f"switched-{n}"] = measure(v, args.groups, "switched", n)
        out["sizes"][v] = row
        for name, m in row.items():
            print(f"v={v:3d} {name:12s} " + "  ".join(f"{k} {x:.4f}" for k, x in m.items()), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
