"""A5 realign-and-solve: undo per-channel shuffles by tile matching, then a greedy jigsaw.

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

3. **Recover the channel order** (optional, :mod:`visualmixer.eval.attacks.a5_channel_order`):
   pass ``channel_prior=`` to :func:`realign_and_solve` to run it after the jigsaw.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.core.imageops import add_batch_axis, to_float
from visualmixer.core.regions import default_region
from visualmixer.eval.attacks.a5_channel_order import (
    ChannelOrderPrior,
    fit_channel_order_prior,
    recover_channel_order,
)

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
