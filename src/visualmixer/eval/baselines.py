"""The field's other image-privacy methods, with the same call shape as ``VisualMixer`` (SPEC §8.3).

Every baseline is a ``torch.nn.Module`` taking ``(N, C, H, W)`` or ``(C, H, W)`` images, uint8 or
floating in [0, 1], and returning the same shape and dtype (float results are clipped to [0, 1]
and rounded for uint8). Randomness is fresh per call from the OS unless ``seed`` is given (a seed is
for experiments only: it is not secret).

============================  ==================================================================
``GaussianNoise(sigma)``      x + N(0, σ²) per pixel — the "DP-style" image-noise baseline
``DPPix(block, epsilon, m)``  pixelise, then Laplace noise of scale m / (block² · ε) (Fan 2018)
``GaussianBlur(sigma)``       separable Gaussian blur, replicate padding
``Pixelate(block)``           block means, upsampled (edge strips are blocks too)
``BlockScramble(block, key)`` keyed EtC scrambling: block permutation, rotation/flip,
                              negative–positive and channel shuffle per block (Chuman/Kiya)
``InstaHide(k=4)``            mix each image with k−1 others of the batch (random convex weights),
                              then flip the sign of every pixel at random (Huang et al. 2020)
``dpsgd_train(...)``          DP-SGD on clean images with Opacus (protects the model, not pixels)
============================  ==================================================================

:func:`make_method` builds any of them, or VisualMixer, from a ``"name:param"`` spec string as used
by ``visualmixer audit --methods``.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from visualmixer.core.imageops import add_batch_axis, from_float, region_mean, to_float
from visualmixer.train.dpsgd import dpsgd_train  # re-export: DP-SGD is training, its home is train/

__all__ = [
    "Baseline",
    "Identity",
    "GaussianNoise",
    "DPPix",
    "GaussianBlur",
    "Pixelate",
    "BlockScramble",
    "InstaHide",
    "dpsgd_train",
    "make_method",
    "METHOD_NAMES",
]


def _generator(seed: int | None, device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
    else:
        g.manual_seed(int(seed))
    return g


class Baseline(nn.Module):
    """Base class: handles shapes, dtype round trips and the random generator.

    Subclasses implement ``_apply(x, g)`` on float32 ``(N, C, H, W)`` in [0, 1] and return float
    images (they are clipped to [0, 1] and cast back here).
    """

    #: short name used in reports
    label = "baseline"

    def __init__(self, seed: int | None = None):
        super().__init__()
        self.seed = seed
        self._calls = 0

    def _next_generator(self, device) -> torch.Generator:
        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        return _generator(seed, device)

    def forward(self, images):  # noqa: D102 - documented in the class
        x, added = add_batch_axis(images)
        out = from_float(self._apply(to_float(x), self._next_generator(x.device)), x)
        return out[0] if added else out

    def _apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._params().items())

    def _params(self) -> dict:
        return {}

    @property
    def name(self) -> str:
        """``label:param`` string, as in reports."""
        p = self._params()
        return self.label + (":" + ",".join(str(v) for v in p.values()) if p else "")


class Identity(Baseline):
    """No protection (the reference row of every table)."""

    label = "clean"

    def _apply(self, x, g):
        return x


class GaussianNoise(Baseline):
    """Additive Gaussian pixel noise of standard deviation ``sigma`` (in [0, 1] units), clipped.

    Parameters
    ----------
    sigma : float
        Noise standard deviation, >= 0 (0.1 = 25.5 grey levels).
    seed : int, optional
        Fixed seed (experiments only); default fresh OS randomness per call.
    """

    label = "noise"

    def __init__(self, sigma: float = 0.1, seed: int | None = None):
        super().__init__(seed)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def _params(self):
        return {"sigma": self.sigma}

    def _apply(self, x, g):
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + self.sigma * noise


def _laplace(shape, scale: float, g: torch.Generator, device, dtype) -> torch.Tensor:
    u = torch.rand(shape, generator=g, device=device, dtype=torch.float64) - 0.5
    u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)
    return (-scale * torch.sign(u) * torch.log1p(-2 * u.abs())).to(dtype)


class DPPix(Baseline):
    """DP-Pix (Fan, 2018): pixelise with ``block``-pixel cells, then add Laplace noise per cell.

    The noise scale is ``m / (block² · epsilon)`` in [0, 1] units, i.e. ε-differential privacy for
    images that differ in at most ``m`` pixels (sensitivity of a cell mean: ``m / block²``).

    Parameters
    ----------
    block : int
        Cell side in pixels.
    epsilon : float
        Privacy budget, > 0 (smaller = more noise).
    m : int
        Number of pixels a neighbouring image may differ in (default 16, as in the paper).
    """

    label = "dppix"

    def __init__(self, block: int = 4, epsilon: float = 1.0, m: int = 16, seed: int | None = None):
        super().__init__(seed)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.block, self.epsilon, self.m = int(block), float(epsilon), int(m)

    def _params(self):
        return {"epsilon": self.epsilon, "block": self.block}

    def _apply(self, x, g):
        b = self.block
        n, c, h, w = x.shape
        cells = (n, c, math.ceil(h / b), math.ceil(w / b))
        scale = self.m / (b * b * self.epsilon)
        noise = _laplace(cells, scale, g, x.device, x.dtype)
        noise = noise.repeat_interleave(b, 2).repeat_interleave(b, 3)[:, :, :h, :w]
        return region_mean(x, b) + noise


def _gaussian_kernel1d(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float ``(N, C, H, W)`` with replicate padding (any image size)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, x.device, x.dtype)
    r = (k.numel() - 1) // 2
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


class GaussianBlur(Baseline):
    """Gaussian blur of standard deviation ``sigma`` pixels (deterministic).

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0; the kernel spans ±3σ.
    """

    label = "blur"

    def __init__(self, sigma: float = 2.0):
        super().__init__(None)
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def _params(self):
        return {"sigma": self.sigma}

    def _apply(self, x, g):
        return gaussian_blur(x, self.sigma)


class Pixelate(Baseline):
    """Pixelation: replace each ``block``×``block`` cell (edge strips included) by its mean.

    Parameters
    ----------
    block : int
        Cell side in pixels, >= 1.
    """

    label = "pixelate"

    def __init__(self, block: int = 4):
        super().__init__(None)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = int(block)

    def _params(self):
        return {"block": self.block}

    def _apply(self, x, g):
        return region_mean(x, self.block)


def _key_seed(key, purpose: str) -> int:
    """A 63-bit generator seed derived from a key (``visualmixer.Key``, bytes or str)."""
    if hasattr(key, "subkey"):
        material = key.subkey("baseline", purpose=purpose)
    elif isinstance(key, (bytes, bytearray)):
        material = hashlib.sha256(bytes(key) + purpose.encode()).digest()
    elif isinstance(key, str):
        material = hashlib.sha256(key.encode() + purpose.encode()).digest()
    elif isinstance(key, int):
        material = hashlib.sha256(key.to_bytes(16, "little", signed=True) + purpose.encode()).digest()
    else:
        raise TypeError(f"key must be a visualmixer.Key, bytes, str or int, got {type(key).__name__}")
    return int.from_bytes(material[:8], "little") & ((1 << 63) - 1)


class BlockScramble(nn.Module):
    """Keyed block scrambling of the Encryption-then-Compression family (Chuman, Sirichotedumrong, Kiya).

    The image is cut into ``block``×``block`` blocks (the part of the image that ``block`` does not
    divide is left unchanged); then, all from the key:

    1. the blocks are permuted;
    2. each block is rotated by 0/90/180/270° and optionally flipped horizontally;
    3. each block is inverted (negative–positive, ``x → 1 − x``) with probability 1/2;
    4. the colour channels of each block are permuted (colour images).

    With ``per_image=False`` (the EtC "learnable encryption" setting, where a model is trained on
    images all scrambled with one key) every image in every call gets the same scramble; with
    ``per_image=True`` each image of each call gets a fresh one. All steps are exact permutations or
    negations, so dtype and values are preserved bit for bit (uint8 negation is ``255 − x``).

    Parameters
    ----------
    block : int
        Block side in pixels (EtC uses 4, 8 or 16).
    key : visualmixer.Key, bytes, str or int, optional
        Secret key; default fresh OS randomness (drawn once, at construction).
    per_image : bool
        A different scramble for each image and call (default False: one key-wide scramble).
    rotate, negate, shuffle_channels : bool
        Switch individual steps off.
    """

    label = "scramble"

    def __init__(
        self,
        block: int = 4,
        key=None,
        *,
        per_image: bool = False,
        rotate: bool = True,
        negate: bool = True,
        shuffle_channels: bool = True,
    ):
        super().__init__()
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = int(block)
        self.per_image = bool(per_image)
        self.rotate, self.negate, self.shuffle_channels = rotate, negate, shuffle_channels
        self._seed = (
            _key_seed(key, "etc-block-scramble")
            if key is not None
            else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
        )
        self._calls = 0

    @property
    def name(self) -> str:
        return f"{self.label}:{self.block}"

    def extra_repr(self) -> str:
        return f"block={self.block}, per_image={self.per_image}"

    def forward(self, images):  # noqa: D102 - documented in the class
        x, added = add_batch_axis(images)
        n, c, h, w = x.shape
        b = self.block
        gh, gw = h // b, w // b
        if gh == 0 or gw == 0:
            return images
        nb = gh * gw
        g = torch.Generator(device="cpu")
        g.manual_seed(self._seed + (self._calls if self.per_image else 0))
        if self.per_image:
            self._calls += 1
        m = n if self.per_image else 1
        perm = torch.argsort(torch.rand(m, nb, generator=g), dim=1)
        rot = torch.randint(0, 4, (m, nb), generator=g) if self.rotate else torch.zeros(m, nb, dtype=torch.long)
        flip = torch.rand(m, nb, generator=g) < 0.5 if self.rotate else torch.zeros(m, nb, dtype=torch.bool)
        neg = torch.rand(m, nb, generator=g) < 0.5 if self.negate else torch.zeros(m, nb, dtype=torch.bool)
        if self.shuffle_channels and c > 1:
            cperm = torch.argsort(torch.rand(m, nb, c, generator=g), dim=2)
        else:
            cperm = torch.arange(c).expand(m, nb, c)
        dev = x.device
        perm, rot, flip, neg, cperm = (t.to(dev).expand(n, *t.shape[1:]) for t in (perm, rot, flip, neg, cperm))

        core = x[:, :, : gh * b, : gw * b]
        blocks = core.reshape(n, c, gh, b, gw, b).permute(0, 2, 4, 1, 3, 5).reshape(n, nb, c, b, b)
        # 1. block permutation
        blocks = blocks.gather(1, perm.view(n, nb, 1, 1, 1).expand_as(blocks))
        # 2. rotation by k*90 degrees then optional flip, batched via index maps
        idx = torch.arange(b * b, device=dev).view(b, b)
        maps = torch.stack([torch.rot90(idx, k, dims=(0, 1)) for k in range(4)])  # (4, b, b)
        maps = torch.cat([maps, maps.flip(-1)])  # (8, b, b): 4 rotations, then flipped
        which = rot + 4 * flip.long()
        flat = blocks.reshape(n, nb, c, b * b)
        sel = maps.reshape(8, b * b)[which]  # (n, nb, b*b)
        flat = flat.gather(3, sel.unsqueeze(2).expand_as(flat))
        # 3. negative-positive
        maxval = 255 if x.dtype == torch.uint8 else 1.0
        flat = torch.where(neg.view(n, nb, 1, 1), maxval - flat, flat)
        # 4. channel shuffle
        flat = flat.gather(2, cperm.reshape(n, nb, c, 1).expand_as(flat))
        blocks = flat.reshape(n, gh, gw, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * b, gw * b)
        out = x.clone()
        out[:, :, : gh * b, : gw * b] = blocks.to(x.dtype)
        return out[0] if added else out


class InstaHide(Baseline):
    """InstaHide (Huang, Song, Li, Arora 2020), "inside-dataset" version, with k images per mix.

    Each image x_i (mapped to [−1, 1]) is mixed with ``k − 1`` other images of the same batch with
    random convex weights λ (Dirichlet(1); the own image's weight is the largest, as InstaHide
    requires it to dominate), then every pixel's sign is flipped at random; the result is mapped
    back to [0, 1]. Weights and partners of the last call are kept in ``last_mix`` (the labels of a
    mix are the same convex combination of one-hot labels).

    Parameters
    ----------
    k : int
        Images per mix (default 4, as in the InstaHide challenge).
    seed : int, optional
        Fixed seed (experiments only; Carlini et al. also broke InstaHide by regenerating its masks
        from a guessable PRNG state).
    """

    label = "instahide"

    def __init__(self, k: int = 4, seed: int | None = None):
        super().__init__(seed)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.last_mix: dict | None = None

    def _params(self):
        return {"k": self.k}

    def _apply(self, x, g):
        n = x.shape[0]
        dev = x.device
        # partners: column 0 is the image itself, the others random other images (with replacement)
        partners = torch.randint(0, n, (n, self.k), generator=g, device=dev)
        partners[:, 0] = torch.arange(n, device=dev)
        if n > 1 and self.k > 1:
            # avoid mixing an image with itself when there are others
            same = partners[:, 1:] == partners[:, :1]
            partners[:, 1:] = torch.where(same, (partners[:, 1:] + 1) % n, partners[:, 1:])
        lam = -torch.log(torch.rand(n, self.k, generator=g, device=dev).clamp_min(1e-12))
        lam = lam / lam.sum(dim=1, keepdim=True)
        lam, _ = lam.sort(dim=1, descending=True)  # own image gets the largest weight
        signed = x * 2 - 1
        mixed = (signed[partners] * lam.view(n, self.k, 1, 1, 1).to(x.dtype)).sum(dim=1)
        signs = torch.randint(0, 2, x.shape, generator=g, device=dev).to(x.dtype) * 2 - 1
        self.last_mix = {"partners": partners.cpu(), "weights": lam.cpu()}
        return (mixed * signs + 1) / 2


# --------------------------------------------------------------------------------------------
# method specs: "name:param" -> transform
# --------------------------------------------------------------------------------------------

METHOD_NAMES = ("clean", "visualmixer", "noise", "dppix", "blur", "pixelate", "scramble", "instahide")


def make_method(spec: str, *, seed: int | None = None, key=None) -> nn.Module:
    """Build a transform from a ``"name:param"`` spec, e.g. ``"noise:0.1"`` or ``"visualmixer:0.5"``.

    =================  =======================================================
    ``clean``          no protection
    ``visualmixer:τ``  VisualMixer with target VFE τ (fresh OS randomness)
    ``noise:σ``        :class:`GaussianNoise`
    ``dppix:ε``        :class:`DPPix` with 4-px cells (``dppix:ε/b`` sets the cell)
    ``blur:σ``         :class:`GaussianBlur`
    ``pixelate:b``     :class:`Pixelate`
    ``scramble:b``     :class:`BlockScramble` (one key for the data set)
    ``instahide:k``    :class:`InstaHide`
    =================  =======================================================
    """
    name, _, param = spec.partition(":")
    name = name.strip().lower()
    param = param.strip()
    try:
        if name == "clean":
            return Identity()
        if name == "visualmixer":
            from visualmixer.data.transforms import VisualMixer

            tau = float(param) if param else 0.5
            return VisualMixer(target_vfe=tau)
        if name == "noise":
            return GaussianNoise(float(param or 0.1), seed=seed)
        if name == "dppix":
            eps, _, blk = param.partition("/")
            return DPPix(block=int(blk or 4), epsilon=float(eps or 1.0), seed=seed)
        if name == "blur":
            return GaussianBlur(float(param or 2.0))
        if name == "pixelate":
            return Pixelate(int(param or 4))
        if name == "scramble":
            return BlockScramble(int(param or 4), key=key if key is not None else seed)
        if name == "instahide":
            return InstaHide(int(param or 4), seed=seed)
    except ValueError as exc:
        raise ValueError(f"bad method spec {spec!r}: {exc}") from exc
    raise ValueError(f"unknown method {name!r} in {spec!r}; choose from {', '.join(METHOD_NAMES)}")
