"""The in-memory labelled image set every loader returns (:class:`ImageSet`) and its helpers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["ImageSet", "to_channels", "check_split"]

_SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageSet:
    """An in-memory labelled image set.

    Attributes
    ----------
    images : torch.Tensor
        uint8, shape (N, C, H, W), C in {1, 3}.
    labels : torch.Tensor
        int64, shape (N,), values in ``range(len(classes))``.
    classes : tuple of str
        Class names, indexed by label.
    name : str
        Name of the set and split, for logs.
    files : tuple of str
        Each image's file, relative to the set's folder (POSIX separators), for sets read from
        files one image per file (``imagefolder``); empty for the others. Files released beside
        the images (soft labels) are joined on it.

    Notes
    -----
    Iterating yields ``images`` then ``labels``, so ``x, y = imageset`` works.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = field(default=())
    name: str = ""
    files: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor with C in {{1, 3}}, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"labels must be int64 of shape ({x.shape[0]},), got {y.dtype} "
                             f"{tuple(y.shape)}")
        if self.files and len(self.files) != x.shape[0]:
            raise ValueError(f"files must name every image: {len(self.files)} names for {x.shape[0]} images")

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``, or ``max(label) + 1`` if no names)."""
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """A deterministic random subset of ``n`` images (all if ``n`` is None or >= N).

        The kept images stay in their original order.
        """
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset size must be >= 1, got {n}")
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        files = tuple(self.files[i] for i in idx.tolist()) if self.files else ()
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, files)

    def with_channels(self, channels: int | None) -> ImageSet:
        """The same set with 1 or 3 channels (None: unchanged)."""
        return ImageSet(to_channels(self.images, channels), self.labels, self.classes, self.name, self.files)


def to_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) images to ``channels`` channels.

    1 → 3 replicates the grey channel; 3 → 1 takes BT.601 luma, rounded; None leaves them.
    """
    if channels is None or images.shape[1] == channels:
        return images
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    luma = (images.float() * w).sum(1, keepdim=True)
    return luma.round_().clamp_(0, 255).to(torch.uint8)


def check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    return split


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX)
