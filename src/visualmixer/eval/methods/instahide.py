"""``instahide:K``: InstaHide, each image mixed with K−1 others of the set, then random sign flips."""

from __future__ import annotations

import torch

from visualmixer.eval.methods.base import ModuleMethod, Param
from visualmixer.eval.methods.registry import register_method
from visualmixer.eval.methods.transform import Baseline

__all__ = ["InstaHide", "InstaHideMethod"]


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


@register_method("instahide")
class InstaHideMethod(ModuleMethod):
    """``instahide:K`` (default 4): :class:`InstaHide`; mixes inside a call, so a set is one call."""

    params = (Param("k", int, 4),)
    mixes_batch = True

    def make_module(self):
        return InstaHide(self.k, seed=self.seed)
