"""The method: plan per-region shuffle levels for a target VFE, obfuscate, restore.

``obfuscate`` picks, per image, the first plan in a fixed sequence whose obfuscated image reaches
the target VFE (weighted by the ORIGINAL image's saliency). The sequence raises a global base level
step by step and, in between, lifts the most salient quarter of the regions one level further::

    plan j:  level(r) = max(lowest(r), min(top, 1 + j // 2 + (j % 2) * salient(r))),   j = 0 .. 2 * top - 2

so more salient regions are never shuffled more coarsely than less salient ones, every region of
more than one pixel is shuffled (at least at level 1, or at its lowest level that moves a pixel:
:attr:`~visualmixer.core.regions.RegionGrid.lowest_levels`), and no region is shuffled finer than the first
plan that reaches the target. :mod:`visualmixer.core.planner` finds that plan (exactly, in one
pass over the ladder, where VFE windows are the regions); this module holds the public API, the
plan format and restore.
"""

from __future__ import annotations

import numbers
import operator
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visualmixer.core import graphs
from visualmixer.core.keyed import GENERATOR, key_words, to_device
from visualmixer.core.keys import ImageId, Key, check_key
from visualmixer.core.parallel import batch_parts, run_parts
from visualmixer.core.permute import random_words, shuffle_image, shuffle_regions, words_needed
from visualmixer.core.planner import (  # noqa: F401  (the private names: tests patch and call them here)
    SALIENT_SHARE,
    _Job,
    _one_pass_plans,
    _pixel_saliency,
    _predict_plan_vfe,
    _salient_regions,
    _search_plans,
    plan_sequence,
)
from visualmixer.core.regions import (
    MAX_REGIONS,
    RegionGrid,
    default_region,
    from_regions,
    region_grid,
    resolve_region,
    to_regions,
)
from visualmixer.core.saliency import is_own_saliency
from visualmixer.core.validation import check_ids, from_batch, is_integer_dtype, to_batch
from visualmixer.core.weighting import SaliencyWeights, check_weights, weigh

__all__ = ["Plans", "ObfuscationResult", "obfuscate", "restore", "plan_sequence", "GENERATOR"]

