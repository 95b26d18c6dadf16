"""Image classification sets read from the user's files: CIFAR python batches and ImageFolder trees.

Both return an :class:`~visualmixer.data.imageset.ImageSet`; :func:`visualmixer.data.datasets.load_dataset`
dispatches to them by name (``cifar10``, ``cifar100``, ``imagefolder:PATH``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from visualmixer.core.optional import require
from visualmixer.data.imageset import ImageSet, check_split, to_channels

__all__ = ["load_cifar", "load_image_folder"]


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def load_cifar(
    split: str = "train",
    *,
    root: str | os.PathLike,
    num_classes: int = 10,
    channels: int | None = 3,
    download: bool = False,
) -> ImageSet:
    """Load CIFAR-10 or CIFAR-100 from the python pickle batches.

    Parameters
    ----------
    split : {"train", "test"}
    root : path-like
        A directory holding ``cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``,
        ``test_batch``, ``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``),
        or that directory itself.
    num_classes : {10, 100}
        CIFAR-100 uses the fine labels.
    channels : {3, 1, None}, default 3
    download : bool, default False
        Download through torchvision into ``root`` if missing (needs a network).

    Returns
    -------
    ImageSet
        uint8 images (N, C, 32, 32), int64 labels, class names.
    """
    check_split(split)
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    root = Path(root)
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if num_classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_name, names_key, label_key = "batches.meta", "label_names", "labels"
    else:
        files = [split]
        meta_name, names_key, label_key = "meta", "fine_label_names", "fine_labels"
    base = root / sub if (root / sub).is_dir() else root
    if not all((base / f).is_file() for f in files) and download:
        torchvision = require("torchvision", extra="data", purpose="download=True")
        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        cls(str(root), train=split == "train", download=True)
        base = root / sub
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-{num_classes} {split} batches {missing} not found in {base} (expected the "
            f"python version, directory {sub}/ from the official tarball); pass download=True "
            "on a machine with a network"
        )
    xs, ys = [], []
    for f in files:
        d = _unpickle(base / f)
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{base / f}: 'data' must be (N, 3072) uint8, got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
        if len(ys[-1]) != len(xs[-1]):
            raise ValueError(f"{base / f}: {len(xs[-1])} images but {len(ys[-1])} labels")
    classes: tuple[str, ...] = ()
    if (base / meta_name).is_file():
        classes = tuple(_unpickle(base / meta_name).get(names_key, ()))
    if not classes:
        classes = tuple(str(i) for i in range(num_classes))
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys))
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"CIFAR-{num_classes} labels out of range 0..{num_classes - 1}")
    return ImageSet(to_channels(x, channels), y, classes, f"cifar{num_classes}/{split}")


# ---------------------------------------------------------------------------------------------
# ImageFolder


def load_image_folder(
    root: str | os.PathLike,
    split: str = "train",
    *,
    size: int | Sequence[int] | None = None,
    channels: int | None = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageSet:
    """Load a ``torchvision.datasets.ImageFolder`` tree into memory.

    Parameters
    ----------
    root : path-like
        ``root/<class>/<image files>``; or ``root/train/<class>/...`` with ``root/test/...`` (or
        ``root/val/...``), which are then used as the splits. Files are decoded as the tools read
        them (:func:`visualmixer.tools.imageio.load_image`: EXIF orientation applied, 16-bit grey
        scaled to 8 bits, alpha dropped), then converted to ``channels``.
    split : {"train", "test"}
    size : int or (int, int), optional
        Resize every image to ``size`` (square) or ``(height, width)``; required when the images
        differ in size.
    channels : {3, 1}, default 3
    test_fraction : float, default 0.2
        Without split sub-directories, this share of each class (seeded) forms the test split;
        0 puts every image in the train split (the test split is then empty and refused).
    seed : int, default 0

    Returns
    -------
    ImageSet
        uint8 images (N, C, H, W), int64 labels, the class names (sorted directory names) and
        each image's file relative to its split's folder (``ImageSet.files``).
    """
    from PIL import Image

    from visualmixer.tools.imageio import load_image, pillow_error_limit, tensor_to_pil

    torchvision = require("torchvision", extra="data", purpose="imagefolder data sets")
    check_split(split)
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not allowed: give 1 (grey) or 3 (RGB)")
    if size is not None:
        sides = (size, size) if not isinstance(size, Sequence) else tuple(size)
        if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides):
            raise ValueError(f"size={size!r} is not allowed: give a side >= 1 or (height, width)")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    split_dirs = {"train": root / "train", "test": None}
    for cand in ("test", "val"):
        if (root / cand).is_dir():
            split_dirs["test"] = root / cand
            break
    has_splits = split_dirs["train"].is_dir() and split_dirs["test"] is not None
    folder_root = Path(split_dirs[split] if has_splits else root)
    folder = torchvision.datasets.ImageFolder(str(folder_root))
    samples = folder.samples
    if not has_splits:
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        targets = np.array([t for _, t in samples])
        rng = np.random.default_rng(seed)
        keep = []
        for c in range(len(folder.classes)):
            idx = np.flatnonzero(targets == c)
            idx = idx[rng.permutation(len(idx))]
            n_test = int(round(len(idx) * test_fraction))
            keep.extend(idx[:n_test] if split == "test" else idx[n_test:])
        samples = [samples[i] for i in sorted(keep)]
    if not samples:
        raise ValueError(f"no images for split {split!r} in {root}")
    if isinstance(size, int):
        size = (size, size)
    mode = "L" if channels == 1 else "RGB"
    arrays, unreadable = [], []
    for path, _ in samples:
        try:  # decoded as the tools read files (EXIF orientation applied, 16-bit scaled, alpha dropped)
            im = tensor_to_pil(load_image(path, max_pixels=pillow_error_limit()).pixels).convert(mode)
            if size is not None:
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.uint8))
        except (OSError, ValueError) as exc:  # (ImageReadError is a ValueError)
            unreadable.append(f"{path} ({type(exc).__name__}: {exc})")
    if unreadable:  # all of them at once, so that one pass fixes the folder
        raise ValueError(f"{len(unreadable)} image(s) in {root} cannot be read: " + "; ".join(unreadable[:5])
                         + (" ..." if len(unreadable) > 5 else "") + ": remove or repair them")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"images in {root} differ in size ({sorted(shapes)[:3]} ...); pass size=N "
            "to resize them"
        )
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([t for _, t in samples], dtype=torch.int64)
    files = tuple(Path(path).relative_to(folder_root).as_posix() for path, _ in samples)
    return ImageSet(x, y, tuple(folder.classes), f"imagefolder:{root}/{split}", files)


# ---------------------------------------------------------------------------------------------
