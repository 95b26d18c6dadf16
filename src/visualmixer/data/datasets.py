"""In-memory image classification sets for training on obfuscated data.

Every loader returns an :class:`ImageSet`: ``images`` is a uint8 tensor (N, C, H, W) with
C in {1, 3}, ``labels`` an int64 tensor (N,), ``classes`` the class names. An ``ImageSet``
unpacks as ``images, labels = load_fashion_mnist("train")``.

Sets
----
``fashion-mnist``
    Fashion-MNIST (Xiao et al. 2017, MIT licence), 60k train / 10k test, 28×28 grey, read from
    the IDX files (``.gz`` or plain) in a user directory or in the Debian package path
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``).
    ``download=True`` fetches it through torchvision on machines with a network.
``photos``
    A small, deterministic, real colour classification set cut from the photographs that ship
    inside installed packages (no download): one class per source photo, train and test crops
    from disjoint areas of each photo; see :func:`load_photos` and :data:`PHOTO_SOURCES` for the
    photos and their licences.
``tinted-fm``
    Fashion-MNIST garments tinted with random colours over crops of the packaged photos, 32×32
    colour, ten classes: a colour set whose label is the shape (:mod:`visualmixer.data.tinted`).
``cifar10`` / ``cifar100``
    The CIFAR python pickle batches (``cifar-10-batches-py`` / ``cifar-100-python``) in a user
    directory; ``download=True`` fetches them through torchvision.
``imagefolder:PATH``
    A ``torchvision.datasets.ImageFolder`` tree (``PATH/<class>/<image>``, or ``PATH/train/...`` and
    ``PATH/test/...`` or ``PATH/val/...``), decoded into memory, optionally resized.

Grey images can be replicated to three channels (``channels=3``, as the published code did for
MNIST); colour images can be reduced to luma (``channels=1``, ITU-R BT.601 weights).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from visualmixer.core.optional import require
from visualmixer.data.filesets import load_cifar, load_image_folder
from visualmixer.data.imageset import ImageSet, check_split, to_channels
from visualmixer.data.samples import PHOTO_SOURCES, photo_array

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "PHOTO_SOURCES",
    "ImageSet",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_photos",
    "read_idx",
]

DATASET_NAMES = ("fashion-mnist", "photos", "tinted-fm", "cifar10", "cifar100", "imagefolder:PATH")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Parameters
    ----------
    path : path-like
        The file; ``.gz`` files are decompressed.

    Returns
    -------
    numpy.ndarray
        With the shape and dtype the header declares (uint8 for MNIST images (N, 28, 28) and
        labels (N,)).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({count * dtype.itemsize} bytes) but the "
            f"file holds {len(data) - header} bytes of data"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for d in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def load_fashion_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    channels: int | None = 1,
    download: bool = False,
) -> ImageSet:
    """Load Fashion-MNIST.

    Parameters
    ----------
    split : {"train", "test"}
        60 000 training or 10 000 test images.
    root : path-like, optional
        Directory holding ``train-images-idx3-ubyte[.gz]`` etc. (also accepted: torchvision's
        ``root/FashionMNIST/raw`` layout). Default: ``$VISUALMIXER_FASHION_MNIST`` if set, else
        ``/usr/share/datasets/fashion-mnist``.
    channels : {1, 3, None}, default 1
        1: grey (N, 1, 28, 28); 3: the grey channel replicated (N, 3, 28, 28).
    download : bool, default False
        If the files are missing, download them with torchvision into ``root`` (needs a network).

    Returns
    -------
    ImageSet
        uint8 images (N, C, 28, 28), int64 labels (N,), the 10 class names.

    Raises
    ------
    FileNotFoundError
        If the files are missing (the message says how to install them).
    """
    check_split(split)
    if root is None:
        root = os.environ.get("VISUALMIXER_FASHION_MNIST") or FASHION_MNIST_DIR
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if (img_path is None or lbl_path is None) and download:
        torchvision = require("torchvision", extra="data", purpose="download=True")
        torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
        img_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
        lbl_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte.gz, "
            f"{prefix}-labels-idx1-ubyte.gz) not found in {root}. On Debian/Ubuntu install them "
            f"with `apt-get install -y dataset-fashion-mnist` (into {FASHION_MNIST_DIR}), or "
            "pass the directory that holds them (root=DIR), or download=True on a "
            "machine with a network."
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST files disagree: images {images.shape} in {img_path}, "
            f"labels {labels.shape} in {lbl_path}"
        )
    x = torch.from_numpy(images.astype(np.uint8, copy=True)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageSet(to_channels(x, channels), y, FASHION_MNIST_CLASSES, f"fashion-mnist/{split}")


# ---------------------------------------------------------------------------------------------
# Photos that ship inside installed packages

# PHOTO_SOURCES and the photo reader live in visualmixer.data.samples (one home for the photos).


def _cell_is_test(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Deterministic ~1-in-4 assignment of grid cells to the test split (spread over the photo)."""
    return (i * 3 + j) % 4 == 0


