"""The planner behind :func:`visualmixer.core.mixer.obfuscate`: which ladder level each region
gets.

The plan sequence raises a global base level step by step and, in between, lifts the most
salient quarter of the regions one level further::

    plan j:  level(r) = max(lowest(r), min(top, 1 + j // 2 + (j % 2) * salient(r))),   j = 0 .. 2 * top - 2

(``lowest(r)``: the region's lowest level that moves its pixels, :attr:`RegionGrid.lowest_levels`.)

Each image gets the first plan of the sequence whose obfuscated image reaches the target VFE
(weighted by the ORIGINAL image's saliency). Where VFE windows are the regions
(:func:`_one_pass_plans`), every region is shuffled and scored at each level once and every
plan's VFE is read off that table, exactly; elsewhere a per-image bisection over ``j``
(:func:`_search_plans`) shuffles and scores the images still searching, step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from visualmixer.core import triton_switch
from visualmixer.core.imageops import region_mean_grid
from visualmixer.core.keyed import GENERATOR, host_checks, to_device
from visualmixer.core.permute import (
    LadderKeys,
    images_per_block,
    ladder_keys,
    level_sources,
    shuffle_level,
    shuffle_regions,
)
from visualmixer.core.regions import VIEW_DTYPES, RegionGrid, from_regions, region_windows, tile_ladder, widest_word
from visualmixer.core.saliency import resolve_saliency
from visualmixer.core.validation import BatchInfo
from visualmixer.core.vfe import (
    exact_square_sum,
    integral_ratio,
    scores_from_windows,
    weighted_vfe,
    window_norm,
    window_scores,
)

__all__ = ["plan_sequence", "SALIENT_SHARE"]

#: Share of regions (by saliency, per image) that get one level more than the base level.
SALIENT_SHARE = 0.25

def plan_sequence(salient: torch.Tensor, j: torch.Tensor, top: int,
                  lowest: torch.Tensor | None = None) -> torch.Tensor:
    """Levels ``(N, regions)`` of plan ``j`` (per image) given the salient-region mask, and no
    region below its ``lowest`` level (:attr:`RegionGrid.lowest_levels`, ``(regions,)``)."""
    base = 1 + torch.div(j, 2, rounding_mode="floor")
    extra = (j % 2).unsqueeze(1) * salient.long()
    levels = (base.unsqueeze(1) + extra).clamp(max=top)
    return levels if lowest is None else torch.maximum(levels, lowest)



def _pixel_saliency(batch: torch.Tensor, saliency, window: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel saliency ``(N, 1, H, W)`` float64 for the planner's bands and weights, and the
    caller's per-window map ``(N, nh, nw)`` when one was given (else ``None``): the window
    weights are then that map as given, as :func:`visualmixer.vfe` uses it (summing its spread
    would weigh the partial windows at the edge by their pixel counts)."""
    h, w = batch.shape[2:]
    smap, per_window = resolve_saliency(saliency, batch, window)
    if per_window:  # spread each window's weight over its pixels
        return smap.repeat_interleave(window, 1).repeat_interleave(window, 2)[:, None, :h, :w], smap
    return smap, None


