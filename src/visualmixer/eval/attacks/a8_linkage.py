"""A8 — linkage and membership: "is this image in the released set, and which file is it?"

Any permutation keeps the multiset of an image's values, and of each region's values. An
attacker who already HOLDS candidate originals (a gallery that contains the victims and as many
images that were never released) can therefore link protected images back to files, without
inverting anything:

- **image linkage**: sort every image's values (channels pooled: the channel-order shuffle moves
  values between channels) and match each protected image to the gallery image with the nearest
  sorted vector (L1). For methods that are not permutations (noise, blur, pixelation) the same
  matcher also runs on the images themselves and on their region-mean mosaics, and the best of
  the three is reported — the attack is built to win.
- **region linkage**: the same with the sorted values of every region at its own position,
  which also finds where the regions of a mixed image (:mod:`visualmixer.core.mixing`) came from;
  the candidates a protected image's regions point to vote for its main source.
- **victim linkage** (the other direction): for every held original, "which released image holds
  a piece of mine?" — its closest released image by each matcher above, and the released image
  that its surest non-blank region matches at the same position (the region whose closest match
  is furthest ahead of the second closest); the best matcher is reported. For a mixed release a
  hit is any collage that holds one of the original's regions (chance: how many collages do, over
  the release).
- **membership**: a candidate's score is how closely its regions are matched by the released
  regions at the same positions; the AUC separates members from non-members (0.5 = chance).

All matching is batched (``torch.cdist`` over chunks of rows; no loops over images or regions).
VisualMixer-style methods hide *content from people who do not already have the image*, not
*membership from people who do*: this attack measures the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visualmixer.core.imageops import full_blocks
from visualmixer.core.regions import default_region

__all__ = ["linkage_attack", "sorted_profile", "region_profiles", "full_region_columns"]

_QUANTILES = 256  # points of a sorted profile kept per image (a 224² RGB image has 150k values)


def sorted_profile(images: torch.Tensor, points: int = _QUANTILES) -> torch.Tensor:
    """``(N, points)`` float32: each image's sorted values (channels pooled), sampled evenly."""
    x = images.flatten(1).float()
    s = x.sort(dim=1).values
    if s.shape[1] <= points:
        return s
    idx = torch.linspace(0, s.shape[1] - 1, points, device=s.device).round().long()
    return s[:, idx]


def region_profiles(images: torch.Tensor, region: int) -> torch.Tensor:
    """``(R, N, region² · C)`` float32: the sorted values of every full region, by position."""
    x = full_blocks(images, region).transpose(0, 1).flatten(2).float()  # (R, N, C·r·r)
    return x.sort(dim=2).values


