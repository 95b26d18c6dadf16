"""The method: plan per-region shuffle levels for a target VFE, obfuscate, restore (SPEC §5).

``obfuscate`` picks, per image, the first plan in a fixed sequence whose obfuscated image reaches
the target VFE (weighted by the ORIGINAL image's saliency). The sequence raises a global base level
step by step and, in between, lifts the most salient quarter of the regions one level further::

    plan j:  level(r) = min(top, 1 + j // 2 + (j % 2) * salient(r)),   j = 0 .. 2 * top - 2

so more salient regions are never shuffled more coarsely than less salient ones, every region of
more than one pixel is shuffled at least at level 1, and no region is shuffled finer than the first
plan that reaches the target. The search is a per-image bisection over ``j``, batched: each step
is one gather and one VFE pass over the images still searching.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visualmixer.core.imageops import region_mean_grid
from visualmixer.core.keyed import GENERATOR, host_checks, key_words, to_device
from visualmixer.core.keys import ImageId, Key
from visualmixer.core.permute import (
    from_regions,
    level_sources,
    random_words,
    region_windows,
    shuffle_image,
    shuffle_level,
    shuffle_regions,
    to_regions,
    words_needed,
)
from visualmixer.core.regions import RegionGrid, default_region, region_grid, tile_ladder
from visualmixer.core.saliency import spectral_residual
from visualmixer.core.validation import BatchInfo, from_batch, to_batch
from visualmixer.core.vfe import (
    exact_square_sum,
    integral_ratio,
    scores_from_windows,
    weighted_vfe,
    window_norm,
    window_scores,
    window_weights,
)

__all__ = ["Plans", "ObfuscationResult", "obfuscate", "restore", "plan_sequence", "GENERATOR"]

_PURPOSE = "shuffle"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Share of regions (by saliency, per image) that get one level more than the base level.
SALIENT_SHARE = 0.25


@dataclass(frozen=True)
class Plans:
    """Per-image shuffle plans: the ladder level of every region, and the geometry they refer to.

    A plan is not secret by itself (it says how finely each region is shuffled) but, with the key,
    it is what :func:`restore` needs; keep it with the key, not with the shared data.

    Attributes
    ----------
    levels : torch.Tensor
        ``(N, rows, cols)`` uint8, on the CPU.
    region, height, width, channels : int
    channel_order : bool
    generator : int
        The permutation generator that made the shuffle (1: NumPy Philox streams, used before
        2026-11-27; 2: the keyed on-device generator of :mod:`visualmixer.core.keyed`).
        :func:`restore` reads both.
    """

    levels: torch.Tensor
    region: int
    height: int
    width: int
    channels: int
    channel_order: bool
    generator: int = GENERATOR

    def __len__(self) -> int:
        return int(self.levels.shape[0])

    def __getitem__(self, item) -> Plans:
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        return Plans(self.levels[item], self.region, self.height, self.width, self.channels,
                     self.channel_order, self.generator)

    @property
    def grid(self) -> RegionGrid:
        return region_grid(self.height, self.width, self.region)

    def to_dict(self) -> dict:
        """JSON-safe form: one string of base-36 level digits per image, row-major.

        ``"generator"`` names the permutation generator; dicts without it (written before it
        existed) are generator 1.
        """
        return {
            "version": 1,
            "generator": self.generator,
            "region": self.region,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "channel_order": self.channel_order,
            "levels": ["".join(_DIGITS[v] for v in row.tolist()) for row in self.levels.flatten(1)],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plans:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on malformed input."""
        try:
            if data.get("version") != 1:
                raise ValueError(f"unsupported plan version {data.get('version')!r}")
            region, h, w = int(data["region"]), int(data["height"]), int(data["width"])
            grid = region_grid(h, w, region)
            rows = [[_DIGITS.index(ch) for ch in s] for s in data["levels"]]
            if any(len(r) != grid.count for r in rows):
                raise ValueError(f"each level string must hold {grid.count} digits")
            levels = torch.tensor(rows, dtype=torch.uint8).view(len(rows), grid.rows, grid.cols)
            if bool((levels > grid.levels).any()):
                raise ValueError(f"levels above the ladder's top ({grid.levels})")
            generator = _check_generator(data.get("generator", 1))
            return cls(levels, region, h, w, int(data["channels"]), bool(data["channel_order"]), generator)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a valid plan dict: {exc}") from None

    @staticmethod
    def cat(plans: Sequence[Plans]) -> Plans:
        """Concatenate plans of images with the same geometry."""
        if not plans:
            raise ValueError("Plans.cat needs at least one Plans")
        first = plans[0]
        geometry = (first.region, first.height, first.width, first.channels, first.channel_order,
                    first.generator)
        for p in plans[1:]:
            if (p.region, p.height, p.width, p.channels, p.channel_order, p.generator) != geometry:
                raise ValueError("Plans.cat: all plans must share region, size, channels, channel_order "
                                 "and generator")
        return Plans(torch.cat([p.levels for p in plans]), *geometry)


