"""Image classifiers trained from scratch (no pretrained weights exist offline).

All models take float images (N, C, H, W) with C = ``in_channels`` and return logits
(N, num_classes). They work for any H, W >= 16 or so (small images such as 28² or 32²).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from visualmixer.core.regions import check_region_side

__all__ = ["MODELS", "MIN_SIDE", "check_image_size", "SHARED_NORMALISATION", "RegionSortedCNN", "SmallCNN",
           "build_model", "canonical_channels",
           "resnet18_small", "shufflenet_small"]


class SmallCNN(nn.Module):
    """Two 3×3 conv layers (32, 64 channels, each + ReLU + 2×2 max-pool), a 128-unit hidden layer.

    About 0.42 M parameters for 10 classes; the "2-conv CNN" of our first calibration runs. An adaptive pool to
    7×7 before the classifier makes it size-agnostic (a no-op for 28² inputs).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class RegionSortedCNN(nn.Module):
    """A classifier that cannot see how pixels were shuffled inside a region.

    Each ``region`` × ``region`` block of the image (the protection's region grid, from the top
    left; a remainder at the right or bottom edge is dropped) becomes the sorted list of its
    ``C·region²`` values, so any permutation inside a region — VisualMixer's in-region shuffle at
    every ladder level, and its channel shuffle when all channels share one normalisation — gives
    the model the same input. A small CNN then runs on the grid of regions: a 1×1 layer (64),
    two 3×3 layers (128), an adaptive pool to 7×7, a 128-unit hidden layer. About 1.0 M
    parameters at 28², 4-px regions. What it loses is the layout inside each region, which the
    shuffle has removed anyway; trained on protected images it pays nothing for the shuffle.

    Parameters
    ----------
    in_channels, num_classes : int
    region : int
        Side of the protection's regions (4 for 28² images by default, see
        :func:`visualmixer.core.regions.default_region`).
    channels : {"pooled", "each"}
        ``"pooled"`` (default): sort a region's values of all channels together. ``"each"``: sort
        each channel's values apart and put the region's channels in a canonical order
        (lexicographic on their sorted values), which keeps what the shuffle keeps — each
        channel's values, not which colour they were — and loses only that: on colour images it
        reads more than ``"pooled"`` (what the ``"region-sorted-channels"`` model is). The same as
        ``"pooled"`` on grey images.

    Examples
    --------
    >>> import torch
    >>> net = RegionSortedCNN(1, 10, region=4).eval()
    >>> x = torch.rand(2, 1, 28, 28)
    >>> shuffled = x.reshape(2, 1, 7, 4, 7, 4).flip(3).reshape(2, 1, 28, 28)  # rows flipped inside regions
    >>> torch.equal(net(x), net(shuffled))
    True
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, region: int = 4, *,
                 channels: str = "pooled") -> None:
        super().__init__()
        if channels not in ("pooled", "each"):
            raise ValueError(f"channels must be 'pooled' or 'each', got {channels!r}")
        self.region, self.channels = check_region_side(region), channels
        self.grid = nn.Sequential(
            nn.Conv2d(in_channels * region * region, 64, 1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 7 * 7, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.grid_features(x))

    def grid_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier reads: the region grid's features ``(B, 128, 7, 7)`` (``self.grid``'s output)."""
        n, c, h, w = x.shape
        r = self.region
        rows, cols = h // r, w // r
        if rows == 0 or cols == 0:
            raise ValueError(f"images of {h}x{w} are smaller than one {r}-px region")
        blocks = x[:, :, : rows * r, : cols * r].reshape(n, c, rows, r, cols, r).permute(0, 2, 4, 1, 3, 5)
        if self.channels == "each" and c > 1:
            values = canonical_channels(blocks.reshape(n, rows, cols, c, r * r).sort(dim=-1).values)
        else:
            values = blocks.reshape(n, rows, cols, c * r * r).sort(dim=-1).values
        return self.grid(values.reshape(n, rows, cols, c * r * r).permute(0, 3, 1, 2))