def full_region_columns(height: int, width: int, region: int) -> torch.Tensor:
    """``(R,)`` int64: for every full region (row-major over the grid ``H // region x W // region``
    that the attacks work on), its column in :func:`visualmixer.core.mixing.region_sources`, which
    numbers every region of the grid ``ceil(H / region) x ceil(W / region)``, partial edge ones too."""
    cols, all_cols = width // region, -(-width // region)
    p = torch.arange((height // region) * cols)
    return (p // cols) * all_cols + p % cols


def _nearest(queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 1024, *,
             second: bool = False) -> tuple[torch.Tensor, ...]:
    """Nearest gallery row (L1) of every query row: ``(index, distance)``, both ``(Q,)``; with
    ``second`` also the distance to the second-nearest row.

    ``queries`` may carry a leading batch axis (``(B, Q, D)`` with ``(B, G, D)``).
    """
    parts = []
    for s in range(0, queries.shape[-2], chunk):
        d = torch.cdist(queries[..., s : s + chunk, :], gallery, p=1)
        v, i = d.topk(min(2 if second else 1, d.shape[-1]), dim=-1, largest=False)
        parts.append((i[..., 0], v[..., 0], v[..., -1]))
    idx, dist, dist2 = (torch.cat(p, dim=-1) for p in zip(*parts, strict=True))
    return (idx, dist, dist2) if second else (idx, dist)


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of "positive scores are higher" (ties count one half)."""
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    allv = torch.cat([pos, neg]).double()
    ranks = torch.empty_like(allv)
    order = allv.argsort()
    ranks[order] = torch.arange(1, allv.numel() + 1, dtype=torch.float64)
    # average ranks of ties
    uniq, inv, counts = torch.unique(allv, return_inverse=True, return_counts=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, ranks)
    ranks = (sums / counts)[inv]
    r_pos = ranks[: pos.numel()].sum()
    return float((r_pos - pos.numel() * (pos.numel() + 1) / 2) / (pos.numel() * neg.numel()))


def _holders(sources: torch.Tensor, n: int) -> torch.Tensor:
    """``(N_released, n)`` bool: released image ``i`` holds a region of original ``v``."""
    holds = torch.zeros(sources.shape[0], n, dtype=torch.bool, device=sources.device)
    holds[torch.arange(sources.shape[0], device=sources.device).view(-1, 1).expand_as(sources), sources] = True
    return holds


def _surest_region(idx: torch.Tensor, dist: torch.Tensor, dist2: torch.Tensor,
                   member_regions: torch.Tensor) -> torch.Tensor:
    """``(N,)`` for each original, the released image its surest region points to: of its non-blank
    regions, the one whose closest released region (same position) is furthest ahead of the
    second closest. ``idx``, ``dist``, ``dist2``: ``(R, N)`` every original region's closest released
    image and the L1 distances to the closest and second-closest; ``member_regions``: ``(R, N, D)``
    sorted values. (The single closest region would often be a nearly blank one that many
    released regions match as well.)"""
    blank = member_regions[..., -1] <= member_regions[..., 0]  # (R, N): matches every blank region
    lead = dist2 / dist.clamp(min=1e-6)
    pos = lead.masked_fill(blank & ~blank.all(dim=0), -1.0).argmax(dim=0)
    return idx.gather(0, pos.view(1, -1)).squeeze(0)


def linkage_attack(
    protected: torch.Tensor,
    members: torch.Tensor,
    outsiders: torch.Tensor,
    *,
    sources: torch.Tensor | None = None,
    region: int | None = None,
) -> dict:
    """Link protected images to the attacker's candidate files, and tell members from outsiders.

    Parameters
    ----------
    protected : torch.Tensor
        ``(N, C, H, W)`` released images (uint8 or float, one scale for all three inputs).
    members : torch.Tensor
        ``(N, C, H, W)`` the originals of ``protected``, in the same order (the attacker holds
        them among its candidates; the order is the ground truth, not given to the matcher).
    outsiders : torch.Tensor
        ``(M, C, H, W)`` candidates that were never released.
    sources : torch.Tensor, optional
        ``(N, R)`` int64: for mixed releases, which original each region of each protected image
        came from: every region, partial edge ones too, as
        :func:`visualmixer.core.mixing.region_sources` numbers them, or the full regions only;
        by default image ``i`` is the source of all of its regions. A collage's main source and
        the collages that hold a piece of an original count every region; region linkage, which
        matches full regions, reads their columns (:func:`full_region_columns`).
    region : int, optional
        Region side (default: the library's rule for the image size).

    Returns
    -------
    dict
        ``link_rate`` (share of protected images whose nearest candidate is their main source;
        chance ``1 / (N + M)``), ``link_method`` (which matcher won), ``region_link_rate``
        (share of regions matched to their true source), ``victim_link_rate`` (share of held
        originals whose closest released image, by the best matcher ``victim_link_method``, holds a
        piece of them; every matcher's in ``victim_link_rates``) with its ``victim_link_chance``,
        ``membership_auc`` and ``chance``.
    """
    if protected.shape != members.shape:
        raise ValueError(f"members must have the protected images' shape {tuple(protected.shape)}, "
                         f"got {tuple(members.shape)}")
    if outsiders.shape[1:] != members.shape[1:]:
        raise ValueError(f"outsiders must be (M, {', '.join(map(str, members.shape[1:]))}), "
                         f"got {tuple(outsiders.shape)}")
    n, _, h, w = protected.shape
    r = int(region) if region else default_region(h, w)
    gallery = torch.cat([members, outsiders])
    gh, gw = h // r, w // r
    if sources is None:
        sources = torch.arange(n).view(-1, 1).expand(n, gh * gw)
    every = (-(-h // r)) * (-(-w // r))
    if sources.shape != (n, gh * gw) and sources.shape != (n, every):
        raise ValueError(f"sources must be (N, regions): ({n}, {every}) or, full regions only, ({n}, {gh * gw}); "
                         f"got {tuple(sources.shape)}")
    main = torch.mode(sources, dim=1).values  # the image most of a collage's regions come from
    full = sources if sources.shape[1] == gh * gw else sources[:, full_region_columns(h, w, r)]

    views = {
        "sorted values": (sorted_profile(protected), sorted_profile(gallery)),
        "pixels": (protected.flatten(1).float(), gallery.flatten(1).float()),
        "region means": (F.avg_pool2d(protected.float(), r).flatten(1), F.avg_pool2d(gallery.float(), r).flatten(1)),
    }
    holds = _holders(sources, n)
    everyone = torch.arange(n, device=holds.device)
    rates, victim_rates = {}, {}
    for name, (q, g) in views.items():
        idx, _ = _nearest(q, g)
        rates[name] = float((idx == main).double().mean())
        found, _ = _nearest(g[:n], q)  # the other way round: each original's closest released image
        victim_rates[name] = float(holds[found, everyone].double().mean())

    # regions: nearest candidate region at the same position; flat regions (one value, e.g.
    # background) match every flat region equally and are left out of the region scores
    rq, rg = region_profiles(protected, r), region_profiles(gallery, r)  # (R, N, D), (R, N+M, D)
    ridx, _ = _nearest(rq, rg)  # (R, N)
    informative = rq[..., -1] > rq[..., 0]  # (R, N)
    hits = (ridx == full.T) & informative
    region_rate = float(hits.sum() / informative.sum().clamp(min=1))
    # one more image linker: each protected image votes for the candidates its regions matched
    votes = torch.zeros(n, gallery.shape[0])
    cols = torch.arange(n).view(1, -1).expand_as(ridx)
    votes.index_put_((cols[informative], ridx[informative]), torch.ones(()), accumulate=True)
    rates["region votes"] = float((votes.argmax(dim=1) == main).double().mean())
    best = max(rates, key=rates.get)
    back_idx, back, back2 = _nearest(rg, rq, second=True)  # (R, N+M): each candidate region's closest release
    found = _surest_region(back_idx[:, :n], back[:, :n], back2[:, :n], rg[:, :n])
    victim_rates["surest region"] = float(holds[found, everyone].double().mean())
    victim_best = max(victim_rates, key=victim_rates.get)
    score = -back.mean(dim=0)
    auc = _auc(score[:n], score[n:])
    return {
        "link_rate": rates[best],
        "link_method": best,
        "link_rates": rates,
        "region_link_rate": region_rate,
        "victim_link_rate": victim_rates[victim_best],
        "victim_link_method": victim_best,
        "victim_link_rates": victim_rates,
        "victim_link_chance": float(holds.double().sum(dim=0).mean() / holds.shape[0]),
        "membership_auc": auc,
        "chance": 1.0 / gallery.shape[0],
    }