def _salient_regions(smap: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """``(N, regions)`` bool: the most salient :data:`SALIENT_SHARE` of each image's regions."""
    mean = region_mean_grid(smap, grid.region).flatten(1)  # edge regions by their own pixels
    cut = torch.quantile(mean, 1.0 - SALIENT_SHARE, dim=1, keepdim=True)
    return mean >= cut


#: How far below the target an estimated plan VFE may be and still get probed (the estimate's
#: measured error on photos and Fashion-MNIST is 0 to +0.06: shuffled images score a little higher).
PREDICTION_SLACK = 0.1


def _first_at_least(values: torch.Tensor, tau: float) -> torch.Tensor:
    """Per row, the first column with ``values >= tau`` (the last column when none is)."""
    hit = values >= tau
    first = hit.to(torch.uint8).argmax(dim=1)
    return torch.where(hit.any(dim=1), first, torch.full_like(first, values.shape[1] - 1))


def _predict_plan_vfe(regions, weights, salient, grid, last) -> torch.Tensor:
    """Estimated VFE ``(N, last + 1)`` of every plan, for full regions that are the VFE windows.

    Shuffling tiles keeps every pixel pair inside a tile and each region's value multiset (so
    ``V``); only pairs across tile seams change. A seam pair becomes a pair of values from two
    different tiles, estimated as two random values of the region: ``E[(a-b)^2] = 2V/(n-1)``.
    Used only by the bisection search (:func:`_search_plans`), the reference for the exact
    one-pass planner.
    """
    n, m, c, r, _ = regions.shape
    x = regions.to(torch.float32, copy=True)  # modified in place below; never touch the input
    col = (x[..., 1:] - x[..., :-1]).square_().sum(dim=-2).double()  # (N, m, C, R-1) by seam offset
    row = (x[..., 1:, :] - x[..., :-1, :]).square_().sum(dim=-1).double()
    total = x.sum(dim=(-2, -1)).double()
    npx = r * r
    var = x.square_().sum(dim=(-2, -1)).double() - total * total / npx  # V per region and channel
    g_all = col.sum(-1) + row.sum(-1)
    norm = (r + 1) / (4 * r)
    offsets = torch.arange(1, r, device=x.device)
    per_level = [torch.zeros((n, m), dtype=torch.float64, device=x.device)]  # level 0 unused
    for t in tile_ladder(r)[1:]:  # <= log2(R) levels
        seam = (offsets % t == 0).double()
        g_seam = (col * seam).sum(-1) + (row * seam).sum(-1)
        g = g_all - g_seam + 2 * r * (r // t - 1) * 2 * var / (npx - 1)
        v = torch.where(var > 0, norm * g / var.clamp_min(1e-300), torch.zeros_like(var))
        per_level.append(v.mean(dim=2))
    v_levels = torch.stack(per_level, dim=-1)  # (N, m, top + 1)
    w = weights.reshape(n, m)
    wsum = w.sum(dim=1, keepdim=True)
    w = torch.where(wsum > 0, w / wsum.clamp_min(1e-300), torch.full_like(w, 1.0 / m))
    plans = torch.arange(last + 1, device=x.device)
    levels = plan_sequence(salient.repeat_interleave(last + 1, 0), plans.repeat(n), grid.levels)
    levels = levels.view(n, last + 1, m)
    v = v_levels.unsqueeze(1).expand(n, last + 1, m, -1).gather(3, levels.unsqueeze(-1)).squeeze(-1)
    return (v * w.unsqueeze(1)).sum(dim=-1)


@dataclass
class _Job:
    """One batch to obfuscate: the validated input and everything the planner derives from it."""

    batch: torch.Tensor  # (N, C, H, W)
    info: BatchInfo
    tau: float
    grid: RegionGrid
    window: int  # VFE window side (a function of the image size only)
    channel_order: bool
    weights: torch.Tensor  # (N, nh, nw) float64 window weights from the ORIGINAL's saliency
    salient: torch.Tensor  # (N, regions) bool
    regions: torch.Tensor  # (N, regions, C, R, R)
    words: torch.Tensor  # (N, 8) int32 key words on the images' device (generator 2)

    @property
    def last(self) -> int:
        """Index of the last plan of the sequence (all regions at the top level)."""
        return max(0, 2 * self.grid.levels - 2)

    @cached_property
    def lowest(self) -> torch.Tensor | None:
        """The grid's :attr:`~RegionGrid.lowest_levels` on the images' device (``None``: level 1 for
        all), copied once per job."""
        lowest = self.grid.lowest_levels
        return None if lowest is None else to_device(lowest, self.batch.device)


def _shuffle(job: _Job, levels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The regions of the images ``rows`` (all when None) shuffled at ``levels`` (per region)."""
    regions, words = (job.regions, job.words) if rows is None else (job.regions[rows], job.words[rows])
    return shuffle_regions(regions, words, levels, job.grid, job.channel_order, generator=GENERATOR)


def _scores(job: _Job, out: torch.Tensor) -> torch.Tensor:
    """Per-channel window scores ``(n, C, nh, nw)`` of shuffled regions ``out``."""
    h, w = job.grid.height, job.grid.width
    if job.window == job.grid.region:  # VFE windows are the regions: score the region layout
        return scores_from_windows(region_windows(out, job.grid), h, w)
    return window_scores(from_regions(out, job.grid), job.window)


def _level_scores(job: _Job, level: int, sums, keys: LadderKeys | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every region shuffled at one ``level``, and the per-channel score of every region then.

    Returns ``(out, scores)``: ``(N, regions, C, R, R)`` and ``(N, C, rows, cols)`` float64,
    exactly the scores :func:`_scores` gives for ``out`` (windows are the regions here). With
    ``sums`` (:func:`_source_sums`: uint8 images, full regions) only the pixel pairs across tile
    seams are read from ``out``: pairs inside tiles and every region's value sums are the
    source's, moved with the channel order.
    """
    n, m, c = job.regions.shape[:3]
    grid = job.grid
    if not grid.full:  # edge regions: score the image's windows
        out = _shuffle(job, torch.full((n, m), level, dtype=torch.int64, device=job.batch.device))
        return out, _scores(job, out)
    r = grid.region
    t = tile_ladder(r)[level]
    if sums is None:  # score the contiguous region layout (same arithmetic as the image's windows)
        out = shuffle_level(job.regions, level_sources(keys, grid, level), t)
        scores = scores_from_windows(out.view(n, m, c, 1, r, r), c * r, r)  # (N, m, C, 1)
        return out, scores.view(n, m, c).permute(0, 2, 1).reshape(n, c, grid.rows, grid.cols)
    # on the CPU a block of images at a time for large batches (keys, index and seams stay
    # cache-sized); the same integers
    step = images_per_block(job.regions, grid, level) if host_checks(job.batch.device) else n
    out = torch.empty_like(job.regions, memory_format=torch.contiguous_format)
    g, total, sumsq = (torch.cat(parts) for parts in zip(*(
        _block_sums(job.regions[i : i + step], keys.rows(i * m, (i + step) * m), [v[i : i + step] for v in sums],
                    grid, level, out[i : i + step]) for i in range(0, n, step)), strict=True))
    ratio = integral_ratio(g.double(), total.double(), sumsq.double(), float(r * r))
    ratio = ratio.permute(0, 2, 1).reshape(n, c, grid.rows, grid.cols)
    return out, ratio * window_norm(grid.height, grid.width, r, job.batch.device)


def _block_sums(regions, keys, sums, grid, level, out):
    """For :func:`_level_scores`: ``regions`` shuffled at ``level`` into ``out``, and the pixel-pair
    sum, value sum and sum of squares ``(n, m, C)`` int32 of every shuffled region from the
    source's :func:`_source_sums` and the seams read from ``out``."""
    n, m, c, r, _ = regions.shape
    t = tile_ladder(r)[level]
    sources = level_sources(keys, grid, level)
    shuffle_level(regions, sources, t, out=out)
    g_all, total, sumsq, col, row = sums
    inside = g_all - col[..., t - 1 :: t].sum(-1, dtype=torch.int32) - row[..., t - 1 :: t].sum(-1, dtype=torch.int32)
    nt = sources.shape[1] // c
    sigma = torch.div(sources[:, ::nt], nt, rounding_mode="floor").view(n, m, c).long()  # source channel
    inside, total, sumsq = (v.gather(2, sigma) for v in (inside, total, sumsq))
    return (inside + _seams(out, t) if t < r else inside), total, sumsq


def _seams(out: torch.Tensor, t: int) -> torch.Tensor:
    """Sum of squared differences ``(N, m, C)`` int32 of the pixel pairs across the tile seams
    of uint8 regions ``out`` (both directions)."""
    # one kernel on CUDA, where switched on (the same integers)
    return triton_switch.call("pair_sums", out, t, variant=(out.shape[-1], t), eager=lambda: _eager_seams(out, t))


def _eager_seams(out: torch.Tensor, t: int) -> torch.Tensor:
    """:func:`_seams` by tensor operations. On the CPU, for regions of at most 16 px cut into at
    least 4 tiles a side, in float32 a block of values at a time: each direction's sum is an
    integer below 2**24 (at most 16 * 15 * 255**2), so exact in any order (224² b64: 2x2 tiles
    13 -> 6 ms, single pixels 14 -> 7); fewer seams are cheaper as uint8 differences."""
    r = out.shape[-1]
    if not host_checks(out.device) or r > 16 or r // t < 4:
        return _seam_sum(out, t, -1) + _seam_sum(out, t, -2)
    return _in_value_blocks(lambda block: _float_seams(block, t), out)


def _float_seams(out: torch.Tensor, t: int) -> torch.Tensor:
    """:func:`_seams` of regions of at most 16 px in float32 (exact: see :func:`_eager_seams`)."""
    x = out.to(torch.float32)
    r = x.shape[-1]
    across = (x[..., t::t] - x[..., t - 1 : r - 1 : t]).square_().sum(dim=(-2, -1)).to(torch.int32)
    down = (x[..., t::t, :] - x[..., t - 1 : r - 1 : t, :]).square_().sum(dim=(-2, -1)).to(torch.int32)
    return across.add_(down)


def _seam_sum(out: torch.Tensor, t: int, dim: int) -> torch.Tensor:
    """Sum of squared differences ``(N, m, C)`` int32 of pixel pairs across the tile seams of
    uint8 regions ``out`` along ``dim`` (-1: columns, -2: rows)."""
    r = out.shape[-1]
    if dim == -1:  # the last pixel of each tile and the first of the next
        a, b = out[..., t - 1 : r - 1 : t], out[..., t::t]
    else:
        a, b = out[..., t - 1 : r - 1 : t, :], out[..., t::t, :]
    d = (torch.maximum(a, b) - torch.minimum(a, b)).to(torch.int32)  # |a - b| in uint8
    return d.mul_(d).sum(dim=(-2, -1), dtype=torch.int32)


#: Values per block of :func:`_source_sums` and :func:`_eager_seams` on the CPU (as float32, about one
#: core's L2 cache).
SUMS_BLOCK_VALUES = 1 << 19


def _source_sums(job: _Job):
    """Exact integer sums of the unshuffled regions, by channel, for :func:`_level_scores`:
    ``(G, total, sum of squares)`` ``(N, m, C)`` and the squared pair differences by column and
    by row offset ``(N, m, C, R - 1)``, all int32. ``None`` unless the images are uint8, the
    regions full and the VFE windows (and at most 90 px: int16 row sums, int32 totals)."""
    grid = job.grid
    if job.batch.dtype != torch.uint8 or not grid.full or job.window != grid.region or grid.region > 90:
        return None
    # one kernel on CUDA, where switched on (the same integers)
    return triton_switch.call("pair_sums", job.regions, variant=(grid.region, 0),
                              eager=lambda: _eager_source_sums(job.regions))


def _eager_source_sums(regions: torch.Tensor):
    """:func:`_source_sums` of full uint8 regions of at most 90 px, by tensor operations."""
    if regions.shape[-1] > 16:  # sums of squares may pass 2**24: exact int16 byte sums
        return _int16_sums(regions)
    # (224² b64: 33 -> 10 ms with blocks of 4 images, one thread)
    return _in_value_blocks(_float_sums, regions)


def _in_value_blocks(fn, x: torch.Tensor):
    """``fn(x)`` (a tensor or a tuple of tensors, each along ``x``'s first axis), on the CPU a
    block of about :data:`SUMS_BLOCK_VALUES` values (whole images) at a time, so its float32
    passes stay in cache; the parts joined. Blocks of memory, not images: on accelerators (and
    for small batches) one call; the same integers."""
    step = max(1, SUMS_BLOCK_VALUES // x[0].numel())
    if not host_checks(x.device) or len(x) <= step:
        return fn(x)
    parts = [fn(x[i : i + step]) for i in range(0, len(x), step)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _float_sums(x: torch.Tensor):
    """:func:`_source_sums` of regions of at most 16 px in float32: every sum is an integer below
    2**24 (at most 256 * 255**2), so each is exact in any order, on every device; 2-3x faster
    than integer passes on the CPU."""
    x = x.to(torch.float32)
    col = (x[..., 1:] - x[..., :-1]).square_().sum(dim=-2).to(torch.int32)  # (N, m, C, R-1) by column offset
    row = (x[..., 1:, :] - x[..., :-1, :]).square_().sum(dim=-1).to(torch.int32)
    total = x.sum(dim=(-2, -1)).to(torch.int32)
    sumsq = x.square_().sum(dim=(-2, -1)).to(torch.int32)
    g_all = col.sum(-1, dtype=torch.int32) + row.sum(-1, dtype=torch.int32)
    return g_all, total, sumsq, col, row


def _int16_sums(x: torch.Tensor):
    """:func:`_source_sums` of regions of 17-90 px, exactly, in int16 byte sums."""
    x = x.to(torch.int16)
    col = exact_square_sum(x[..., 1:] - x[..., :-1], -2)  # (N, m, C, R-1) by column offset
    row = exact_square_sum(x[..., 1:, :] - x[..., :-1, :], -1)
    total = x.sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    sumsq = exact_square_sum(x, -1).sum(-1, dtype=torch.int32)
    g_all = col.sum(-1, dtype=torch.int32) + row.sum(-1, dtype=torch.int32)
    return g_all, total, sumsq, col, row


def _plan_vfe(job: _Job, table: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Image VFE ``(N, P)`` of ``P`` plans per image from per-level region scores.

    ``table`` is ``(N, L, C, regions)`` (scores of every region at levels ``0 .. L-1``),
    ``levels`` ``(N, P, regions)``. Each plan's VFE is computed by :func:`weighted_vfe` from the
    same per-window scores its output has, so it is bit-identical to the VFE of that output.
    """
    n, p, m = levels.shape
    c = table.shape[2]
    idx = levels.unsqueeze(2).expand(n, p, c, m)
    scores = table.gather(1, idx).view(n * p, c, job.grid.rows, job.grid.cols)
    weights = job.weights.repeat_interleave(p, dim=0)
    return weighted_vfe(scores, weights).view(n, p)


def _one_pass_plans(job: _Job):
    """The first plan of the sequence reaching the target, from exact per-region level scores.

    VFE windows are the regions, so a plan's VFE is a weighted sum of per-region scores, and a
    region's score at a level does not depend on the other regions' levels. Every region is
    shuffled and scored at each level once (a loop over the ladder, never over regions), then
    every plan's VFE is read off the table and the first reaching the target is taken; its
    output is assembled from the per-level outputs. On the CPU the ladder stops at the first
    level at which every image's first passing plan is known (host checks are free there).

    Returns ``(plan index (N,), levels (N, regions), out regions, vfe (N,))``.
    """
    grid, n = job.grid, job.batch.shape[0]
    top, last = grid.levels, job.last
    levels_scored = range(top + 1) if top == 0 else range(1, top + 1)  # plans never use level 0
    sums = _source_sums(job)
    c = job.regions.shape[2]
    # (edge regions are shuffled by _shuffle: no keys here)
    batched = grid.full and not host_checks(job.batch.device)  # every level's keys in one pass
    keys = ladder_keys(job.words, grid, c, job.channel_order, levels_scored) if batched else None
    outs, tables = [], []
    floor = 1 if grid.lowest_levels is None else int(grid.lowest_levels.max())  # (tables up to it first)
    for level in levels_scored:
        if grid.full and not batched:  # on the CPU, the keys of the levels reached only
            keys = ladder_keys(job.words, grid, c, job.channel_order, (level,))
        out, scores = _level_scores(job, level, sums, keys)
        outs.append(out)
        tables.append(scores.flatten(2))
        known = last + 1 if level == top else 2 * level - 1  # plans 0 .. known-1 use levels <= level
        if floor <= level < top and host_checks(job.batch.device):
            if bool((_known_plans(job, tables, known)[1] >= job.tau).any(dim=1).all()):
                break
    lv, got = _known_plans(job, tables, known)
    chosen = _first_at_least(got, job.tau)
    levels = lv.gather(1, chosen.view(n, 1, 1).expand(n, 1, lv.shape[2])).squeeze(1)
    out = _select_levels(outs, levels - levels_scored[0])
    return chosen, levels, out, got.gather(1, chosen.view(n, 1)).squeeze(1)


def _known_plans(job: _Job, tables: list[torch.Tensor], known: int):
    """Levels ``(N, known, regions)`` and VFE ``(N, known)`` of plans ``0 .. known - 1`` from the
    per-level score tables so far (``tables[i]``: level ``i + 1``, or level 0 on a one-level ladder)."""
    n, top = job.batch.shape[0], job.grid.levels
    zeros = [] if top == 0 else [torch.zeros_like(tables[0])]  # level 0 (never used by a plan)
    table = torch.stack(zeros + tables, dim=1)
    plans = torch.arange(known, device=job.batch.device)
    lv = plan_sequence(job.salient.repeat_interleave(known, 0), plans.repeat(n), top, job.lowest).view(n, known, -1)
    return lv, _plan_vfe(job, table, lv)


def _select_levels(outs: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Region ``r`` of image ``i`` from ``outs[index[i, r]]`` (all ``(N, m, C, R, R)``)."""
    used = range(len(outs))
    if host_checks(index.device):  # skip selects nobody needs
        used = [i for i in used if bool((index == i).any())]
    if len(used) == 1:
        return outs[used[0]]
    n, m = index.shape
    out = _as_words(outs[used[0]])  # select whole regions as wide integers, in place (the
    for i in used[1:]:  # outputs are this call's own): no new full-size tensors, <= top selects
        torch.where((index == i).view(n, m, 1), _as_words(outs[i]), out, out=out)
    return out.view(torch.uint8).view(outs[0].dtype).view(outs[0].shape)


def _as_words(regions: torch.Tensor) -> torch.Tensor:
    """``(N, m, ...)`` viewed as ``(N, m, k)`` of the widest integer dividing a region's bytes."""
    n, m = regions.shape[:2]
    nbytes = regions[0, 0].numel() * regions.element_size()
    return regions.contiguous().view(n, m, -1).view(torch.uint8).view(VIEW_DTYPES[widest_word(nbytes)])


def _search_plans(job: _Job):
    """Per-image bisection over the plan sequence (for VFE windows that are not the regions).

    Each step is one shuffle and one VFE pass over the images still searching. Where the
    windows are the (full) regions a closed-form estimate picks the first probe; this path is
    kept as the reference that the exact one-pass planner is tested against.

    Returns ``(plan index (N,), levels (N, regions), out regions, vfe (N,))``.
    """
    grid, n = job.grid, job.batch.shape[0]
    top, last, tau = grid.levels, job.last, job.tau
    dev = job.batch.device
    lo = torch.zeros(n, dtype=torch.int64, device=dev)
    hi = torch.full((n,), last, dtype=torch.int64, device=dev)
    found = torch.full((n,), last + 1, dtype=torch.int64, device=dev)
    best = torch.empty_like(job.regions)
    best_vfe = torch.zeros(n, dtype=torch.float64, device=dev)
    predicted = None
    if job.window == grid.region and grid.full and top > 0:
        predicted = _predict_plan_vfe(job.regions, job.weights, job.salient, grid, last)
    while True:
        active = (lo <= hi).nonzero().flatten()
        if active.numel() == 0:
            break
        if predicted is None:
            probe = torch.div(lo[active] + hi[active], 2, rounding_mode="floor")
        else:
            first = _first_at_least(predicted[active], tau)
            probe = torch.maximum(torch.minimum(first, hi[active]), lo[active])
        rows = None if active.numel() == n else active
        out = _shuffle(job, plan_sequence(job.salient[active], probe, top, job.lowest), rows)
        got = weighted_vfe(_scores(job, out), job.weights[active])
        ok = got >= tau
        # Keep the output of the smallest plan reaching the target, and of the top plan (the
        # fallback when nothing does).
        keep = (ok & (probe < found[active])) | ((probe == last) & (found[active] > last))
        sel = active[keep]
        best[sel] = out[keep]
        best_vfe[sel] = got[keep]
        found[active[ok]] = torch.minimum(found[active[ok]], probe[ok])
        hi[active[ok]] = probe[ok] - 1
        lo[active[~ok]] = probe[~ok] + 1
        if predicted is not None:
            # Walking down from a passing plan: stop where the estimate is clearly below target.
            rows = active[ok & (probe > 0)]
            below = predicted[rows, (probe[ok & (probe > 0)] - 1)] < tau - PREDICTION_SLACK
            lo[rows[below]] = hi[rows[below]] + 1
    chosen = found.clamp(max=last)
    return chosen, plan_sequence(job.salient, chosen, top, job.lowest), best, best_vfe
