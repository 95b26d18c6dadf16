"""Red-team probe: cyclic threading of a balanced mixed release (docs/privacy.md §4c, "Threading").

The cyclic balanced assignment (:func:`visualmixer.core.mixdeal.cyclic_deal`, format version 3;
``--design cyclic``) deals a group's regions by a keyed cycle of its ``v`` members and one keyed
shift ``t[r]`` per position: collage ``a[i]`` holds member ``a[(i + t[r]) mod v]`` at position
``r``. So the region of member ``m`` at position ``r`` sits in the collage of cycle index
``p = m - t[r]``: who-is-where is a *product* structure ``mu(c, r) = p(c) + t[r] (mod v)`` with
only ``v + R`` unknowns instead of ``v * R``. The audit's
threading (:func:`visualmixer.eval.attacks.a9_unmix.thread_regions`) solves one free assignment per
position; this probe instead fits the cycle (``p``) and the shifts (``t``) jointly, so that every
adjacent position pair's shift is decided by the evidence of all ``v`` members at once:

1. for every adjacent pair of positions ``e = (r, r')`` a soft match matrix ``P_e[c, c']`` between
   collage ``c``'s region at ``r`` and collage ``c'``'s at ``r'`` (Sinkhorn of the L1 distance of
   sorted values, the statistic the in-region shuffle keeps, as threading uses);
2. Z_v synchronisation by alternation: given the cycle phases ``u_c`` the shift of edge ``e`` is
   ``d_e = argmax_d sum_i P_e[a_i, a_{i+d}]``; given the shifts, the phases are the top eigenvector
   of ``sum_e P_e * exp(-2 pi i d_e / v)`` (Hermitian part); several random starts, the best
   objective kept;
3. the shifts ``t`` from the ``d_e`` (synchronisation on the grid), threads read off the product
   structure, scored as the audit's threading: the share of a thread's regions from the source of
   its centre region, then inverted with a U-Net trained on the attacker's own unmixed release
   (A3 against plain VisualMixer) and scored against that source (SSIM over the class mean,
   re-identification among the victims).

Against the switched deal (``--design switched``, the default since format version 4) the
same arms measure what is left of the structure once no cycle is shared across positions.

The attacker does not know the key; pools are the release's classes (``cyclic``), or groups for the
bound of an attacker who learned them (``cyclic+groups``); ``threads`` / ``threads+groups`` are the
audit's threading under the same inverter.

    OMP_NUM_THREADS=2 python scripts/mix_redteam.py --k 64 --victims 500 --json out/redteam/k64.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch

from visualmixer.core import mixing
from visualmixer.core.imageops import full_blocks, with_full_blocks
from visualmixer.core.keys import Key
from visualmixer.core.mixdeal import switched_deal
from visualmixer.core.mixing import mix
from visualmixer.core.regions import default_region
from visualmixer.data.datasets import load_dataset
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks import LearnedInversion
from visualmixer.eval.attacks.a9_unmix import thread_regions
from visualmixer.eval.methods.registry import parse_method


def edges(gh: int, gw: int) -> list[tuple[int, int]]:
    """Ordered pairs of 4-adjacent positions (row-major indices), both directions."""
    out = []
    for i in range(gh):
        for j in range(gw):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < gh and j + dj < gw:
                    a, b = i * gw + j, (i + di) * gw + j + dj
                    out += [(a, b), (b, a)]
    return out


def soft_matches(desc: torch.Tensor, es: list, temp: float, iters: int = 20) -> torch.Tensor:
    """``(E, v, v)`` doubly stochastic matrices: collage c's region at r against collage c''s at r'."""
    out = []
    for r, q in es:
        cost = torch.cdist(desc[:, r], desc[:, q], p=1).double()
        scale = cost.std().clamp_min(1e-6)
        logk = -(cost - cost.mean()) / (temp * scale)
        for _ in range(iters):
            logk = logk - logk.logsumexp(dim=1, keepdim=True)
            logk = logk - logk.logsumexp(dim=0, keepdim=True)
        out.append(logk.exp())
    return torch.stack(out)


def fit_phases(P: torch.Tensor, restarts: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Continuous Z_v synchronisation: the phases ``u`` (v,) of the collages' cycle indices by a projected
    power method on the centred ``P_e`` (their mean over edges removed: what makes collages alike at
    every position pair, not the cycle); the restart with the largest ``sum_e |u^H P_e u|`` kept."""
    _, v, _ = P.shape
    Pc = (P - P.mean(dim=0, keepdim=True)).to(torch.complex128)
    PcH = Pc.conj().transpose(1, 2)
    best = (None, -np.inf)
    for _ in range(restarts):
        u = torch.exp(1j * torch.rand(v, generator=gen, dtype=torch.float64) * 2 * np.pi)
        for _ in range(iters):
            Pu = Pc @ u
            lam = (u.conj().view(1, -1) * Pu).sum(dim=1)
            g = (lam.conj().view(-1, 1) * Pu + lam.view(-1, 1) * (PcH @ u)).sum(dim=0)
            u = g / g.abs().clamp_min(1e-12)
        obj = float(((u.conj().view(1, -1) * (Pc @ u)).sum(dim=1)).abs().sum())
        if obj > best[1]:
            best = (u, obj)
    return best