def load_photos(
    split: str = "train",
    *,
    size: int = 32,
    per_class: int | None = None,
    channels: int | None = 3,
    seed: int = 0,
    min_std: float = 12.0,
) -> ImageSet:
    """A real colour classification set cut from photos shipped in installed packages.

    Each source photo in :data:`PHOTO_SOURCES` whose package is installed is one class. The photo
    is resized (area averaging) so that its shorter side is ``8 * size`` and cut into a grid of
    cells of side ``2 * size``; about one cell in four (a fixed diagonal pattern) belongs to the
    test split, the others to the training split, so train and test crops never share a pixel.
    Crops of ``size × size`` pixels are taken at seeded random positions inside the cells of the
    split; near-flat crops (standard deviation below ``min_std`` grey levels, e.g. sky or the
    black border of the retina) are rejected.

    Parameters
    ----------
    split : {"train", "test"}
    size : int, default 32
        Crop side in pixels (>= 4).
    per_class : int, optional
        Crops per class; default 500 for train, 100 for test.
    channels : {3, 1, None}, default 3
    seed : int, default 0
        Seed of the crop positions (the train/test areas do not depend on it).
    min_std : float, default 12.0
        Crops whose pixel standard deviation is lower are rejected.

    Returns
    -------
    ImageSet
        uint8 images (len(classes) * per_class, C, size, size), int64 labels, class names.

    Notes
    -----
    Deterministic for given arguments and package versions. What a model learns here is the
    colour and texture statistics of each photo, a different task from object recognition;
    it is small (10 classes) and meant for quick colour experiments. Licences: see
    :data:`PHOTO_SOURCES` (public domain, CC0 or CC BY 2.0).
    """
    from PIL import Image

    check_split(split)
    if size < 4:
        raise ValueError(f"size={size!r} is not allowed: the photos are made at 4 px or more")
    if per_class is None:
        per_class = 500 if split == "train" else 100
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    want_test = split == "test"
    crops, labels, classes = [], [], []
    for name, _, _ in PHOTO_SOURCES:
        photo = photo_array(name, missing_ok=True)
        if photo is None:
            continue
        label = len(classes)
        classes.append(name)
        h, w = photo.shape[:2]
        scale = 8 * size / min(h, w)
        nh, nw = max(2 * size, round(h * scale)), max(2 * size, round(w * scale))
        img = np.asarray(Image.fromarray(photo).resize((nw, nh), Image.Resampling.BOX))
        cell = 2 * size
        gi, gj = np.meshgrid(np.arange(nh // cell), np.arange(nw // cell), indexing="ij")
        mask = _cell_is_test(gi, gj) == want_test
        ci, cj = gi[mask], gj[mask]
        windows = np.lib.stride_tricks.sliding_window_view(img, (size, size), axis=(0, 1))
        rng = np.random.default_rng([seed, label, int(want_test)])
        got: list[np.ndarray] = []
        tries = 0
        while sum(len(g) for g in got) < per_class:
            if tries >= 50:
                raise ValueError(
                    f"photo {name!r}: could not find {per_class} crops with std >= {min_std} "
                    f"in its {split} area; lower min_std or per_class"
                )
            tries += 1
            k = rng.integers(0, len(ci), 4 * per_class)
            oy = ci[k] * cell + rng.integers(0, cell - size + 1, k.size)
            ox = cj[k] * cell + rng.integers(0, cell - size + 1, k.size)
            cand = windows[oy, ox]  # (k, 3, size, size)
            std = cand.reshape(k.size, -1).astype(np.float32).std(axis=1)
            got.append(cand[std >= min_std])
        batch = np.concatenate(got)[:per_class]
        crops.append(batch)
        labels.append(np.full(per_class, label, dtype=np.int64))
    if not classes:
        raise FileNotFoundError(
            "no source photo found: install scikit-image (and optionally scikit-learn)"
        )
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(crops)))
    y = torch.from_numpy(np.concatenate(labels))
    return ImageSet(to_channels(x, channels), y, tuple(classes), f"photos{size}/{split}")


# ---------------------------------------------------------------------------------------------
# CIFAR (python pickle batches)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    channels: int | None = None,
    size: int | None = None,
    download: bool = False,
    seed: int = 0,
) -> ImageSet:
    """Load a set by its command-line name.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`: ``"fashion-mnist"``, ``"photos"``, ``"cifar10"``,
        ``"cifar100"`` or ``"imagefolder:PATH"``.
    split : {"train", "test"}
    root : path-like, optional
        Data directory (Fashion-MNIST: default the Debian path; CIFAR: required).
    channels : {1, 3, None}
        None keeps the set's own (1 for Fashion-MNIST, 3 for the others).
    size : int, optional
        Crop side for ``photos`` (default 32); resize side for ``imagefolder``.
    download : bool
        Allow torchvision downloads (Fashion-MNIST, CIFAR).
    seed : int
        Crop positions (``photos``) or the split (``imagefolder`` without split directories).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size={size!r} is not allowed: give an image side >= 1, or None for the set's own")
    if size is not None and name != "photos" and not name.startswith("imagefolder:"):
        raise ValueError(f"size={size} applies to 'photos' (crop) and 'imagefolder:PATH' (resize) only: "
                         f"{name!r} images have their own fixed size")
    if name == "fashion-mnist":
        ds = load_fashion_mnist(split, root=root, channels=None, download=download)
    elif name == "photos":
        ds = load_photos(split, size=size or 32, seed=seed)
    elif name == "tinted-fm":  # Fashion-MNIST shapes in random colours over photos (data/tinted.py)
        from visualmixer.data.tinted import load_tinted_fashion

        ds = load_tinted_fashion(split, root=root, seed=seed)
    elif name in ("cifar10", "cifar100"):
        if root is None:
            raise ValueError(f"{name} needs a data directory (root=DIR)")
        ds = load_cifar(split, root=root, num_classes=int(name[5:]), download=download)
    elif name.startswith("imagefolder:") and len(name) > len("imagefolder:"):
        ds = load_image_folder(name[len("imagefolder:") :], split, size=size, seed=seed)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    return ds.with_channels(channels)
