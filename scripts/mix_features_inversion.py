"""Do the teacher's released features help an inversion? A3 with and without them (docs/privacy.md §4c).

The recommended release carries, beside each collage, the owner's teacher's region-grid features
(``visualmixer soft-labels --features``: 128 × 7 × 7 numbers per 28² image). They are computed from
the collage, but by a teacher trained on the owner's originals, so they could carry more of a
source than the collage's pixels do. This probe gives the attacker the most it could have: the
owner's teacher itself (to compute the features of its own collages; a real attacker holds only
the release), then trains the audit's full-strength A3 twice, with the same budget and seed: on
its collages alone, and on its collages with the features joined to the U-Net's deepest level
(:class:`visualmixer.eval.attacks.UNet` ``side_channels``). Both are applied to the victims'
release (the victims' collages, and the features the owner released for them) and scored as the
audit scores a mixed release: against each collage's main source (SSIM, re-identification among
the victims) and against the closest of its sources, beside the class-mean prior.

Setting: ``--data`` (Fashion-MNIST, or the tinted colour set ``tinted-fm``); the owner's set
``--owner`` images (the teacher's training set, the recommended recipe: ``--model`` region-sorted,
10 epochs, lr 2e-3 cosine), of which ``--victims`` are released as one mixed set (balanced groups
of ``--k``, τ ``--target`` (1.0), the owner's key); the attacker's ``--attacker`` own images,
disjoint, mixed the same way with its own key (the audit's A3 budget: U-Net width 32, at most 10
epochs, stop after 2 without a better validation loss on 10 % held out).

The un-mixing arms (``--arms A3 A9 A9+groups``) re-link each victim collage's regions guided by
A3's estimate (:func:`visualmixer.eval.attacks.a9_unmix.relink_regions`) — from the class's
released regions (the audit's A9), or from the collage's own group only (an attacker who learned
the groups, as file times told before the tools settled a release) — and invert the result with a
U-Net trained on the attacker's own unmixed release.

    OMP_NUM_THREADS=1 python scripts/mix_features_inversion.py --seed 0 --json out/mix-features-inversion-s0.json
    OMP_NUM_THREADS=1 python scripts/mix_features_inversion.py --arms A3 A9 A9+groups --k 16 \
        --json out/fi/a9g-k16-s0.json
    OMP_NUM_THREADS=1 python scripts/mix_features_inversion.py --data tinted-fm --model region-sorted-channels \
        --target 0.5 --seed 0 --json out/mix-features-inversion-tinted-s0.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixing import mix
from visualmixer.core.regions import default_region
from visualmixer.data.datasets import load_dataset
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks import LearnedInversion
from visualmixer.eval.attacks.a9_unmix import relink_regions, thread_regions
from visualmixer.eval.methods.registry import parse_method
from visualmixer.train.fit import channel_normaliser, normalise
from visualmixer.train.models import SHARED_NORMALISATION
from visualmixer.train.soft_labels import SHUFFLE_BLIND_MODELS, release_features, teacher_for


def scores(truth: torch.Tensor, estimate: torch.Tensor, victims: torch.Tensor, main: torch.Tensor,
           sources: torch.Tensor, prior: torch.Tensor | None = None) -> dict:
    """The audit's scores of a mixed release's estimates, reduced to the numbers the docs quote; with
    ``prior`` (the class-mean guesses) also the SSIM over it victim by victim (``paired``: its mean and
    standard error — both are scored on the same victims, so this is the comparison's own noise)."""
    s = M.image_scores(truth, estimate, gallery=victims, targets=main, sources=sources)
    out = {"ssim": s["ssim"]["mean"], "reid": s["reid"]["rate"], "any_source_ssim": s["any_source"]["ssim"]["mean"],
           "any_source_reid": s["any_source"]["reid"]}
    if prior is not None:
        diff = (M.ssim(truth, estimate) - M.ssim(truth, prior)).double()
        out["paired_ssim_over_prior"] = {"mean": float(diff.mean()), "se": float(diff.std() / len(diff) ** 0.5)}
    return out


def _unmixed(estimates: dict, args, ax: torch.Tensor) -> LearnedInversion:
    """The attacker's own plain (unmixed) release and its inversion, trained once."""
    if "unmixed" not in estimates:
        inv = LearnedInversion(parse_method(f"visualmixer:{args.target}", seed=3000 + args.seed),
                               epochs=args.a3_epochs, base=args.a3_base, val_fraction=0.1, patience=2,
                               seed=args.seed)
        estimates["unmixed"] = inv.fit(ax)
    return estimates["unmixed"]


def same_group_auc(images: torch.Tensor, labels: torch.Tensor, group_of: torch.Tensor) -> float:
    """Within each class, how well the L1 distance of two released images' sorted pixel values tells
    a pair of one group from a pair of two groups: the ROC AUC over all same-class pairs (0.5: not
    at all). The collages of a group are mixtures of the same sources, hence the question."""
    from scipy.stats import rankdata

    desc = images.flatten(1).float().sort(dim=1).values
    same, other = [], []
    for c in labels.unique():
        m = torch.nonzero(labels == c).flatten()
        iu = torch.triu_indices(len(m), len(m), 1)
        d = torch.cdist(desc[m], desc[m], p=1)[iu[0], iu[1]]
        eq = (group_of[m][:, None] == group_of[m][None, :])[iu[0], iu[1]]
        same.append(d[eq])
        other.append(d[~eq])
    s, o = torch.cat(same).numpy(), torch.cat(other).numpy()
    ranks = rankdata(-np.concatenate([s, o]))  # a closer pair ranks higher
    return float((ranks[: len(s)].sum() - len(s) * (len(s) + 1) / 2) / (len(s) * len(o)))


def infer_groups(images: torch.Tensor, labels: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Guess a release's groups from its images: within each class, repeatedly take the ``k``
    not yet taken images closest together (the tightest ``k``-nearest neighbourhood by the L1
    distance of sorted pixel values — a group's collages mix the same sources); the last ``k`` to
    ``2k - 1`` images form the last guess, as the tools form the last group."""
    desc = images.flatten(1).float().sort(dim=1).values
    pools = []
    for c in labels.unique():
        free = torch.nonzero(labels == c).flatten()
        while len(free) >= 2 * k:
            d = torch.cdist(desc[free], desc[free], p=1)
            near = d.topk(k, largest=False).indices  # each image's k nearest, itself first
            best = d.gather(1, near).sum(dim=1).argmin()
            pools.append(free[near[best]])
            keep = torch.ones(len(free), dtype=torch.bool)
            keep[near[best]] = False
            free = free[keep]
        pools.append(free)
    return pools


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist", choices=("fashion-mnist", "tinted-fm"))
    ap.add_argument("--model", default="region-sorted", choices=SHUFFLE_BLIND_MODELS, help="the owner's teacher")
    ap.add_argument("--target", type=float, default=1.0, help="the release's target VFE")
    ap.add_argument("--owner", type=int, default=20000)
    ap.add_argument("--victims", type=int, default=2000)
    ap.add_argument("--attacker", type=int, default=6000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--design", choices=("switched", "cyclic"), default="switched",
                    help="how the balanced groups are dealt (cyclic: releases made before 2026-11-29)")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--a3-epochs", type=int, default=10)
    ap.add_argument("--a3-base", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", default=["A3", "A3+features"],
                    choices=("A3", "A3+features", "A9", "A9+groups", "threads", "threads+groups", "threads+inferred",
                             "group-auc"),
                    help="the attacks to train (without A3+features no teacher is trained); A9 re-links each "
                         "collage's regions from its class's released regions guided by A3's estimate, "
                         "A9+groups from its own group's only (an attacker who learned the groups), and "
                         "inverts with a U-Net trained on the attacker's own unmixed release; threads "
                         "follows every source of a class (threads+groups: of a group) across the "
                         "positions by matching neighbouring regions' sorted values, one region per "
                         "source and position, and inverts each thread likewise (threads+inferred: of "
                         "groups guessed from the release, infer_groups); group-auc: how well "
                         "two released images' sorted values tell whether they share a group")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    data = load_dataset(args.data, "train")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    own_idx, att_idx = order[: args.owner], order[args.owner : args.owner + args.attacker]
    x, y = data.images[own_idx], data.labels[own_idx]
    victims, vy = x[: args.victims], y[: args.victims]  # released, and in the teacher's training set
    ax, ay = data.images[att_idx], data.labels[att_idx]
    mean, std = channel_normaliser(x, shared=args.model in SHARED_NORMALISATION)
    region, classes = default_region(*x.shape[-2:]), data.num_classes

    def prepare(b):
        return normalise(b, mean, std)

    with_features = "A3+features" in args.arms
    teacher = teacher_for(args.model, x, y, classes, region=region, epochs=args.teacher_epochs, seed=args.seed,
                          prepare=prepare, lr=2e-3, lr_schedule="cosine") if with_features else None
    mixed = dict(k=args.k, target_vfe=args.target, balanced=True, design=args.design)
    release = mix(victims, vy, key=Key.from_seed(1000 + args.seed), ids=range(len(victims)), **mixed)
    own = mix(ax, ay, key=Key.from_seed(2000 + args.seed), ids=range(len(ax)), **mixed)
    main_v = torch.mode(release.sources, dim=1).values
    main_a = torch.mode(own.sources, dim=1).values
    if with_features:
        released_feats = release_features(teacher, release.images, prepare=prepare)
        own_feats = release_features(teacher, own.images, prepare=prepare)  # the bound: the owner's teacher queried
    truth = victims[main_v]
    prior = M.prior_guess(vy, M.class_mean_images(ax, ay, classes))
    out = {"data": args.data, "design": args.design, "model": args.model, "target_vfe": args.target,
           "owner": args.owner, "victims": args.victims, "attacker": args.attacker, "k": args.k, "seed": args.seed,
           "teacher_epochs": args.teacher_epochs, "a3_base": args.a3_base, "a3_max_epochs": args.a3_epochs,
           "features_shape": list(released_feats.shape[1:]) if with_features else None,
           "prior": scores(truth, prior, victims, main_v, release.sources)}
    group_of = torch.empty(len(victims), dtype=torch.long)
    for g, row in enumerate(release.groups.members):
        group_of[row[row >= 0]] = g
    estimates = {}
    for arm in args.arms:
        if arm == "group-auc":
            out[arm] = same_group_auc(release.images, vy, group_of)
            print(arm, out[arm], flush=True)
            continue
        if arm.startswith("threads"):
            t1 = time.time()
            pools = ([row[row >= 0] for row in release.groups.members] if arm == "threads+groups"
                     else infer_groups(release.images, vy, args.k) if arm == "threads+inferred"
                     else [torch.nonzero(vy == c).flatten() for c in vy.unique()])
            threaded, chosen = thread_regions(release.images, pools, region)
            gh, gw = victims.shape[2] // region, victims.shape[3] // region
            seed_source = release.sources[:, (gh // 2) * gw + gw // 2]  # a thread starts at the centre
            got = release.sources[:, : gh * gw].gather(0, chosen)
            purity = float((got == seed_source[:, None]).double().mean())
            est = _unmixed(estimates, args, ax)(threaded)
            # each thread is scored against the source it started from (its seed region's)
            out[arm] = {**scores(victims[seed_source], est, victims, seed_source, seed_source.view(-1, 1),
                                 prior[seed_source]),
                        "purity": purity, "seconds": round(time.time() - t1, 1)}
            if arm == "threads+inferred":  # how right the guessed groups are: the share of same-group pairs
                shares = [((group_of[p][:, None] == group_of[p][None, :]).sum() - len(p)) / (len(p) * (len(p) - 1))
                          for p in pools]
                out[arm]["same_group_pairs"] = float(sum(shares) / len(shares))
            out[arm]["ssim_minus_prior"] = out[arm]["paired_ssim_over_prior"]["mean"]  # seeds: every victim once
            print(arm, out[arm], flush=True)
            continue
        if arm.startswith("A9"):
            t1 = time.time()
            pool = group_of if arm == "A9+groups" else vy
            relinked, chosen = relink_regions(release.images, pool, estimates["A3"], region)
            got = release.sources.gather(0, chosen)
            est = _unmixed(estimates, args, ax)(relinked)
            out[arm] = {**scores(truth, est, victims, main_v, release.sources, prior),
                        "relinked_from_main": float((got == main_v[:, None]).double().mean()),
                        "main_share_before": float((release.sources == main_v[:, None]).double().mean()),
                        "seconds": round(time.time() - t1, 1)}
            out[arm]["ssim_minus_prior"] = out[arm]["ssim"] - out["prior"]["ssim"]
            print(arm, out[arm], flush=True)
            continue
        side = own_feats if arm == "A3+features" else None
        t1 = time.time()
        inv = LearnedInversion(None, epochs=args.a3_epochs, base=args.a3_base, val_fraction=0.1, patience=2,
                               seed=args.seed)
        inv.fit_pairs(own.images, ax[main_a], side=side)
        est = inv(release.images, side=None if side is None else released_feats)
        estimates[arm] = est
        out[arm] = {**scores(truth, est, victims, main_v, release.sources, prior), "train_loss": inv.history,
                    "val_loss": inv.val_history, "best_epoch": inv.best_epoch, "seconds": round(time.time() - t1, 1)}
        out[arm]["ssim_minus_prior"] = out[arm]["ssim"] - out["prior"]["ssim"]
        print(arm, {k: v for k, v in out[arm].items() if "loss" not in k}, flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in out.items() if k not in args.arms}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