def position_phases(P: torch.Tensor, u: torch.Tensor, es: list, R: int, v: int, centre: int,
                    sweeps: int = 10, width: float = 1.0) -> tuple[torch.Tensor, float]:
    """``(R,)`` phases ``2 pi t[r] / v`` of the positions' shifts. Every edge ``e = (r, q)`` scores each
    shift ``d = t[r] - t[q]`` by ``S_e(d) = sum_{c, c'} P_e[c, c'] K(theta_c' - theta_c - 2 pi d / v)``
    (``K`` a von Mises kernel; ``theta`` the collages' fitted phases); ``t`` from the spectral
    synchronisation of the best shifts on the grid, then coordinate ascent on ``sum_e S_e``."""
    theta = torch.angle(u)
    Pm = P - P.mean(dim=0, keepdim=True)
    diff = theta.view(1, -1) - theta.view(-1, 1)  # theta_c' - theta_c
    ds = torch.arange(v, dtype=torch.float64) * 2 * np.pi / v
    kappa = (v / (2 * np.pi * width)) ** 2  # a von Mises kernel about ``width`` cycle steps wide
    S = torch.stack([(Pm * torch.exp(kappa * (torch.cos(diff.unsqueeze(0) - a) - 1))).sum(dim=(1, 2))
                     for a in ds], dim=1)  # (E, v)
    dbest = S.argmax(dim=1)
    H = torch.zeros(R, R, dtype=torch.complex128)
    for (r, q), de in zip(es, dbest.tolist(), strict=True):
        H[r, q] += np.exp(2j * np.pi * de / v)
    H = (H + H.conj().T) / 2
    ph = torch.angle(torch.linalg.eigh(H)[1][:, -1])
    t = torch.round((ph - ph[centre]) / (2 * np.pi) * v).long() % v
    x = torch.arange(v)
    for _ in range(sweeps):
        changed = False
        for r in range(R):
            tot = torch.zeros(v, dtype=S.dtype)
            for e, (a, b) in enumerate(es):
                if a == r:
                    tot += S[e, (x - t[b]) % v]
                elif b == r:
                    tot += S[e, (t[a] - x) % v]
            new = int(tot.argmax())
            if new != int(t[r]):
                t[r], changed = new, True
        if not changed:
            break
    obj = sum(float(S[e, (t[a] - t[b]) % v]) for e, (a, b) in enumerate(es))
    return t.double() * 2 * np.pi / v, obj


def collage_slots(P: torch.Tensor, tphase: torch.Tensor, theta: torch.Tensor, es: list, v: int,
                  width: float = 1.0) -> torch.Tensor:
    """Snap the collages' phases to the cycle's ``v`` slots (a bijection), given the positions' phases:
    ``gain[c, s] = sum_e sum_c' P_e[c, c'] K(theta_c' - 2 pi s / v - delta_e) + (the reverse edge)``, with
    ``delta_e = tphase[r] - tphase[q]``, solved by the Hungarian method. Returns the new phases."""
    from scipy.optimize import linear_sum_assignment

    Pm = P - P.mean(dim=0, keepdim=True)
    kappa = (v / (2 * np.pi * width)) ** 2
    slots = torch.arange(v, dtype=torch.float64) * 2 * np.pi / v
    gain = torch.zeros(v, v, dtype=torch.float64)
    for e, (r, q) in enumerate(es):
        delta = float(tphase[r] - tphase[q])
        # c at slot s, its partner c' at r' should sit at s + delta; c' at s' - delta for the reverse
        k1 = torch.exp(kappa * (torch.cos(theta.view(-1, 1) - slots.view(1, -1) - delta) - 1))  # (c', s)
        k2 = torch.exp(kappa * (torch.cos(slots.view(1, -1) - theta.view(-1, 1) - delta) - 1))  # (c', s)
        gain += Pm[e] @ k1 + Pm[e].T @ k2
    rows, cols = linear_sum_assignment(-gain.numpy())
    out = torch.empty(v, dtype=torch.float64)
    out[torch.as_tensor(rows)] = slots[torch.as_tensor(cols)]
    return out


