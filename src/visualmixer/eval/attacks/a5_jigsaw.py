"""A5 realign-and-solve: undo per-channel shuffles by tile matching, then a greedy jigsaw (SPEC §8.1).

VisualMixer permutes the tiles of every region independently in each channel, so the three values
at a pixel come from different places. Natural images have strongly correlated channels, so the
attacker can:

1. **Re-align the channels** (:func:`realign_channels`): inside each region, match every tile of
   channel c to a tile of the reference channel 0 by an assignment problem on standardised tile
   similarity (:func:`scipy.optimize.linear_sum_assignment`; for one-pixel tiles the optimum is the
   rank matching, solved by sorting). This rebuilds coherent colour tiles, but their positions
   are still shuffled.
2. **Solve the jigsaw** (:func:`solve_jigsaw`): place the tiles of each region greedily, in raster
   order, each time choosing the unused tile whose borders best continue the already placed
   neighbours and the pixels around the region (mean squared difference across the shared
   edges); the greedy run is started from several first tiles and the arrangement with the lowest
   total edge cost is kept. All regions of all images are solved in parallel; ``passes > 1`` repeats the solve with
   the previous pass's result as the context around each region.

The attacker does not know each region's tile size (the plan stays with the owner); with
``tile="auto"`` it is guessed per region from the obfuscated image (:func:`estimate_tiles`: pixel
pairs inside a tile are natural neighbours, pairs across tile borders are not). Regions on the
edge strips that the region size does not divide are left as they are.
VisualMixer's per-region channel-ORDER shuffle is not undone by these two steps (channel 0 of a
region may be its green channel): the structure is recovered, the colours stay scrambled.

3. **Recover the channel order** (:func:`recover_channel_order`, optional): a region's channel
   order is one of 3! = 6 permutations; each region's channel means (which no in-region shuffle
   changes) are scored under a :class:`ChannelOrderPrior` learned from the attacker's OWN clean
   colour images (per region position and brightness bin, a Gaussian on the region's mean chroma),
   plus chroma continuity across region borders (iterated conditional modes on the region grid),
   and optionally the public fact that VisualMixer never leaves a region's order unchanged. Pass
   ``channel_prior=`` to :func:`realign_and_solve` to run it after the jigsaw.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.core.imageops import add_batch_axis, region_mean_grid, to_float
from visualmixer.core.regions import default_region

__all__ = [
    "realign_channels",
    "solve_jigsaw",
    "realign_and_solve",
    "estimate_tiles",
    "smoothness",
    "ChannelOrderPrior",
    "fit_channel_order_prior",
    "recover_channel_order",
]


def _check(region: int, tile: int) -> tuple[int, int]:
    region, tile = int(region), int(tile)
    if region < 1 or tile < 1:
        raise ValueError(f"region and tile must be >= 1, got region={region}, tile={tile}")
    if region % tile:
        raise ValueError(f"tile ({tile}) must divide region ({region})")
    return region, tile


def _to_tiles(x: torch.Tensor, region: int, tile: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, gh, gw, T, t, t) for the full regions."""
    n, c, h, w = x.shape
    gh, gw, k = h // region, w // region, region // tile
    core = x[:, :, : gh * region, : gw * region]
    t = core.reshape(n, c, gh, k, tile, gw, k, tile).permute(0, 1, 2, 5, 3, 6, 4, 7)
    return t.reshape(n, c, gh, gw, k * k, tile, tile)


def _from_tiles(tiles: torch.Tensor, x: torch.Tensor, region: int, tile: int) -> torch.Tensor:
    n, c, h, w = x.shape
    gh, gw, k = h // region, w // region, region // tile
    core = tiles.reshape(n, c, gh, gw, k, k, tile, tile).permute(0, 1, 2, 4, 6, 3, 5, 7)
    out = x.clone()
    out[:, :, : gh * region, : gw * region] = core.reshape(n, c, gh * region, gw * region)
    return out