def _check_generator(generator) -> int:
    if isinstance(generator, bool) or generator not in (1, 2):
        raise ValueError(
            f"plans made by permutation generator {generator!r}: this release of visualmixer reads "
            "generators 1 (before 2026-11-27) and 2; restore them with the release that made them"
        )
    return int(generator)


@dataclass
class ObfuscationResult:
    """What :func:`obfuscate` returns.

    Attributes
    ----------
    images
        Obfuscated images: same kind, shape, dtype and device as the input.
    plans : Plans
        Per-image level maps; with the key and ids they restore the originals exactly.
    vfe : torch.Tensor
        ``(N,)`` float64 achieved VFE of each obfuscated image, weighted by the original's saliency.
    """

    images: Any
    plans: Plans
    vfe: torch.Tensor


def plan_sequence(salient: torch.Tensor, j: torch.Tensor, top: int) -> torch.Tensor:
    """Levels ``(N, regions)`` of plan ``j`` (per image) given the salient-region mask."""
    base = 1 + torch.div(j, 2, rounding_mode="floor")
    extra = (j % 2).unsqueeze(1) * salient.long()
    return (base.unsqueeze(1) + extra).clamp(max=top)


def _check_target(target_vfe) -> float:
    if isinstance(target_vfe, bool) or not isinstance(target_vfe, (int, float)):
        raise TypeError(f"target_vfe must be a number in [0, 1], got {type(target_vfe).__name__}")
    t = float(target_vfe)
    if not (0.0 <= t <= 1.0):  # also rejects NaN
        raise ValueError(f"target_vfe must be in [0, 1], got {target_vfe!r}")
    return t


def _check_region(region, h: int, w: int) -> int:
    if region is None:
        return default_region(h, w)
    if isinstance(region, bool) or not isinstance(region, int) or region < 1:
        raise ValueError(f"region must be a positive int or None (size default), got {region!r}")
    if region > 256:
        raise ValueError(f"region must be at most 256 pixels, got {region}")
    return region


def _check_ids(ids, n: int) -> list:
    """One id per image: ints (also numpy/torch integer scalars or a 1-D integer tensor), strs
    or tuples of them. A single str is one id, not a sequence of characters."""
    if ids is None:
        raise ValueError("ids are required when a key is given (one int/str/tuple id per image)")
    if isinstance(ids, (str, bytes, int)):
        ids = [ids]
    elif isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.ndim != 1:
            raise TypeError(f"ids given as a tensor must be 1-D integers, got {ids.dtype} of shape {tuple(ids.shape)}")
        ids = ids.tolist()
    else:
        ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} images; give exactly one id per image")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str, tuple)):
            raise TypeError(f"each id must be an int, str or tuple of them, got {type(i).__name__}")
    return ids


