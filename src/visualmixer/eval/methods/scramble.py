"""``scramble:BLOCK``: keyed block scrambling of the Encryption-then-Compression family."""

from __future__ import annotations

import torch
from torch import nn

from visualmixer.core.imageops import add_batch_axis, full_blocks, with_full_blocks
from visualmixer.eval.methods.base import ModuleMethod, Param, key_seed, os_seed
from visualmixer.eval.methods.registry import register_method

__all__ = ["BlockScramble", "ScrambleMethod"]


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
        self._seed = key_seed(key, "etc-block-scramble") if key is not None else os_seed()
        self._calls = 0

    @property
    def name(self) -> str:
        return f"{self.label}:{self.block}"

    def extra_repr(self) -> str:
        return f"block={self.block}, per_image={self.per_image}"

    def _draw(self, m: int, nb: int, c: int) -> tuple[torch.Tensor, ...]:
        """Block permutation, rotation, flip, negation and channel order for ``m`` scrambles."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self._seed + (self._calls if self.per_image else 0))
        if self.per_image:
            self._calls += 1
        perm = torch.argsort(torch.rand(m, nb, generator=g), dim=1)
        rot = torch.randint(0, 4, (m, nb), generator=g) if self.rotate else torch.zeros(m, nb, dtype=torch.long)
        flip = torch.rand(m, nb, generator=g) < 0.5 if self.rotate else torch.zeros(m, nb, dtype=torch.bool)
        neg = torch.rand(m, nb, generator=g) < 0.5 if self.negate else torch.zeros(m, nb, dtype=torch.bool)
        if self.shuffle_channels and c > 1:
            cperm = torch.argsort(torch.rand(m, nb, c, generator=g), dim=2)
        else:
            cperm = torch.arange(c).expand(m, nb, c)
        return perm, rot, flip, neg, cperm

    def forward(self, images):  # noqa: D102 - documented in the class
        x, added = add_batch_axis(images)
        n, c, h, w = x.shape
        b = self.block
        gh, gw = h // b, w // b
        if gh == 0 or gw == 0:
            return images
        nb = gh * gw
        drawn = self._draw(n if self.per_image else 1, nb, c)
        dev = x.device
        perm, rot, flip, neg, cperm = (t.to(dev).expand(n, *t.shape[1:]) for t in drawn)

        blocks = full_blocks(x, b)
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
        out = with_full_blocks(x, flat.reshape(n, nb, c, b, b))
        return out[0] if added else out


@register_method("scramble")
class ScrambleMethod(ModuleMethod):
    """``scramble:BLOCK`` (default 4): :class:`BlockScramble`, one key for the whole data set.

    The key is ``key`` (or, for experiments, ``seed``), else drawn once from the OS; a ``key``
    passed to :meth:`protect` scrambles that call with it instead.
    """

    params = (Param("block", int, 4),)

    def make_module(self):
        return BlockScramble(self.block, key=self.key if self.key is not None else self.seed)

    def protect(self, images, *, ids=None, key=None):
        module = self.module if key is None else BlockScramble(self.block, key=key)
        return module(images)
