"""A5 step 3: recover VisualMixer's per-region channel order from region colours.

A region's channel order is one of 3! = 6 permutations; each region's channel means (which no
in-region shuffle changes) are scored under a :class:`ChannelOrderPrior` learned from the
attacker's OWN clean colour images (per region position and brightness bin, a Gaussian on the
region's mean chroma), plus chroma continuity across region borders (iterated conditional modes
on the region grid), and optionally the public fact that VisualMixer's earlier sampler never left
a region's order unchanged. :func:`visualmixer.eval.attacks.a5_jigsaw.realign_and_solve` runs it
after the jigsaw when given ``channel_prior=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch
import torch.nn.functional as F

from visualmixer.core.imageops import add_batch_axis, region_mean_grid, to_float
from visualmixer.core.regions import default_region

__all__ = ["ChannelOrderPrior", "fit_channel_order_prior", "recover_channel_order", "NATURAL_MEAN_RGB"]

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
    means = region_mean_grid(x.double(), region).permute(0, 2, 3, 1)  # (N, rows, cols, 3) region colours
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
    * with ``scheme=True``, VisualMixer's earlier, biased sampler (:func:`_scheme_log_prior`); on
      its outputs more orders came right (0.64 vs 0.59 on the built-in photos), SSIM fell (0.69 vs
      0.70); channel orders are now uniform, so leave it off for current outputs;
    * with ``smooth > 0``, chroma continuity with the four neighbouring regions across their
      shared borders (a truncated quadratic in units of the batch's own grey border
      differences), optimised by checkerboard sweeps of iterated conditional modes, batched.

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
    if decision not in ("map", "channels"):
        raise ValueError(f"decision must be 'map' or 'channels', got {decision!r}")
    rows, cols = -(-h // region), -(-w // region)
    if c == 1:
        out = x.clone()
        orders = torch.zeros(n, rows, cols, dtype=torch.long, device=x.device)
    else:
        if prior is None:
            prior = ChannelOrderPrior.generic(region, rows, cols)
        elif prior.region != region:
            raise ValueError(f"prior fitted for region {prior.region}, images use region {region}")
        orders = _choose_orders(to_float(x), region, prior, scheme=scheme, smooth=smooth, cap=cap, sweeps=sweeps,
                                decision=decision)
        idx = _INVERSE.to(x.device)[orders]  # (N, rows, cols, 3): source channel of each output channel
        idx = idx.permute(0, 3, 1, 2).repeat_interleave(region, 2).repeat_interleave(region, 3)
        out = x.gather(1, idx[:, :, :h, :w].contiguous())
    if added:
        out = out[0]
    return (out, orders) if return_orders else out


def _choose_orders(xf, region, prior, *, scheme, smooth, cap, sweeps, decision) -> torch.Tensor:
    """The chosen order of every region, int64 ``(N, rows, cols)`` (see :func:`recover_channel_order`)."""
    dev = xf.device
    rows, cols = prior.rows, prior.cols
    means = region_mean_grid(xf.double(), region).permute(0, 2, 3, 1)  # (N, rows, cols, 3)
    energy = -prior.log_likelihood(means)  # (N, rows, cols, 6)
    if scheme:
        energy = energy - _scheme_log_prior().to(dev)
    orders, total = energy.argmin(dim=-1), energy
    if smooth > 0 and (rows > 1 or cols > 1):
        orders, total = _icm(xf, region, energy, orders, smooth=smooth, cap=cap, sweeps=sweeps)
    if decision == "channels":
        # minimum Bayes risk: maximise the expected number of channels put back in place
        # under each region's (local, conditional) posterior over the 6 orders
        post = torch.softmax(-total, dim=-1)
        agree = (_SIGMAS[:, None, :] == _SIGMAS[None, :, :]).sum(-1).to(post)  # (6, 6)
        orders = (post @ agree.to(dev)).argmax(dim=-1)
    return orders


def _icm(xf, region, energy, orders, *, smooth, cap, sweeps) -> tuple[torch.Tensor, torch.Tensor]:
    """Checkerboard iterated conditional modes with border continuity; ``(orders, local energy)``."""
    rows, cols = energy.shape[1:3]
    horiz, vert, scale = _border_costs(xf, region)
    # truncated quadratic: a real colour edge costs at most ``cap`` whatever the orders,
    # so continuity cannot make the step recolour one side of an edge to match the other
    horiz = (horiz / scale).clamp_max(cap) * smooth
    vert = (vert / scale).clamp_max(cap) * smooth
    ii = torch.arange(rows, device=xf.device).view(-1, 1)
    jj = torch.arange(cols, device=xf.device).view(1, -1)
    colour = (ii + jj) % 2
    for _ in range(max(0, int(sweeps))):
        for parity in (0, 1):
            total = _local_energy(energy, horiz, vert, orders)
            orders = torch.where(colour == parity, total.argmin(dim=-1), orders)
    return orders, _local_energy(energy, horiz, vert, orders)