def realign_channels(images, region: int | None = None, tile: int = 1) -> torch.Tensor:
    """Re-align channels 1.. of every region to channel 0 by tile matching (step 1 of A5).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` obfuscated images, uint8 or float in [0, 1]; grey images pass through.
    region : int, optional
        Region side (default: the public rule for the image size).
    tile : int
        Tile side assumed inside every region (must divide ``region``).

    Returns
    -------
    torch.Tensor
        float32 ``(N, C, H, W)``: the same tiles per channel and region, re-ordered so that tile
        positions correspond across channels.
    """
    x, _ = add_batch_axis(images, "images")
    x = to_float(x)
    n, c, h, w = x.shape
    region = default_region(h, w) if region is None else region
    region, tile = _check(region, tile)
    if c == 1 or h < region or w < region or region == tile:
        return x.clone()
    tiles = _to_tiles(x, region, tile)  # (N, C, gh, gw, T, t, t)
    _, _, gh, gw, T, _, _ = tiles.shape
    flat = tiles.reshape(n, c, gh, gw, T, tile * tile).double()
    # standardise each channel of each region, so that channels of different brightness compare
    mu = flat.mean(dim=(4, 5), keepdim=True)
    sd = flat.std(dim=(4, 5), keepdim=True).clamp_min(1e-6)
    z = (flat - mu) / sd
    out = tiles.clone()
    for ch in range(1, c):
        if tile == 1:
            # 1-D squared-error assignment = rank matching
            r0 = z[:, 0, ..., 0].argsort(dim=-1)  # positions of ch0 values in ascending order
            rc = z[:, ch, ..., 0].argsort(dim=-1)
            src = torch.empty_like(rc)
            src.scatter_(-1, r0, rc)  # position r0[i] receives tile rc[i]
        else:
            from scipy.optimize import linear_sum_assignment

            cost = torch.cdist(z[:, 0], z[:, ch]).pow(2).cpu().numpy()  # (N, gh, gw, T, T)
            src_np = np.empty(cost.shape[:-1], dtype=np.int64)
            for idx in np.ndindex(*cost.shape[:3]):
                rows, cols = linear_sum_assignment(cost[idx])
                src_np[idx][rows] = cols
            src = torch.from_numpy(src_np).to(x.device)
        sel = src.view(n, gh, gw, T, 1, 1).expand(n, gh, gw, T, tile, tile)
        out[:, ch] = tiles[:, ch].gather(3, sel)
    return _from_tiles(out, x, region, tile)


def _context(x: torch.Tensor, region: int) -> dict[str, torch.Tensor]:
    """Pixels just outside every full region, two deep (NaN where the image ends).

    Keys ``left1/left2`` (the column left of the region, and the one before it), ``right1/right2``,
    ``top1/top2``, ``bottom1/bottom2``; each of shape ``(N * gh * gw, C, region)``.
    """
    n, c, h, w = x.shape
    gh, gw = h // region, w // region
    pad = F.pad(x, (2, 2, 2, 2), value=float("nan"))  # (N, C, H+4, W+4)
    rows = torch.arange(gh, device=x.device) * region + 2  # padded index of each region's first row
    cols = torch.arange(gw, device=x.device) * region + 2
    span = torch.arange(region, device=x.device)
    r_in = rows[:, None] + span[None, :]  # (gh, R)
    c_in = cols[:, None] + span[None, :]  # (gw, R)

    def colstrip(col_idx):  # col_idx (gw,) -> (N*gh*gw, C, R)
        v = pad[:, :, r_in[:, None, :], col_idx[None, :, None]]  # (N, C, gh, gw, R)
        return v.permute(0, 2, 3, 1, 4).reshape(n * gh * gw, c, region)

    def rowstrip(row_idx):
        v = pad[:, :, row_idx[:, None, None], c_in[None, :, :]]  # (N, C, gh, gw, R)
        return v.permute(0, 2, 3, 1, 4).reshape(n * gh * gw, c, region)

    return {
        "left1": colstrip(cols - 1),
        "left2": colstrip(cols - 2),
        "right1": colstrip(cols + region),
        "right2": colstrip(cols + region + 1),
        "top1": rowstrip(rows - 1),
        "top2": rowstrip(rows - 2),
        "bottom1": rowstrip(rows + region),
        "bottom2": rowstrip(rows + region + 1),
    }


def _edge_cost(a1, a2, b1, b2) -> torch.Tensor:
    """Prediction-based compatibility of an edge between side A (left/top) and side B.

    ``a1`` is A's pixel line at the edge and ``a2`` the line behind it (``None`` for one-pixel
    tiles), ``b1``/``b2`` likewise for B. Each side's line is predicted by linear extrapolation
    from the other side (``2·a1 − a2``; the plain value when there is no second line); the cost is
    the sum of both squared prediction errors. Arguments broadcast to ``(B, T, C, t)``; returns
    ``(B, T)``.
    """
    pred_b = a1 if a2 is None else 2 * a1 - a2
    pred_a = b1 if b2 is None else 2 * b1 - b2
    d = (b1 - pred_b).square_() + (a1 - pred_a).square_()
    return d.flatten(-2).sum(-1)