def canonical_channels(values: torch.Tensor) -> torch.Tensor:
    """Order the channel axis (-2) of ``values`` ``(..., C, L)`` lexicographically by each channel's ``L``
    values, so that any permutation of the channels gives the same tensor.

    Batched (no loop over regions): channel ``c``'s rank is the number of channels that are
    lexicographically smaller, plus the equal ones before it (equal rows are identical, so where
    they go does not change the result). ``O(C² · L)`` per row, for the few channels of an image.
    """
    row, other = values.unsqueeze(-2), values.unsqueeze(-3)  # (..., C, 1, L) and (..., 1, C, L): rows c and e
    differs = row != other  # compared, not subtracted: no rounding (a flushed difference would read as equal)
    first = differs.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first place rows c and e differ (0 if equal)
    larger = (row > other).gather(-1, first).squeeze(-1)  # (..., C, C): row c after row e
    equal = ~differs.any(dim=-1)
    cc = values.shape[-2]
    earlier = torch.ones(cc, cc, dtype=torch.bool, device=values.device).triu(1)  # [e, c]: e before c
    rank = larger.sum(dim=-1) + (equal & earlier.T).sum(dim=-1)  # smaller rows, and equal rows before
    return torch.empty_like(values).scatter_(-2, rank.unsqueeze(-1).expand_as(values), values)


def resnet18_small(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision ResNet-18 adapted to small images (CIFAR style).

    The 7×7 stride-2 stem and the max-pool are replaced by one 3×3 stride-1 convolution, so a
    32² input reaches the last stage at 4². About 11.2 M parameters.
    """
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def shufflenet_small(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision ShuffleNetV2 ×1.0 adapted to small images.

    The stride-2 3×3 stem becomes stride 1 and its max-pool is removed (total stride 8 instead
    of 32). About 1.26 M parameters for 10 classes.
    """
    import torchvision

    model = torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    out = model.conv1[0].out_channels
    model.conv1[0] = nn.Conv2d(in_channels, out, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


#: Model constructors by command-line name: ``fn(in_channels, num_classes, region) -> nn.Module``,
#: where ``region`` is the protection's region side (only region-aware models use it).
MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "cnn": lambda in_channels, num_classes, region: SmallCNN(in_channels, num_classes),
    "resnet18": lambda in_channels, num_classes, region: resnet18_small(in_channels, num_classes),
    "shufflenet": lambda in_channels, num_classes, region: shufflenet_small(in_channels, num_classes),
    "region-sorted": lambda in_channels, num_classes, region: RegionSortedCNN(in_channels, num_classes, region),
    "region-sorted-channels": lambda in_channels, num_classes, region: RegionSortedCNN(
        in_channels, num_classes, region, channels="each"),
}

#: Models that read each region's values apart from their channel order, so they are blind to the
#: channel-order shuffle only when every channel is normalised alike: the trainer gives them one
#: mean and standard deviation for all channels (:func:`visualmixer.train.fit.channel_normaliser`).
SHARED_NORMALISATION = frozenset({"region-sorted-channels"})


#: The least image side each model takes where it is more than 1 (the small CNN pools twice by 2).
MIN_SIDE = {"cnn": 4}


def check_image_size(name: str, height: int, width: int) -> None:
    """``ValueError`` when ``height x width`` images are too small for model ``name``."""
    least = MIN_SIDE.get(name, 1)
    if min(height, width) < least:
        raise ValueError(f"model={name!r} needs images of at least {least} x {least} pixels, got {height} x {width}: "
                         f"give image_size={least} or more, or another model")


def build_model(name: str, in_channels: int, num_classes: int, *, region: int = 4) -> nn.Module:
    """Build a model by name (one of :data:`MODELS`), randomly initialised.

    ``region`` is the side of the protection's regions, used by ``"region-sorted"`` and
    ``"region-sorted-channels"`` (:class:`RegionSortedCNN`); the other models ignore it.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    return MODELS[name](in_channels, num_classes, region)