def cyclic_thread(images: torch.Tensor, pools, region: int, temp: float, restarts: int, iters: int,
                  gen: torch.Generator, refinements: int = 8):
    """Threads from the fitted product structure; same output as :func:`thread_regions`.

    The collages' phases ``u`` (:func:`fit_phases`), each edge's shift as the phase of
    ``lambda_e = u^H P_e u``, the positions' phases by synchronising those on the grid, and at every
    position an assignment of threads to collages by the circular distance between a collage's phase
    and the phase the thread's member predicts there."""
    from scipy.optimize import linear_sum_assignment

    blocks = full_blocks(images, region)
    n = blocks.shape[0]
    gh, gw = images.shape[2] // region, images.shape[3] // region
    R = gh * gw
    desc = blocks.flatten(2).float().sort(dim=2).values  # (N, R, C*r*r)
    es = edges(gh, gw)
    centre = (gh // 2) * gw + gw // 2
    chosen = torch.arange(n).view(-1, 1).repeat(1, R)
    for m in pools:
        m = torch.as_tensor(m).reshape(-1)
        v = m.numel()
        P = soft_matches(desc[m], es, temp)
        best = (None, None, -np.inf)
        for _ in range(restarts):  # every start to the end; the best fit of the shifts kept
            u, _ = fit_phases(P, 1, iters, gen)
            tphase, obj = position_phases(P, u, es, R, v, centre)
            for _ in range(refinements):  # alternate: snap the collages to slots, refit the shifts
                u = torch.exp(1j * collage_slots(P, tphase, torch.angle(u), es, v))
                tphase, new = position_phases(P, u, es, R, v, centre)
                if new <= obj + 1e-9:
                    obj = new
                    break
                obj = new
            if obj > best[2]:
                best = (u, tphase, obj)
        u, tphase, obj = best
        theta = torch.angle(u)  # collage phases
        mu = theta + tphase[centre]  # each thread's member phase (thread j starts at local collage j)
        for r in range(R):
            want = mu - tphase[r]
            cost = 1 - torch.cos(want.view(-1, 1) - theta.view(1, -1))
            _, cols = linear_sum_assignment(cost.numpy())
            chosen[m, r] = m[torch.as_tensor(cols)]
    posi = torch.arange(R).view(1, -1)
    return with_full_blocks(images, blocks[chosen, posi]), chosen


def infer_groups_by_edges(images: torch.Tensor, labels: torch.Tensor, region: int, k: int, temp: float,
                          seed: int) -> list[torch.Tensor]:
    """Guess the groups from the release: two collages of one group hold regions of the same sources,
    so across the adjacent position pairs a region of one is often the best match of a neighbouring
    region of the other; ``K[c, c'] = sum_e (P_e + P_e^T)[c, c']`` over the class's soft matches
    (centred), then spectral clustering into ``n_c // k`` groups."""
    from sklearn.cluster import SpectralClustering

    blocks = full_blocks(images, region)
    gh, gw = images.shape[2] // region, images.shape[3] // region
    desc = blocks.flatten(2).float().sort(dim=2).values
    es = edges(gh, gw)
    pools = []
    for c in labels.unique():
        m = torch.nonzero(labels == c).flatten()
        g = max(1, len(m) // k)
        if g == 1:
            pools.append(m)
            continue
        P = soft_matches(desc[m], es, temp)
        K = (P + P.transpose(1, 2)).sum(dim=0)
        K = K - K.mean()
        K.fill_diagonal_(0)
        aff = torch.exp(K / K.std()).numpy()
        lab = SpectralClustering(g, affinity="precomputed", random_state=seed).fit_predict(aff)
        pools += [m[torch.as_tensor(lab == j)] for j in range(g) if (lab == j).any()]
    return pools


def same_group_pairs(pools, group_of: torch.Tensor) -> float:
    same = tot = 0
    for p in pools:
        g = group_of[p]
        same += int((g[:, None] == g[None, :]).sum()) - len(p)
        tot += len(p) * (len(p) - 1)
    return same / max(tot, 1)


def scores(truth, estimate, victims, targets, prior) -> dict:
    s = M.image_scores(truth, estimate, gallery=victims, targets=targets, sources=targets.view(-1, 1))
    diff = (M.ssim(truth, estimate) - M.ssim(truth, prior)).double()
    return {"ssim": s["ssim"]["mean"], "reid": s["reid"]["rate"], "ssim_minus_prior": float(diff.mean()),
            "se": float(diff.std() / len(diff) ** 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--victims", type=int, default=500)
    ap.add_argument("--attacker", type=int, default=3000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--target", type=float, default=1.0)
    ap.add_argument("--design", choices=("switched", "cyclic"), default="switched",
                    help="how the balanced groups are dealt (cyclic: format version 3 releases, the deal the "
                         "cyclic arms model)")
    ap.add_argument("--switch-rounds", type=int, default=None,
                    help="the switched deal's keyed switching rounds (default: the format's SWITCH_ROUNDS); "
                         "other counts make releases no version reads, for measuring only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temp", type=float, default=0.3, help="Sinkhorn temperature (in cost std units)")
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--a3-epochs", type=int, default=4)
    ap.add_argument("--a3-base", type=int, default=16)
    ap.add_argument("--arms", nargs="+", default=["threads+groups", "cyclic+groups", "threads", "cyclic"],
                    choices=("threads", "threads+groups", "threads+groups+cap", "cyclic", "cyclic+groups",
                             "cyclic+inferred"))
    ap.add_argument("--no-invert", action="store_true", help="purity only (no U-Net)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.switch_rounds is not None:  # measuring only: mix() looks the deal up in its module
        mixing.switched_deal = functools.partial(switched_deal, rounds=args.switch_rounds)
    t0 = time.time()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = load_dataset("fashion-mnist", "train")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    vi, ai = order[: args.victims], order[args.victims: args.victims + args.attacker]
    victims, vy = data.images[vi], data.labels[vi]
    ax, ay = data.images[ai], data.labels[ai]
    region = default_region(*victims.shape[-2:])
    release = mix(victims, vy, key=Key.from_seed(1000 + args.seed), ids=range(len(victims)), k=args.k,
                  target_vfe=args.target, balanced=True, design=args.design)
    gh, gw = victims.shape[2] // region, victims.shape[3] // region
    centre = (gh // 2) * gw + gw // 2
    seed_source = release.sources[:, centre]
    prior = M.prior_guess(vy, M.class_mean_images(ax, ay, data.num_classes))
    out = {"design": args.design, "switch_rounds": args.switch_rounds, "k": args.k, "victims": args.victims,
           "attacker": args.attacker,
           "seed": args.seed, "region": region,
           "group_sizes": sorted({int((row >= 0).sum()) for row in release.groups.members}),
           "prior": scores(victims[seed_source], prior[seed_source], victims, seed_source, prior[seed_source])}
    inv = None
    if not args.no_invert:
        t1 = time.time()
        inv = LearnedInversion(parse_method(f"visualmixer:{args.target}", seed=3000 + args.seed),
                               epochs=args.a3_epochs, base=args.a3_base, val_fraction=0.1, patience=2,
                               seed=args.seed)
        inv.fit(ax)
        out["inverter_seconds"] = round(time.time() - t1, 1)
        out["unmixed_inverter_on_plain_victims"] = None
    print(json.dumps(out), flush=True)
    for arm in args.arms:
        t1 = time.time()
        group_of = torch.empty(len(victims), dtype=torch.long)
        for g, row in enumerate(release.groups.members):
            group_of[row[row >= 0]] = g
        pools = ([row[row >= 0] for row in release.groups.members] if "+groups" in arm
                 else infer_groups_by_edges(release.images, vy, region, args.k, args.temp, args.seed)
                 if arm.endswith("+inferred") else [torch.nonzero(vy == c).flatten() for c in vy.unique()])
        if arm.startswith("threads"):  # +cap: a thread visits a collage at most ceil(R / v) times
            threaded, chosen = thread_regions(release.images, pools, region, balanced_visits=arm.endswith("+cap"))
        else:
            threaded, chosen = cyclic_thread(release.images, pools, region, args.temp, args.restarts, args.iters,
                                             gen)
        got = release.sources[:, : gh * gw].gather(0, chosen)
        purity = float((got == seed_source[:, None]).double().mean())
        res = {"purity": purity, "threading_seconds": round(time.time() - t1, 1),
               "pools": len(pools), "same_group_pairs": same_group_pairs(pools, group_of)}
        if inv is not None:
            est = inv(threaded)
            res.update(scores(victims[seed_source], est, victims, seed_source, prior[seed_source]))
        out[arm] = res
        print(arm, json.dumps(res), flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