def _subkeys(key, ids, seed, n: int) -> list[bytes]:
    if seed is not None:
        if key is not None:
            raise ValueError("give either key= or seed=, not both")
        warnings.warn(
            "seed= derives a key from a small integer: the result is NOT secret and anyone can "
            "restore it. Use key=visualmixer.Key.generate() for real data.",
            UserWarning,
            stacklevel=3,
        )
        key = Key.from_seed(seed)
        if ids is None:
            ids = list(range(n))
    if key is None:
        return [secrets.token_bytes(32) for _ in range(n)]  # fresh OS randomness: not restorable
    if not isinstance(key, Key):
        raise TypeError(f"key must be a visualmixer.Key, got {type(key).__name__}")
    return key.subkeys(_check_ids(ids, n), _PURPOSE)


def _pixel_saliency(batch: torch.Tensor, saliency, window: int) -> torch.Tensor:
    """Per-pixel saliency ``(N, 1, H, W)`` float64 for the planner's bands and weights."""
    n, _, h, w = batch.shape
    if saliency is None:
        smap = spectral_residual(batch)
    elif isinstance(saliency, str):
        if saliency != "uniform":
            raise ValueError(f"saliency must be None, 'uniform', a callable or a tensor; got {saliency!r}")
        smap = torch.ones((n, 1, h, w), device=batch.device)
    elif callable(saliency) and not isinstance(saliency, torch.Tensor):
        smap = saliency(batch)
    else:
        smap = saliency
    if not isinstance(smap, torch.Tensor):
        raise TypeError(f"saliency must give a tensor, got {type(smap).__name__}")
    smap = smap.to(device=batch.device, dtype=torch.float64)
    nh, nw = -(-h // window), -(-w // window)
    if smap.shape == (n, nh, nw) and (nh, nw) != (h, w):  # per window: spread over its pixels
        smap = smap.repeat_interleave(window, 1).repeat_interleave(window, 2)[:, :h, :w]
    if smap.ndim == 3:
        smap = smap.unsqueeze(1)
    if smap.shape != (n, 1, h, w):
        raise ValueError(
            f"saliency map has shape {tuple(smap.shape)}; expected ({n}, 1, {h}, {w}), "
            f"({n}, {h}, {w}) or per window ({n}, {nh}, {nw})"
        )
    return smap


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


def _prepare(images, key, ids, target_vfe, region, channel_order, saliency, seed) -> _Job:
    """Validate the arguments of :func:`obfuscate` and derive saliency, weights and regions."""
    batch, info = to_batch(images)
    tau = _check_target(target_vfe)
    if not isinstance(channel_order, bool):
        raise TypeError(f"channel_order must be a bool, got {type(channel_order).__name__}")
    n, c, h, w = batch.shape
    r = _check_region(region, h, w)
    window = default_region(h, w)  # a function of the size only, so VFE stays comparable
    grid = region_grid(h, w, r)
    subkeys = _subkeys(key, ids, seed, n)
    smap = _pixel_saliency(batch, saliency, window)
    own_map = saliency is None or isinstance(saliency, str)  # finite and >= 0 by construction
    weights = window_weights(batch, smap, window, trusted=own_map)
    return _Job(batch, info, tau, grid, window, channel_order, weights, _salient_regions(smap, grid),
                to_regions(batch, grid), key_words(subkeys, batch.device))


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


def _level_scores(job: _Job, level: int, sums) -> tuple[torch.Tensor, torch.Tensor]:
    """Every region shuffled at one ``level``, and the per-channel score of every region then.

    Returns ``(out, scores)``: ``(N, regions, C, R, R)`` and ``(N, C, rows, cols)`` float64,
    exactly the scores :func:`_scores` gives for ``out`` (windows are the regions here). With
    ``sums`` (:func:`_source_sums`: uint8 images, full regions) only the pixel pairs across tile
    seams are read from ``out``: pairs inside tiles and every region's value sums are the
    source's, moved with the channel order.
    """
    n, m, c = job.regions.shape[:3]
    grid = job.grid
    if grid.kind_sizes[0] != grid.kind_sizes[3]:  # edge regions: score the image's windows
        out = _shuffle(job, torch.full((n, m), level, dtype=torch.int64, device=job.batch.device))
        return out, _scores(job, out)
    r = grid.region
    t = tile_ladder(r)[level]
    sources = level_sources(job.words, grid, c, level, job.channel_order)
    out = shuffle_level(job.regions, sources, t)
    if sums is None:  # score the contiguous region layout (same arithmetic as the image's windows)
        scores = scores_from_windows(out.view(n, m, c, 1, r, r), c * r, r)  # (N, m, C, 1)
        return out, scores.view(n, m, c).permute(0, 2, 1).reshape(n, c, grid.rows, grid.cols)
    g_all, total, sumsq, col, row = sums
    inside = g_all - col[..., t - 1 :: t].sum(-1, dtype=torch.int32) - row[..., t - 1 :: t].sum(-1, dtype=torch.int32)
    nt = sources.shape[1] // c
    sigma = torch.div(sources[:, ::nt], nt, rounding_mode="floor").view(n, m, c).long()  # source channel
    inside, total, sumsq = (v.gather(2, sigma) for v in (inside, total, sumsq))
    g = inside + _seam_sum(out, t, -1) + _seam_sum(out, t, -2) if t < r else inside
    ratio = integral_ratio(g.double(), total.double(), sumsq.double(), float(r * r))
    ratio = ratio.permute(0, 2, 1).reshape(n, c, grid.rows, grid.cols)
    return out, ratio * window_norm(grid.height, grid.width, r, job.batch.device)


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


def _source_sums(job: _Job):
    """Exact integer sums of the unshuffled regions, by channel, for :func:`_level_scores`:
    ``(G, total, sum of squares)`` ``(N, m, C)`` and the squared pair differences by column and
    by row offset ``(N, m, C, R - 1)``, all int32. ``None`` unless the images are uint8, the
    regions full and the VFE windows (and at most 90 px: int16 row sums, int32 totals)."""
    grid = job.grid
    full = grid.kind_sizes[0] == grid.kind_sizes[3]
    if job.batch.dtype != torch.uint8 or not full or job.window != grid.region or grid.region > 90:
        return None
    if grid.region >= 16:  # long rows: int16 work (measured 1.5-2x faster at 16 px, slower at 4)
        x = job.regions.to(torch.int16)
        col = exact_square_sum(x[..., 1:] - x[..., :-1], -2)  # (N, m, C, R-1) by column offset
        row = exact_square_sum(x[..., 1:, :] - x[..., :-1, :], -1)
        total = x.sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
        sumsq = exact_square_sum(x, -1).sum(-1, dtype=torch.int32)
    else:
        x = job.regions
        col = (torch.maximum(x[..., 1:], x[..., :-1]) - torch.minimum(x[..., 1:], x[..., :-1])).to(torch.int32)
        col = col.mul_(col).sum(dim=-2, dtype=torch.int32)
        row = (torch.maximum(x[..., 1:, :], x[..., :-1, :]) - torch.minimum(x[..., 1:, :], x[..., :-1, :]))
        row = row.to(torch.int32)
        row = row.mul_(row).sum(dim=-1, dtype=torch.int32)
        total = x.sum(dim=(-2, -1), dtype=torch.int32)
        x = x.to(torch.int32)
        sumsq = x.mul_(x).sum(dim=(-2, -1), dtype=torch.int32)
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
    sums = _source_sums(job)
    outs, tables = [], []
    dev = job.batch.device
    known = 0
    for level in range(top + 1) if top == 0 else range(1, top + 1):
        out, scores = _level_scores(job, level, sums)
        outs.append(out)
        tables.append(scores.flatten(2))
        known = last + 1 if level == top else 2 * level - 1  # plans 0 .. known-1 use levels <= level
        if host_checks(dev) and level < top:
            table = torch.stack([torch.zeros_like(tables[0])] + tables, dim=1)  # level 0: never used
            plans = torch.arange(known, device=dev)
            lv = plan_sequence(job.salient.repeat_interleave(known, 0), plans.repeat(n), top).view(n, known, -1)
            if bool((_plan_vfe(job, table, lv) >= job.tau).any(dim=1).all()):
                break
    first_level = 0 if top == 0 else 1
    table = torch.stack(([] if top == 0 else [torch.zeros_like(tables[0])]) + tables, dim=1)
    plans = torch.arange(known, device=dev)
    lv = plan_sequence(job.salient.repeat_interleave(known, 0), plans.repeat(n), top).view(n, known, -1)
    got = _plan_vfe(job, table, lv)
    chosen = _first_at_least(got, job.tau)
    levels = lv.gather(1, chosen.view(n, 1, 1).expand(n, 1, lv.shape[2])).squeeze(1)
    out = _select_levels(outs, levels - first_level)
    return chosen, levels, out, got.gather(1, chosen.view(n, 1)).squeeze(1)


def _select_levels(outs: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Region ``r`` of image ``i`` from ``outs[index[i, r]]`` (all ``(N, m, C, R, R)``)."""
    if len(outs) == 1:
        return outs[0]
    if host_checks(index.device):  # skip selects nobody needs
        used = [i for i in range(len(outs)) if bool((index == i).any())]
        if len(used) == 1:
            return outs[used[0]]
    n, m = index.shape
    shape = outs[0].shape
    wide = [_as_words(o) for o in outs]  # select whole regions as wide integers
    out = wide[0]
    for i, o in enumerate(wide[1:], start=1):  # <= top cheap selects
        out = torch.where((index == i).view(n, m, 1), o, out)
    return out.view(torch.uint8).view(outs[0].dtype).view(shape)


def _as_words(regions: torch.Tensor) -> torch.Tensor:
    """``(N, m, ...)`` viewed as ``(N, m, k)`` of the widest integer dividing a region's bytes."""
    n, m = regions.shape[:2]
    nbytes = regions[0, 0].numel() * regions.element_size()
    chunk = max(g for g in (1, 2, 4, 8) if nbytes % g == 0)
    dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[chunk]
    return regions.contiguous().view(n, m, -1).view(torch.uint8).view(dtype)


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
    if job.window == grid.region and grid.kind_sizes[0] == grid.kind_sizes[3] and top > 0:
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
        out = _shuffle(job, plan_sequence(job.salient[active], probe, top), rows)
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
    return chosen, plan_sequence(job.salient, chosen, top), best, best_vfe


#: Use the exact one-pass planner where VFE windows are the regions (tests switch it off to
#: compare with the bisection search).
_ONE_PASS = True


def obfuscate(
    images,
    *,
    key: Key | None = None,
    ids: Sequence[ImageId] | None = None,
    target_vfe: float = 0.5,
    region: int | None = None,
    channel_order: bool = True,
    saliency=None,
    seed: int | None = None,
) -> ObfuscationResult:
    """Shuffle pixels inside regions until each image reaches ``target_vfe``.

    Parameters
    ----------
    images : torch.Tensor | numpy.ndarray | PIL.Image.Image
        ``(N, C, H, W)`` or ``(C, H, W)`` tensor, ``C`` in {1, 3}, uint8 or floating (values are
        only permuted, so no range is assumed), any ``H, W >= 1``, on any device. A numpy
        ``(H, W[, C])`` array or a PIL image is accepted for one image (alpha is dropped).
    key : Key, optional
        Master key. Without one, fresh OS randomness is used and the result cannot be restored.
    ids : sequence of int | str | tuple, optional
        One id per image (required with ``key``); the same key and id always give the same
        permutation, on CPU and GPU.
    target_vfe : float
        Requested VFE in ``[0, 1]``. Images that cannot reach it (e.g. flat ones) are shuffled at
        the top level everywhere; their achieved VFE tells.
    region : int, optional
        Region side ``R`` (default: 16 if the shorter side >= 128, 8 if >= 48, else 4).
    channel_order : bool
        Also permute the channel order in each region (scrambles region mean colours).
    saliency : None | "uniform" | callable | torch.Tensor
        Machine-side weighting; default spectral-residual saliency of the original.
    seed : int, optional
        Experiments only: derive a NOT secret key from an int (warns); ids default to ``0..N-1``.

    Returns
    -------
    ObfuscationResult
        ``.images`` (same kind/shape/dtype/device), ``.plans`` (:class:`Plans`), ``.vfe`` (N,).

    Examples
    --------
    >>> import torch, visualmixer as vm
    >>> key = vm.Key.generate()
    >>> x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    >>> res = vm.obfuscate(x, key=key, ids=["a", "b"], target_vfe=0.5)
    >>> bool((vm.restore(res.images, res.plans, key=key, ids=["a", "b"]) == x).all())
    True
    """
    job = _prepare(images, key, ids, target_vfe, region, channel_order, saliency, seed)
    plan = _one_pass_plans if _ONE_PASS and job.window == job.grid.region else _search_plans
    _, levels, out, got = plan(job)
    n, c, h, w = job.batch.shape
    grid = job.grid
    levels = levels.to(torch.uint8).cpu().view(n, grid.rows, grid.cols)
    plans = Plans(levels, grid.region, h, w, c, job.channel_order, GENERATOR)
    return ObfuscationResult(from_batch(from_regions(out, grid), job.info), plans, got.cpu())


def restore(images, plans: Plans, *, key: Key, ids: Sequence[ImageId]):
    """Invert :func:`obfuscate` exactly, given the key, the ids and the plans.

    A wrong key or id cannot be detected (the output is then a differently shuffled image, not
    an error); plans whose geometry does not match the images raise ``ValueError``.

    Parameters
    ----------
    images : torch.Tensor | numpy.ndarray | PIL.Image.Image
        Obfuscated images, as returned in ``ObfuscationResult.images``.
    plans : Plans
    key : Key
    ids : sequence of int | str | tuple

    Returns
    -------
    The original images, bit-identical, in the input's kind, dtype and device.
    """
    batch, info = to_batch(images)
    if not isinstance(plans, Plans):
        raise TypeError(f"plans must be visualmixer.Plans, got {type(plans).__name__}")
    if not isinstance(key, Key):
        raise TypeError(f"key must be a visualmixer.Key, got {type(key).__name__}")
    n, c, h, w = batch.shape
    if len(plans) != n or (plans.height, plans.width, plans.channels) != (h, w, c):
        raise ValueError(
            f"plans describe {len(plans)} image(s) of {plans.channels}x{plans.height}x{plans.width}; "
            f"images are {n} of {c}x{h}x{w}"
        )
    grid = plans.grid
    if tuple(plans.levels.shape[1:]) != (grid.rows, grid.cols):
        raise ValueError(f"plan level maps must be {grid.rows}x{grid.cols} for this size and region")
    generator = _check_generator(plans.generator)
    subkeys = key.subkeys(_check_ids(ids, n), _PURPOSE)
    levels = to_device(plans.levels, batch.device).to(torch.int64).view(n, -1)
    if generator == 1:  # plans made before generator 2: NumPy Philox streams
        words = random_words(subkeys, words_needed(grid, c, int(levels.max())))
    else:
        words = key_words(subkeys, batch.device)
    if generator == 2 and grid.kind_sizes[0] == grid.kind_sizes[3]:  # full regions: no layout copies
        return from_batch(shuffle_image(batch, words, levels, grid, plans.channel_order, inverse=True), info)
    regions = shuffle_regions(to_regions(batch, grid), words, levels, grid, plans.channel_order,
                              inverse=True, generator=generator)
    return from_batch(from_regions(regions, grid), info)