_PURPOSE = "shuffle"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


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
        """The plans of some images: an index (int, NumPy or 0-d tensor integer) gives one image's
        plans (length 1), a slice, index list or mask several."""
        try:
            i = operator.index(item)
        except TypeError:
            i = None
        if i is not None:
            if not -len(self) <= i < len(self):
                raise IndexError(f"plans index {i} out of range for {len(self)} image(s)")
            item = slice(i, i + 1 if i != -1 else None)
        return Plans(self.levels[item], self.region, self.height, self.width, self.channels,
                     self.channel_order, self.generator)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Plans):
            return NotImplemented
        return self._geometry() == other._geometry() and torch.equal(self.levels, other.levels)

    def __hash__(self) -> int:
        return hash((self._geometry(), self.levels.cpu().numpy().tobytes()))

    def _geometry(self) -> tuple:
        return (self.region, self.height, self.width, self.channels, self.channel_order, self.generator,
                tuple(self.levels.shape))

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
            region, h, w = (_dict_int(data, name, 1, hi) for name, hi in (("region", 256), ("height", None),
                                                                          ("width", None)))
            channels = _dict_int(data, "channels", 1, 3)
            if channels == 2 or not isinstance(data["channel_order"], bool):
                raise ValueError(f"channels must be 1 or 3 and channel_order true or false, got {channels!r} "
                                 f"and {data['channel_order']!r}")
            if not isinstance(data["levels"], list) or not all(isinstance(s, str) for s in data["levels"]):
                raise ValueError("levels must be a list of strings")
            count = -(-h // region) * -(-w // region)  # (checked before the grid of that size is built)
            if count > MAX_REGIONS:
                raise ValueError(f"a {h}x{w} image has {count} regions of side {region}, more than any plans hold "
                                 f"({MAX_REGIONS})")
            if any(len(s) != count for s in data["levels"]):
                raise ValueError(f"each level string must hold {count} digits (one per region of side {region} "
                                 f"of a {h}x{w} image)")
            grid = region_grid(h, w, region)
            bad = set("".join(data["levels"])) - set(_DIGITS[: grid.levels + 1])
            if bad:
                raise ValueError(f"levels hold {sorted(bad)}, not levels of region {region} "
                                 f"(digits 0-{_DIGITS[grid.levels]})")
            rows = [[_DIGITS.index(ch) for ch in s] for s in data["levels"]]
            levels = torch.tensor(rows, dtype=torch.uint8).view(len(rows), grid.rows, grid.cols)
            _plan_levels(levels, grid)
            generator = _check_generator(data.get("generator", 1))
            return cls(levels, region, h, w, channels, data["channel_order"], generator)
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


def _dict_int(data: dict, name: str, lo: int, hi: int | None) -> int:
    """``data[name]``, an int in ``lo .. hi`` (``hi`` None: no upper bound), else ``ValueError``."""
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        allowed = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {allowed}, got {value!r}")
    return value


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


def _check_target(target_vfe) -> float:
    if isinstance(target_vfe, bool) or not isinstance(target_vfe, numbers.Real):
        raise TypeError(f"target_vfe must be a number in [0, 1], got {type(target_vfe).__name__}")
    t = float(target_vfe)
    if not (0.0 <= t <= 1.0):  # also rejects NaN
        raise ValueError(f"target_vfe must be in [0, 1], got {target_vfe!r}")
    return t


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
    check_key(key)
    ids = check_ids(ids, n)
    subkeys = key.subkeys(ids, _PURPOSE)
    if len(set(subkeys)) != n:  # (the subkeys: equal exactly when the encoded ids are)
        warnings.warn(
            "ids repeat within the batch: images with the same id get the same permutation, so "
            "whoever holds one of their originals can undo the other's shuffle; give every image "
            "its own id",
            UserWarning,
            stacklevel=3,
        )
    return subkeys


def _validate(images, key, ids, target_vfe, region, channel_order, seed):
    """Check the arguments of :func:`obfuscate`: ``(batch, info, target, region side, subkeys)``."""
    batch, info = to_batch(images)
    tau = _check_target(target_vfe)
    if not isinstance(channel_order, bool):
        raise TypeError(f"channel_order must be a bool, got {type(channel_order).__name__}")
    n, c, h, w = batch.shape
    r = resolve_region(region, h, w)
    return batch, info, tau, r, _subkeys(key, ids, seed, n)


def _own_map(saliency) -> bool:
    """Whether the saliency is the library's own, per image (a map finite and >= 0 by
    construction, or weights made from one): the batch may be cut into parts."""
    return is_own_saliency(saliency) or isinstance(saliency, SaliencyWeights)


def _make_job(batch, info, words, tau: float, r: int, channel_order: bool, saliency) -> _Job:
    """Saliency, window weights, salient regions and regions of a checked batch with key words
    ``words`` ((N, 8) int32 on its device)."""
    h, w = batch.shape[2:]
    grid = region_grid(h, w, r)
    given = saliency if isinstance(saliency, SaliencyWeights) else weigh(batch, r, saliency)
    return _Job(batch, info, tau, grid, default_region(h, w), channel_order, given.weights, given.salient,
                to_regions(batch, grid), words)


def _prepare(images, key, ids, target_vfe, region, channel_order, saliency, seed) -> _Job:
    """Validate the arguments of :func:`obfuscate` and derive the whole batch's job."""
    batch, info, tau, r, subkeys = _validate(images, key, ids, target_vfe, region, channel_order, seed)
    return _make_job(batch, info, key_words(subkeys, batch.device), tau, r, channel_order, saliency)


def _run_job(job: _Job):
    """Plan and shuffle one job: ``(images (N, C, H, W), levels (N, regions), vfe (N,))``."""
    plan = _one_pass_plans if _ONE_PASS and job.window == job.grid.region else _search_plans
    _, levels, out, got = plan(job)
    return from_regions(out, job.grid), levels, got


def _one_pass_grid(grid: RegionGrid) -> bool:
    """Whether the one-pass planner, free of host synchronisations, plans this grid: whole
    regions that are the VFE windows (what a CUDA graph can record)."""
    return _ONE_PASS and grid.full and grid.region == default_region(grid.height, grid.width)


def _joined(parts: list[tuple]) -> tuple:
    """The per-part results of :func:`~visualmixer.core.parallel.run_parts` joined along the batch."""
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))


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
        permutation, on CPU and GPU — so give every image its own id (ids repeated within a
        call warn).
    target_vfe : float
        Requested VFE in ``[0, 1]``. Images that cannot reach it (e.g. flat ones) are shuffled at
        the top level everywhere; their achieved VFE tells.
    region : int, optional
        Region side ``R`` (default: 16 if the shorter side >= 128, 8 if >= 48, else 4).
    channel_order : bool
        Also permute the channel order in each region (scrambles region mean colours).
    saliency : None | "uniform" | callable | torch.Tensor | SaliencyWeights
        Machine-side weighting; default spectral-residual saliency of the original. Weights
        made beforehand by :func:`~visualmixer.core.weighting.saliency_weights` from the same
        images (one row per image) skip that step and give the same bytes.
    seed : int, optional
        Experiments only: derive a NOT secret key from an int (warns); ids default to ``0..N-1``.

    Returns
    -------
    ObfuscationResult
        ``.images`` (same kind/shape/dtype/device), ``.plans`` (:class:`Plans`), ``.vfe`` (N,).

    Notes
    -----
    On the CPU with more than one torch thread, a batch of large images (at least 32,768 values
    each) is cut into one part per thread and the parts run at once, with one intra-op thread
    each (:mod:`visualmixer.core.parallel`); the result is the same bytes. On a CUDA device the
    call's kernels are recorded once per shape and options as a CUDA graph and replayed
    (:mod:`visualmixer.core.graphs`; the same bytes; ``VISUALMIXER_CUDA_GRAPHS=0`` switches it off).

    Examples
    --------
    >>> import torch, visualmixer as vm
    >>> key = vm.Key.generate()
    >>> x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    >>> res = vm.obfuscate(x, key=key, ids=["a", "b"], target_vfe=0.5)
    >>> bool((vm.restore(res.images, res.plans, key=key, ids=["a", "b"]) == x).all())
    True
    """
    batch, info, tau, r, subkeys = _validate(images, key, ids, target_vfe, region, channel_order, seed)
    words = key_words(subkeys, batch.device)
    n, c, h, w = batch.shape
    # precomputed weights travel with their images (graph inputs, parts of the batch)
    given = (check_weights(saliency, batch, r),) if isinstance(saliency, SaliencyWeights) else ()
    inputs = (batch, words) + tuple(t for g in given for t in (g.weights, g.salient))

    def job(x, k, *pre):
        sal = SaliencyWeights(*pre, r, h, w) if pre else saliency
        return _run_job(_make_job(x, info, k, tau, r, channel_order, sal))

    grid = region_grid(h, w, r)
    if graphs.applies(batch) and _own_map(saliency) and _one_pass_grid(grid):  # one CUDA graph, same kernels
        options = (tau, r, channel_order, "given" if given else saliency)
        out, levels, got = graphs.run("obfuscate", options, job, *inputs)
    else:
        # Images are independent: parts of a CPU batch run on torch's threads at once (same bytes).
        # A caller's saliency map or function is applied to the whole batch, in one part.
        parts = batch_parts(batch) if _own_map(saliency) else [(0, batch.shape[0])]
        out, levels, got = _joined(run_parts(lambda a, b: job(*(t[a:b] for t in inputs)), parts))
    levels = levels.to(torch.uint8).cpu().view(n, grid.rows, grid.cols)
    plans = Plans(levels, grid.region, h, w, c, channel_order, GENERATOR)
    return ObfuscationResult(from_batch(out, info), plans, got.cpu())


def _plan_levels(levels: torch.Tensor, grid) -> tuple[int, ...] | None:
    """The ladder levels plan level maps use, after checking that they are integer levels
    ``0 .. grid.levels`` (a region at another value would be left out of the restored image).

    Read on the host, where plans keep them (NumPy: nothing dispatched, no synchronisation): an
    accelerator's restore then computes those levels only (at 224², τ 0.5, typically one of
    five). ``None`` (every level) for maps on a device, which are not read back."""
    if not is_integer_dtype(levels.dtype):
        raise TypeError(f"plans.levels must be an integer tensor, got {levels.dtype}")
    if levels.device.type != "cpu":
        return None
    values = levels.numpy().ravel()
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > grid.levels:
        raise ValueError(f"plans.levels must be ladder levels 0..{grid.levels} for {grid.region}-px regions; "
                         f"got values from {low} to {high}")
    return tuple(int(v) for v in np.flatnonzero(np.bincount(values)))


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
    check_key(key)
    n, c, h, w = batch.shape
    if len(plans) != n or (plans.height, plans.width, plans.channels) != (h, w, c):
        raise ValueError(
            f"plans describe {len(plans)} image(s) of {plans.channels}x{plans.height}x{plans.width}; "
            f"images are {n} of {c}x{h}x{w}"
        )
    grid = plans.grid
    if tuple(plans.levels.shape[1:]) != (grid.rows, grid.cols):
        raise ValueError(f"plan level maps must be {grid.rows}x{grid.cols} for this size and region")
    present = _plan_levels(plans.levels, grid)
    generator = _check_generator(plans.generator)
    subkeys = key.subkeys(check_ids(ids, n), _PURPOSE)
    levels = to_device(plans.levels, batch.device).to(torch.int64).reshape(n, -1)  # (any strides)
    if generator == 1:  # plans made before generator 2: NumPy Philox streams
        words = random_words(subkeys, words_needed(grid, c, int(levels.max())))
    else:
        words = key_words(subkeys, batch.device)
    # (one part: restore is about one gather, and parts measured slower: see core.parallel)
    if generator == 2 and grid.full:  # full regions: no layout copies
        def unshuffle(x, w, lv):
            return (shuffle_image(x, w, lv, grid, plans.channel_order, inverse=True, present=present),)

        if graphs.applies(batch):  # the same kernels, launched as one CUDA graph
            (out,) = graphs.run("restore", (grid.region, plans.channel_order, present), unshuffle, batch, words,
                                levels)
        else:
            (out,) = unshuffle(batch, words, levels)
        return from_batch(out, info)
    regions = shuffle_regions(to_regions(batch, grid), words, levels, grid, plans.channel_order,
                              inverse=True, generator=generator)
    return from_batch(from_regions(regions, grid), info)
