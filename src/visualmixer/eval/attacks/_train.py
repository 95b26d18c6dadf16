"""Minibatch helpers for the learned attacks that are not classifiers (A3's U-Net).

Classifiers (A4, the audit's utility model) train with :func:`visualmixer.train.fit.fit_classifier`.
"""

from __future__ import annotations

import torch

from visualmixer.core.imageops import to_float
from visualmixer.tools.progress import progress


def batches(n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True):
    """Yield index tensors of minibatches over ``range(n)``."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


def float_batch(x: torch.Tensor, device) -> torch.Tensor:
    """uint8/float minibatch -> float32 in [0, 1] on ``device``."""
    return to_float(x.to(device))


def progress_iter(iterable, enabled: bool, desc: str, total: int | None = None):
    """Wrap in :func:`visualmixer.tools.progress.progress` when ``enabled``."""
    return progress(iterable, enabled=enabled, desc=desc, total=total)