def _solve_once(x: torch.Tensor, tiles_src: torch.Tensor, region: int, tile: int, starts: int) -> torch.Tensor:
    n, c, h, w = x.shape
    gh, gw, k = h // region, w // region, region // tile
    T = k * k
    S = max(1, min(int(starts), T))
    ctx = _context(x, region)
    B0 = n * gh * gw
    # candidate tiles: (B0, T, C, t, t); each region is solved S times, from S different first tiles
    cand0 = tiles_src.permute(0, 2, 3, 4, 1, 5, 6).reshape(B0, T, c, tile, tile)
    if S < T:  # start from tiles spread over the brightness range
        order = cand0.mean(dim=(2, 3, 4)).argsort(dim=1)
        first = order[:, torch.linspace(0, T - 1, S).round().long().to(x.device)]
    else:
        first = torch.arange(T, device=x.device).expand(B0, T)
    first = first.reshape(-1)
    B = B0 * S
    cand = cand0.repeat_interleave(S, dim=0)  # (B, T, C, t, t)
    two = tile > 1
    L1, L2 = cand[..., :, 0], (cand[..., :, 1] if two else None)
    R1, R2 = cand[..., :, tile - 1], (cand[..., :, tile - 2] if two else None)
    T1, T2 = cand[..., 0, :], (cand[..., 1, :] if two else None)
    B1, B2 = cand[..., tile - 1, :], (cand[..., tile - 2, :] if two else None)
    # context strips: a whole strip is inside the image or outside it; keep a per-region weight
    ctxf, ok = {}, {}
    for side in ("left", "right", "top", "bottom"):
        v1 = ctx[side + "1"].repeat_interleave(S, dim=0).unsqueeze(1)  # (B, 1, C, R)
        v2 = ctx[side + "2"].repeat_interleave(S, dim=0).unsqueeze(1)
        ok[side] = (~torch.isnan(v1[:, 0, 0, 0])).to(cand.dtype).unsqueeze(1)  # (B, 1)
        ctxf[side + "1"] = torch.nan_to_num(v1)
        # second line missing (region one pixel from the border): fall back to the first line
        ctxf[side + "2"] = torch.where(torch.isnan(v2), ctxf[side + "1"], v2)
    line = float(c * tile)
    used = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    placed = torch.zeros(B, T, dtype=torch.long, device=x.device)
    total = torch.zeros(B, dtype=cand.dtype, device=x.device)
    bidx = torch.arange(B, device=x.device)

    def pick(lines, p):  # the placed tile's line at position p: (B, 1, C, t)
        return None if lines is None else lines[bidx, placed[:, p]].unsqueeze(1)

    def second(key, sl):
        return ctxf[key][..., sl] if two else None

    for p in range(T):
        i, j = divmod(p, k)
        rs, cs = slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile)
        if j > 0:
            cost = _edge_cost(pick(R1, p - 1), pick(R2, p - 1), L1, L2)
            cnt = torch.full((B, 1), line, dtype=cand.dtype, device=x.device)
        else:
            cost = _edge_cost(ctxf["left1"][..., rs], second("left2", rs), L1, L2) * ok["left"]
            cnt = line * ok["left"]
        if i > 0:
            cost = cost + _edge_cost(pick(B1, p - k), pick(B2, p - k), T1, T2)
            cnt = cnt + line
        else:
            cost = cost + _edge_cost(ctxf["top1"][..., cs], second("top2", cs), T1, T2) * ok["top"]
            cnt = cnt + line * ok["top"]
        if j == k - 1:
            cost = cost + _edge_cost(R1, R2, ctxf["right1"][..., rs], second("right2", rs)) * ok["right"]
            cnt = cnt + line * ok["right"]
        if i == k - 1:
            cost = cost + _edge_cost(B1, B2, ctxf["bottom1"][..., cs], second("bottom2", cs)) * ok["bottom"]
            cnt = cnt + line * ok["bottom"]
        cost = (cost / cnt.clamp_min(1)).masked_fill_(used, float("inf"))
        choice = first if p == 0 else cost.argmin(dim=1)
        step = cost[bidx, choice]
        total = total + torch.where(torch.isinf(step), torch.zeros_like(step), step)
        placed[:, p] = choice
        used[bidx, choice] = True
    # keep, per region, the start whose greedy arrangement has the lowest total edge cost
    best = total.view(B0, S).argmin(dim=1)
    b0 = torch.arange(B0, device=x.device)
    placed = placed.view(B0, S, T)[b0, best]
    arranged = cand0[b0[:, None], placed]  # (B0, T, C, t, t)
    arranged = arranged.reshape(n, gh, gw, T, c, tile, tile).permute(0, 4, 1, 2, 3, 5, 6)
    return _from_tiles(arranged, x, region, tile)


