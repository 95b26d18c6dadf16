"""Shared minibatch-training helpers for the learned attacks (A3, A4)."""

from __future__ import annotations

import torch

from visualmixer.core.imageops import to_float


def batches(n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True):
    """Yield index tensors of minibatches over ``range(n)``."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


def float_batch(x: torch.Tensor, device) -> torch.Tensor:
    """uint8/float minibatch -> float32 in [0, 1] on ``device``."""
    return to_float(x.to(device))


def progress_iter(iterable, enabled: bool, desc: str, total: int | None = None):
    """Wrap with tqdm when ``enabled`` (tqdm is a core dependency)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)
