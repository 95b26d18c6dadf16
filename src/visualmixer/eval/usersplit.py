"""Splitting a user's images for the audit (:mod:`visualmixer.eval.userdata` reads them).

:func:`split_user_data` splits the pool the way the built-in sets are split
(:func:`visualmixer.eval.report.data.load_audit_data`): disjoint owner's training images, victims
and attacker's own images, here stratified by class; :func:`fit_split_sizes` gives split sizes that
fit a set's class counts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from visualmixer.eval.userdata import UserImages

__all__ = ["MIN_PER_CLASS", "fit_split_sizes", "split_user_data"]

#: The fewest images a class may have: one each for training, victims and the attacker.
MIN_PER_CLASS = 3
#: shares of each class that :func:`fit_split_sizes` gives the victims, the attacker and the owner
#: (5 % spare for unreadable files)
_VICTIM_SHARE, _ATTACKER_SHARE, _TRAIN_SHARE = 0.15, 0.35, 0.45


def fit_split_sizes(counts: list[int] | dict, *, n_train: int, n_victims: int, n_attacker: int) -> tuple[int, int, int]:
    """Split sizes that fit a set with ``counts`` images per class, at most the ones asked for.

    Every class gives about 15 % of its images (at least one) to the victims, 35 % (at least one)
    to the attacker and 45 % to the owner's training images, judged by the smallest class (the
    5 % left over absorb unreadable files, which a listing still counts).
    """
    counts = list(counts.values()) if isinstance(counts, dict) else list(counts)
    k, m = len(counts), min(counts)
    if m < MIN_PER_CLASS:
        raise ValueError(f"every class needs at least {MIN_PER_CLASS} images (one each for training, victims "
                         f"and attacker); the smallest has {m}")
    v = max(1, int(m * _VICTIM_SHARE))
    a = max(1, int(m * _ATTACKER_SHARE))
    t = max(1, min(m - v - a, int(m * _TRAIN_SHARE)))
    return min(n_train, k * t), min(n_victims, k * v), min(n_attacker, k * a)


def split_user_data(data: UserImages, *, n_train: int, n_victims: int, n_attacker: int, seed: int = 0) -> dict:
    """Disjoint owner's training images, victims and attacker's images, stratified by class.

    Each class gives ``ceil(n / classes)`` images to each part (seeded shuffle), then each part
    is trimmed at random to exactly ``n`` images.

    Returns
    -------
    dict
        ``{"train": (x, y), "victims": (x, y), "attacker": (x, y)}``.

    Raises
    ------
    ValueError
        When a class has fewer images than the split needs; the message gives both numbers.
    """
    k = len(data.classes)
    quota = {"victims": math.ceil(n_victims / k), "attacker": math.ceil(n_attacker / k),
             "train": math.ceil(n_train / k)}
    need = sum(quota.values())
    counts = data.counts()
    short = {c: n for c, n in counts.items() if n < need}
    if short:
        shown = ", ".join(f"{c!r} has {n}" for c, n in list(short.items())[:5])
        unread = "".join(f" ({n.split(': ', 1)[-1]})" for n in data.notes if "unreadable" in n)  # counted out
        shown += unread.replace("(skipped", "(readable images only: skipped", 1)
        raise ValueError(
            f"{data.source}: too few images per class: the split sizes ({n_train} training, {n_victims} victims, "
            f"{n_attacker} attacker images over {k} classes) need {need} images per class ({quota['train']} "
            f"training + {quota['victims']} victims + {quota['attacker']} attacker), but {shown}"
            f"{' ...' if len(short) > 5 else ''}; pass smaller n_train=N, n_victims=N, n_attacker=N or add images"
        )
    g = torch.Generator().manual_seed(int(seed))
    parts: dict[str, list] = {p: [] for p in quota}
    for c in range(k):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for p, q in quota.items():
            parts[p].append(idx[start : start + q])
            start += q
    out = {}
    for p, n in (("train", n_train), ("victims", n_victims), ("attacker", n_attacker)):
        idx = torch.cat(parts[p])
        idx = idx[torch.randperm(len(idx), generator=g)[:n]].sort().values
        out[p] = (data.images[idx], data.labels[idx])
    return out