def solve_jigsaw(
    images, region: int | None = None, tile: int = 1, *, passes: int = 2, starts: int = 4
) -> torch.Tensor:
    """Greedy jigsaw inside every region (step 2 of A5), all regions and images in parallel.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``, uint8 or float in [0, 1] (channels already aligned, e.g. by
        :func:`realign_channels`).
    region : int, optional
        Region side (default: the public rule for the image size).
    tile : int
        Tile side (must divide ``region``).
    passes : int
        Number of solves; each pass uses the previous result as the context around regions.
    starts : int
        First tiles tried per region (all tiles when the region has at most this many); the greedy
        arrangement with the lowest total edge cost is kept.

    Returns
    -------
    torch.Tensor
        float32 ``(N, C, H, W)``.
    """
    x, _ = add_batch_axis(images, "images")
    x = to_float(x)
    n, c, h, w = x.shape
    region = default_region(h, w) if region is None else region
    region, tile = _check(region, tile)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if h < region or w < region or region == tile:
        return x.clone()
    src = _to_tiles(x, region, tile)
    cur = x
    for _ in range(passes):
        cur = _solve_once(cur, src, region, tile, starts)
    return cur


def estimate_tiles(images, region: int | None = None, *, threshold: float = 1.5) -> torch.Tensor:
    """Guess each region's tile side from the obfuscated image alone.

    Inside a tile, adjacent pixels are natural neighbours; across a tile border they are not. For
    every candidate side ``t`` (divisors of ``region`` from 2 up, below ``region``) the mean squared
    difference of adjacent pixel pairs that straddle a ``t``-grid line is compared with that of
    pairs inside ``t``-cells; the ``t`` with the largest ratio wins, or 1 (single pixels) when no
    ratio reaches ``threshold``.

    Returns
    -------
    torch.Tensor
        int64 ``(N, H // region, W // region)`` tile sides.
    """
    x, _ = add_batch_axis(images, "images")
    x = to_float(x)
    n, c, h, w = x.shape
    region = default_region(h, w) if region is None else int(region)
    gh, gw = h // region, w // region
    cands = [t for t in range(2, region) if region % t == 0]
    best = torch.ones(n, gh, gw, dtype=torch.long, device=x.device)
    if not cands or gh == 0 or gw == 0:
        return best
    core = x[:, :, : gh * region, : gw * region]
    dh = F.pad((core[..., :, 1:] - core[..., :, :-1]).square(), (0, 1))  # pair (j, j+1) at column j
    dv = F.pad((core[..., 1:, :] - core[..., :-1, :]).square(), (0, 0, 0, 1))
    dh = dh.reshape(n, c, gh, region, gw, region)
    dv = dv.reshape(n, c, gh, region, gw, region)
    pos = torch.arange(region, device=x.device)
    inside_region = pos != region - 1
    best_ratio = torch.full((n, gh, gw), float(threshold), dtype=x.dtype, device=x.device)
    for t in cands:
        border = (pos % t == t - 1) & inside_region
        within = (pos % t != t - 1) & inside_region
        bh = (dh * border.view(1, 1, 1, 1, 1, -1)).sum(dim=(1, 3, 5))
        wh = (dh * within.view(1, 1, 1, 1, 1, -1)).sum(dim=(1, 3, 5))
        bv = (dv * border.view(1, 1, 1, -1, 1, 1)).sum(dim=(1, 3, 5))
        wv = (dv * within.view(1, 1, 1, -1, 1, 1)).sum(dim=(1, 3, 5))
        nb, nw = int(border.sum()), int(within.sum())
        ratio = ((bh + bv) / (2 * nb)) / ((wh + wv) / (2 * nw) + 1e-8)
        better = ratio > best_ratio
        best = torch.where(better, torch.full_like(best, t), best)
        best_ratio = torch.where(better, ratio, best_ratio)
    return best


