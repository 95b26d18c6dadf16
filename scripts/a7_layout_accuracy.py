"""How many block slots attack A7 puts back in place, for key-wide block layouts.

Usage: python scripts/a7_layout_accuracy.py [--data tinted-fm photos] [--methods scramble:4
visualmixer:0.5/keyblocks] [--victims 300] [--attacker 3000] [--seed 0]

The data are split as ``visualmixer audit`` splits them (same sizes, same seed: the same victims
and attacker images) and each method is seeded as the audit seeds it, so the released set is the
one the audit attacks. The true layout comes from a probe image protected with the same key: every
block flat grey with its own level, so the probe's released blocks say where each block went
(and whether it was negated). Printed per data set and method:

- ``placed %``: slots that :func:`recover_layout` put at their true position;
- ``sym. %``: the same, for the best of the layout turned or mirrored as a whole (the 8
  symmetries of a square grid, 4 of an oblong one): what a jigsaw gets right where the data say
  nothing about which way up the images are;
- ``neigh. %``: true left/right and up/down neighbour pairs that it kept side by side in the
  same order (what a jigsaw gets right even when the whole layout is shifted);
- ``exact %``: (methods whose blocks keep their pixels, ``scramble``) slots whose block, after
  :func:`recover_block_transforms`, equals the original in every victim;
- ``s``: seconds the layout step took.
"""

from __future__ import annotations

import argparse
import time

import torch

from visualmixer.eval.attacks.a7_layout import (
    recover_block_transforms,
    recover_layout,
    undo_block_transforms,
    undo_layout,
)
from visualmixer.eval.methods import parse_method
from visualmixer.eval.methods.base import key_seed
from visualmixer.eval.report.data import load_audit_data


def true_source(method, shape: tuple[int, ...], block: int) -> torch.Tensor:
    """``source[p]``: the released slot holding the block of position ``p`` (from a flat probe)."""
    c, h, w = shape
    gh, gw = h // block, w // block
    if gh * gw > 127:
        raise SystemExit(f"{gh * gw} slots: the probe has levels for at most 127")
    levels = (2 * torch.arange(gh * gw) + 1).view(gh, gw).to(torch.uint8)  # odd 1..253; negated: even
    probe = torch.zeros(1, c, h, w, dtype=torch.uint8)
    probe[0, :, : gh * block, : gw * block] = levels.repeat_interleave(block, 0).repeat_interleave(block, 1)
    out = method(probe)[0, 0, : gh * block : block, : gw * block : block].flatten().long()
    orig = torch.where(out % 2 == 1, out, 255 - out)  # undo a negation
    pos = (orig - 1) // 2
    source = torch.empty(gh * gw, dtype=torch.int64)
    source[pos] = torch.arange(gh * gw)
    return source


def neighbour_rate(source: torch.Tensor, truth: torch.Tensor, gh: int, gw: int) -> float:
    """Share of true horizontal and vertical neighbour pairs kept adjacent in the same direction."""
    where = torch.empty_like(source)
    where[source] = torch.arange(len(source))  # estimated position of every slot
    grid = truth.view(gh, gw)  # slot at each true position
    kept = []
    for a, b, step in ((grid[:, :-1], grid[:, 1:], (0, 1)), (grid[:-1], grid[1:], (1, 0))):
        pa, pb = where[a.flatten()], where[b.flatten()]
        kept.append((pb // gw - pa // gw == step[0]) & (pb % gw - pa % gw == step[1]))
    return float(torch.cat(kept).double().mean())


def symmetric_rate(source: torch.Tensor, truth: torch.Tensor, gh: int, gw: int) -> float:
    """Best share of slots placed right over the grid's turns and mirrors of the whole layout."""
    idx = torch.arange(gh * gw).view(gh, gw)
    maps = [idx, idx.flip(0), idx.flip(1), idx.flip(0).flip(1)]
    maps += [m.T for m in maps] if gh == gw else []
    return max(float((source[m.reshape(-1)] == truth).double().mean()) for m in maps)


def measure(data, spec: str, seed: int, options: dict) -> dict:
    method = parse_method(spec, seed=key_seed(int(seed), f"audit-method:{spec}"))  # as the audit seeds it
    vic, y = data.victim_images, data.victim_labels
    released = method(vic)
    block = int(getattr(method, "block", None) or method.region_for(vic.shape[2], vic.shape[3]))
    truth = true_source(method, tuple(vic.shape[1:]), block)
    t0 = time.time()
    src, neg = recover_layout(released, y, data.attacker_images, data.attacker_labels, block,
                              num_classes=data.num_classes, **options)
    seconds = time.time() - t0
    gh, gw = vic.shape[2] // block, vic.shape[3] // block
    row = {"placed": float((src == truth).double().mean()), "sym": symmetric_rate(src, truth, gh, gw),
           "neigh": neighbour_rate(src, truth, gh, gw),
           "exact": float("nan"), "s": seconds}
    if spec.startswith("scramble"):
        moved = undo_layout(released, src, neg, block)
        which = recover_block_transforms(moved, y, data.attacker_images, data.attacker_labels, block,
                                         num_classes=data.num_classes)
        est = undo_block_transforms(moved, which, block)
        core = (slice(None), slice(None), slice(0, gh * block), slice(0, gw * block))
        diff = ((est[core] * 255).round() - vic[core].float()).abs()
        per_slot = diff.reshape(vic.shape[0], vic.shape[1], gh, block, gw, block).amax(dim=(0, 1, 3, 5))
        row["exact"] = float((per_slot == 0).double().mean())
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["tinted-fm", "photos"])
    p.add_argument("--methods", nargs="+", default=["scramble:4", "visualmixer:0.5/keyblocks"])
    p.add_argument("--victims", type=int, default=300, help="released images (the audit's victims)")
    p.add_argument("--attacker", type=int, default=3000, help="the attacker's own clean images")
    p.add_argument("--train", type=int, default=500, help="owner's training split (only to split as the audit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matcher", default=None, help="recover_layout's matcher (default: its default)")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    options = {} if a.matcher is None else {"matcher": a.matcher}
    print(f"{'data':13s} {'method':26s} {'placed %':>8s} {'sym. %':>8s} {'neigh. %':>8s} {'exact %':>8s} {'s':>6s}")
    for name in a.data:
        data = load_audit_data(name, n_train=a.train, n_victims=a.victims, n_attacker=a.attacker, seed=a.seed)
        for spec in a.methods:
            r = measure(data, spec, a.seed, options)
            print(f"{name:13s} {spec:26s} {100 * r['placed']:8.1f} {100 * r['sym']:8.1f} {100 * r['neigh']:8.1f} "
                  f"{100 * r['exact']:8.1f} {r['s']:6.1f}")


if __name__ == "__main__":
    main()