def smoothness(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of horizontally and vertically adjacent pixels, per image ``(N,)``."""
    x = to_float(add_batch_axis(images)[0])
    dh = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1)
    dv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1)
    return torch.cat([dh, dv], dim=1).mean(dim=1)


def realign_and_solve(
    images,
    region: int | None = None,
    tile: int | str = "auto",
    *,
    passes: int = 2,
    starts: int = 4,
    channel_prior: ChannelOrderPrior | str | None = None,
) -> torch.Tensor:
    """Attack A5: :func:`realign_channels` then :func:`solve_jigsaw`.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` obfuscated images, uint8 or float in [0, 1].
    region : int, optional
        Region side (default: the public rule for the image size).
    tile : int or "auto"
        Tile side, or ``"auto"``: guess it per region with :func:`estimate_tiles` and solve each
        region at its guessed side.
    passes, starts : int
        Jigsaw passes and first tiles tried per region (see :func:`solve_jigsaw`).
    channel_prior : ChannelOrderPrior, "generic" or None
        When given (colour images only), also undo the per-region channel-order shuffle with
        :func:`recover_channel_order` (``"generic"``: without a learned prior). ``None`` keeps
        the scrambled colours (the plain A5 estimate).

    Returns
    -------
    torch.Tensor
        float32 ``(N, C, H, W)`` estimate of the originals.
    """
    x, _ = add_batch_axis(images, "images")
    x = to_float(x)
    region = default_region(x.shape[2], x.shape[3]) if region is None else int(region)
    if channel_prior is not None and not (
        isinstance(channel_prior, ChannelOrderPrior) or channel_prior == "generic"
    ):
        raise ValueError(f"channel_prior must be a ChannelOrderPrior, 'generic' or None, got {channel_prior!r}")
    if channel_prior is not None and x.shape[1] == 3:
        est = realign_and_solve(x, region, tile, passes=passes, starts=starts)
        return recover_channel_order(est, region, None if channel_prior == "generic" else channel_prior)
    if tile != "auto":
        return solve_jigsaw(
            realign_channels(x, region, int(tile)), region, int(tile), passes=passes, starts=starts
        )
    tiles = estimate_tiles(x, region)
    n, _, h, w = x.shape
    gh, gw = h // region, w // region
    out = x.clone()
    for t in tiles.unique().tolist():
        est = solve_jigsaw(realign_channels(x, region, t), region, t, passes=passes, starts=starts)
        mask = (tiles == t).repeat_interleave(region, 1).repeat_interleave(region, 2)  # (N, gh*R, gw*R)
        core = out[:, :, : gh * region, : gw * region]
        out[:, :, : gh * region, : gw * region] = torch.where(
            mask.unsqueeze(1), est[:, :, : gh * region, : gw * region], core
        )
    return out


# --------------------------------------------------------------------------- channel order (step 3)

#: The 3! channel orders, as VisualMixer's ``sigma``: output channel ``c`` holds source ``sigma[c]``.
_SIGMAS = torch.tensor(list(permutations(range(3))), dtype=torch.long)  # (6, 3)
#: Recovery gather for each order: ``original[j] = observed[_INVERSE[k, j]]``.
_INVERSE = _SIGMAS.argsort(dim=1)
#: Orthonormal basis of the zero-sum plane: a colour's chroma (grey removed) in 2-D.
_CHROMA = torch.tensor(
    [[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64
) / torch.tensor([[2.0**0.5], [6.0**0.5]], dtype=torch.float64)
#: Mean colour of natural photos (the ImageNet channel means, R > G > B): the generic prior's centre.
NATURAL_MEAN_RGB = (0.485, 0.456, 0.406)


def _scheme_log_prior() -> torch.Tensor:
    """Log-probabilities of the 6 orders under VisualMixer's earlier channel-order sampler
    (replaced during 0.1.0 development; public knowledge for outputs made with it).

    That sampler drew a uniform permutation and replaced the identity by its rotation
    ``(2, 0, 1)``: a region's order was never left unchanged, and ``(2, 0, 1)`` was twice as likely
    as the other four. This attack found it; channel orders are now uniform over all 6
    (``permute.sort_permutations(..., avoid_identity=False)``), where this prior no longer helps.
    """
    p = torch.full((6,), 1.0 / 6.0, dtype=torch.float64)
    p[0] = 0.0  # identity
    p[_SIGMAS.tolist().index([2, 0, 1])] = 2.0 / 6.0
    return p.clamp_min(1e-12).log()


def _region_means(x: torch.Tensor, region: int) -> torch.Tensor:
    """Per-region channel means ``(N, rows, cols, C)`` float64; edge strips count their own pixels."""
    return region_mean_grid(x.double(), region).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class ChannelOrderPrior:
    """What an attacker's own clean colour images say about region colours (for A5 step 3).

    For every region position of the grid and every brightness bin (the grey mean of a region is
    not changed by any channel permutation, so the attacker can condition on it), a 2-D Gaussian on
    the region's mean chroma (its mean colour minus its grey level, in the zero-sum plane).

    Attributes
    ----------
    region, rows, cols : int
        Region side and grid shape the prior was fitted for.
    edges : torch.Tensor
        ``(bins - 1,)`` float64 grey-level bin edges (quantiles of the attacker's region greys).
    mean : torch.Tensor
        ``(rows, cols, bins, 2)`` float64 chroma means.
    precision : torch.Tensor
        ``(rows, cols, bins, 2, 2)`` float64 inverse covariances.
    """

    region: int
    rows: int
    cols: int
    edges: torch.Tensor
    mean: torch.Tensor
    precision: torch.Tensor

    @classmethod
    def generic(cls, region: int, rows: int, cols: int, *, spread: float = 0.1) -> ChannelOrderPrior:
        """Position-free prior without attacker data: chroma centred on :data:`NATURAL_MEAN_RGB`
        with an isotropic spread; under it the likeliest order puts a region's largest mean in R,
        the middle one in G and the smallest in B (R > G > B, the commonest order in photos)."""
        mu = _CHROMA @ torch.tensor(NATURAL_MEAN_RGB, dtype=torch.float64)
        prec = torch.eye(2, dtype=torch.float64) / spread**2
        return cls(
            int(region), int(rows), int(cols), torch.zeros(0, dtype=torch.float64),
            mu.expand(rows, cols, 1, 2).clone(), prec.expand(rows, cols, 1, 2, 2).clone(),
        )

    def log_likelihood(self, means: torch.Tensor) -> torch.Tensor:
        """Log-likelihood (up to a per-region constant) of each channel order.

        ``means``: ``(N, rows, cols, 3)`` observed region channel means -> ``(N, rows, cols, 6)``:
        entry ``k`` scores "the region was shuffled by ``_SIGMAS[k]``", i.e. the original region
        mean colour is ``means[..., _INVERSE[k]]``.
        """
        means = means.double()
        if tuple(means.shape[1:3]) != (self.rows, self.cols):
            raise ValueError(
                f"prior fitted for a {self.rows}x{self.cols} region grid, images give "
                f"{means.shape[1]}x{means.shape[2]}"
            )
        dev = means.device
        grey = means.mean(dim=-1)
        b = torch.bucketize(grey, self.edges.to(dev))  # (N, rows, cols)
        r = torch.arange(self.rows, device=dev).view(1, -1, 1)
        c = torch.arange(self.cols, device=dev).view(1, 1, -1)
        mu = self.mean.to(dev)[r, c, b]  # (N, rows, cols, 2)
        prec = self.precision.to(dev)[r, c, b]  # (N, rows, cols, 2, 2)
        cand = means[..., _INVERSE.to(dev)]  # (N, rows, cols, 6, 3)
        z = cand @ _CHROMA.to(dev).T - mu.unsqueeze(-2)  # (N, rows, cols, 6, 2)
        return -0.5 * torch.einsum("...ki,...ij,...kj->...k", z, prec, z)


def fit_channel_order_prior(
    attacker_images, region: int | None = None, *, bins: int = 4, shrink: float = 20.0
) -> ChannelOrderPrior:
    """Fit a :class:`ChannelOrderPrior` on the attacker's OWN clean colour images.

    Parameters
    ----------
    attacker_images : torch.Tensor
        ``(N, 3, H, W)`` uint8 or float in [0, 1], the same size as the victims.
    region : int, optional
        Region side (default: the public rule for the image size).
    bins : int
        Brightness bins (quantiles of the region grey levels).
    shrink : float
        Pseudo-count pulling each (position, bin) Gaussian towards the bin's pooled one.
    """
    x, _ = add_batch_axis(attacker_images, "attacker_images")
    if x.shape[1] != 3:
        raise ValueError(f"a channel-order prior needs colour (3-channel) images, got {x.shape[1]} channel(s)")
    x = to_float(x)
    n, _, h, w = x.shape
    region = default_region(h, w) if region is None else int(region)
    if region < 1 or bins < 1:
        raise ValueError(f"region and bins must be >= 1, got region={region}, bins={bins}")
    means = _region_means(x, region)  # (N, rows, cols, 3)
    rows, cols = means.shape[1:3]
    grey = means.mean(dim=-1)
    q = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.quantile(grey.flatten(), q) if bins > 1 else torch.zeros(0, dtype=torch.float64)
    onehot = F.one_hot(torch.bucketize(grey, edges), bins).double()  # (N, rows, cols, B)
    z = means @ _CHROMA.T  # (N, rows, cols, 2)
    zz = z.unsqueeze(-1) * z.unsqueeze(-2)  # (N, rows, cols, 2, 2)
    cnt = onehot.sum(0)  # (rows, cols, B)
    s1 = torch.einsum("nrcb,nrci->rcbi", onehot, z)
    s2 = torch.einsum("nrcb,nrcij->rcbij", onehot, zz)
    # pooled over positions, per bin (then over bins, for bins no image reached)
    pc, p1, p2 = cnt.sum((0, 1)), s1.sum((0, 1)), s2.sum((0, 1))
    pmu = p1 / pc.clamp_min(1).unsqueeze(-1)
    pcov = p2 / pc.clamp_min(1).view(-1, 1, 1) - pmu.unsqueeze(-1) * pmu.unsqueeze(-2)
    k = float(shrink)
    mu = (s1 + k * pmu) / (cnt + k).unsqueeze(-1)
    second = (s2 + k * (pcov + pmu.unsqueeze(-1) * pmu.unsqueeze(-2))) / (cnt + k).view(rows, cols, bins, 1, 1)
    cov = second - mu.unsqueeze(-1) * mu.unsqueeze(-2) + 1e-5 * torch.eye(2, dtype=torch.float64)
    return ChannelOrderPrior(region, rows, cols, edges, mu, torch.linalg.inv(cov))


def _border_costs(x: torch.Tensor, region: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Colour mismatch across every region border for every pair of channel orders.

    Returns ``(horiz, vert, scale)``: ``horiz[n, i, j, k, l]`` is the mean squared CHROMA
    difference (colour difference less its grey part, which no order changes) between the last
    column of region ``(i, j)`` recovered with order ``k`` and the first
    column of region ``(i, j + 1)`` recovered with order ``l`` (``(N, rows, cols - 1, 6, 6)``),
    ``vert`` likewise down the grid; ``scale`` is the batch's mean squared GREY difference across
    borders times 3 (order-independent), the unit the costs are divided by.
    """
    n, c, h, w = x.shape
    rows, cols = -(-h // region), -(-w // region)
    xp = F.pad(x.double(), (0, cols * region - w, 0, rows * region - h), value=float("nan"))
    inv = _INVERSE.to(x.device)

    def pair(a, b):  # a, b: (..., 3, L) lines with NaN padding -> (..., 6, 6) cost, grey sq diff
        ok = ~(torch.isnan(a[..., :1, :]) | torch.isnan(b[..., :1, :]))
        a, b = torch.nan_to_num(a) * ok, torch.nan_to_num(b) * ok
        cntp = ok.sum(-1).squeeze(-1).clamp_min(1).double()  # (...,)
        gram = torch.einsum("...cl,...dl->...cd", a, b)  # (..., 3, 3)
        cross = gram[..., inv[:, None, :], inv[None, :, :]].sum(-1)  # (..., 6, 6): sum_c <a_inv_k[c], b_inv_l[c]>
        norms = (a.square().sum((-2, -1)) + b.square().sum((-2, -1))).unsqueeze(-1).unsqueeze(-1)
        g = (a.mean(-2) - b.mean(-2)).square().sum(-1)  # (...,) grey part, the same for every order
        cost = ((norms - 2 * cross) - 3 * g[..., None, None]).clamp_min(0) / cntp[..., None, None]
        return cost, g.sum(), ok.sum()

    r = region
    left = xp[..., r - 1 :: r][..., : cols - 1]  # (N, 3, rows*R, cols-1)
    right = xp[..., r::r]
    left = left.reshape(n, c, rows, r, cols - 1).permute(0, 2, 4, 1, 3)
    right = right.reshape(n, c, rows, r, cols - 1).permute(0, 2, 4, 1, 3)
    top = xp[..., r - 1 :: r, :][..., : rows - 1, :]  # (N, 3, rows-1, cols*R)
    bottom = xp[..., r::r, :]
    top = top.reshape(n, c, rows - 1, cols, r).permute(0, 2, 3, 1, 4)
    bottom = bottom.reshape(n, c, rows - 1, cols, r).permute(0, 2, 3, 1, 4)
    horiz, gh_, nh = pair(left, right)
    vert, gv_, nv = pair(top, bottom)
    scale = 3.0 * float((gh_ + gv_) / (nh + nv).clamp_min(1))
    return horiz, vert, max(scale, 1e-6)


def _local_energy(energy, horiz, vert, orders) -> torch.Tensor:
    """Energy ``(N, rows, cols, 6)`` of every order of every region, its neighbours' orders fixed."""
    total = energy.clone()
    if horiz.shape[2] > 0:  # right neighbour's order l fixed: horiz[i, j, :, l]; left's k: horiz[i, j-1, k, :]
        right, left = orders[:, :, 1:], orders[:, :, :-1]
        total[:, :, :-1] += horiz.gather(-1, right[..., None, None].expand(-1, -1, -1, 6, 1)).squeeze(-1)
        total[:, :, 1:] += horiz.gather(-2, left[..., None, None].expand(-1, -1, -1, 1, 6)).squeeze(-2)
    if vert.shape[1] > 0:
        below, above = orders[:, 1:, :], orders[:, :-1, :]
        total[:, :-1, :] += vert.gather(-1, below[..., None, None].expand(-1, -1, -1, 6, 1)).squeeze(-1)
        total[:, 1:, :] += vert.gather(-2, above[..., None, None].expand(-1, -1, -1, 1, 6)).squeeze(-2)
    return total


def recover_channel_order(
    images,
    region: int | None = None,
    prior: ChannelOrderPrior | None = None,
    *,
    smooth: float = 1.0,
    cap: float = 4.0,
    scheme: bool = False,
    sweeps: int = 4,
    decision: str = "map",
    return_orders: bool = False,
):
    """Undo VisualMixer's per-region channel-order shuffle as well as an attacker can (A5 step 3).

    Every region's channel order is one of the 6 permutations of (R, G, B). Each is scored by

    * the ``prior`` (:func:`fit_channel_order_prior` on the attacker's own clean images; without
      one, :meth:`ChannelOrderPrior.generic`: R > G > B, the commonest order of natural photos);
    * with ``scheme=True``, VisualMixer's earlier, biased sampler (:func:`_scheme_log_prior`: the
      identity never occurred, ``(2, 0, 1)`` twice as often as the others). On outputs of that
      sampler it put more regions' orders right (about 0.64 vs 0.59 on the built-in photos) but
      lowered SSIM (0.69 vs 0.70); the library now draws channel orders uniformly, so leave it off
      for current outputs;
    * with ``smooth > 0``, chroma continuity with the four neighbouring regions across their
      shared borders (a truncated quadratic in units of the batch's own grey border
      differences), optimised by a few
      checkerboard sweeps of iterated conditional modes over all regions and images at once.

    Region means do not depend on where tiles sit inside a region, so this works on the raw
    obfuscated images as well as on the A5 estimate (where the borders are more informative).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` (or ``(3, H, W)``) uint8 or floating; 1-channel input is returned as is.
    region : int, optional
        Region side (default: the public rule for the image size).
    prior : ChannelOrderPrior, optional
    smooth : float
        Weight of the border-continuity term (0: regions decided independently).
    cap : float
        Truncation of each border's continuity cost (in units of the batch's mean squared grey
        border difference times 3), so that genuine colour edges are not "repaired".
    scheme : bool
        Use the earlier sampler's order distribution (above).
    sweeps : int
        ICM sweeps (each updates the two checkerboard colours in turn).
    decision : {"map", "channels"}
        ``"map"``: each region's most probable order; ``"channels"``: the order that puts the most
        channels back in place on average under the region's posterior (minimum Bayes risk).
    return_orders : bool
        Also return the chosen orders ``(N, rows, cols)`` int64 indices into the 6 permutations.

    Returns
    -------
    torch.Tensor
        Same shape (batch axis as given), dtype and device as ``images``: every region's channels
        put back in the chosen order (values are only moved). With ``return_orders``, a tuple.
    """
    x, added = add_batch_axis(images, "images")
    n, c, h, w = x.shape
    region = default_region(h, w) if region is None else int(region)
    if region < 1:
        raise ValueError(f"region must be >= 1, got {region}")
    rows, cols = -(-h // region), -(-w // region)
    dev = x.device
    if c == 1:
        out = x.clone()
        orders = torch.zeros(n, rows, cols, dtype=torch.long, device=dev)
    else:
        xf = to_float(x)
        if prior is None:
            prior = ChannelOrderPrior.generic(region, rows, cols)
        elif prior.region != region:
            raise ValueError(f"prior fitted for region {prior.region}, images use region {region}")
        energy = -prior.log_likelihood(_region_means(xf, region))  # (N, rows, cols, 6)
        if scheme:
            energy = energy - _scheme_log_prior().to(dev)
        orders = energy.argmin(dim=-1)
        total = energy
        if smooth > 0 and (rows > 1 or cols > 1):
            horiz, vert, scale = _border_costs(xf, region)
            # truncated quadratic: a real colour edge costs at most ``cap`` whatever the orders,
            # so continuity cannot make the step recolour one side of an edge to match the other
            horiz = (horiz / scale).clamp_max(cap) * smooth
            vert = (vert / scale).clamp_max(cap) * smooth
            ii = torch.arange(rows, device=dev).view(-1, 1)
            jj = torch.arange(cols, device=dev).view(1, -1)
            colour = (ii + jj) % 2
            for _ in range(max(0, int(sweeps))):
                for parity in (0, 1):
                    total = _local_energy(energy, horiz, vert, orders)
                    orders = torch.where(colour == parity, total.argmin(dim=-1), orders)
            total = _local_energy(energy, horiz, vert, orders)
        if decision == "channels":
            # minimum Bayes risk: maximise the expected number of channels put back in place
            # under each region's (local, conditional) posterior over the 6 orders
            post = torch.softmax(-total, dim=-1)
            agree = (_SIGMAS[:, None, :] == _SIGMAS[None, :, :]).sum(-1).to(post)  # (6, 6)
            orders = (post @ agree.to(dev)).argmax(dim=-1)
        elif decision != "map":
            raise ValueError(f"decision must be 'map' or 'channels', got {decision!r}")
        idx = _INVERSE.to(dev)[orders]  # (N, rows, cols, 3): source channel of each output channel
        idx = idx.permute(0, 3, 1, 2).repeat_interleave(region, 2).repeat_interleave(region, 3)
        out = x.gather(1, idx[:, :, :h, :w].contiguous())
    if added:
        out = out[0]
    return (out, orders) if return_orders else out
