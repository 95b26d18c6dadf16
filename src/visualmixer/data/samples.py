"""Real photos that ship inside installed packages (no download): the one reader of them.

Demos, tests, ``visualmixer run`` and the ``photos`` classification set
(:func:`visualmixer.data.datasets.load_photos`) all read the photos through :func:`photo_array`.

=============  ===============================================  =======================================
name           source                                           licence
=============  ===============================================  =======================================
astronaut      ``skimage.data.astronaut()`` (a face)            public domain (NASA)
coffee         ``skimage.data.coffee()``                        CC0 (Rachel Michetti)
chelsea        ``skimage.data.chelsea()`` (a cat)               CC0 (Stefan van der Walt)
retina         ``skimage.data.retina()`` (fundus photo)         CC0 (Mikael Häggström, Wikimedia)
rocket         ``skimage.data.rocket()``                        public domain (SpaceX)
motorcycle     ``skimage.data.stereo_motorcycle()[0]``          CC BY (Middlebury stereo set)
hubble         ``skimage.data.hubble_deep_field()``             public domain (NASA)
ihc            ``skimage.data.immunohistochemistry()``          no known copyright restrictions (CMMI)
china          ``sklearn.datasets.load_sample_images()``        CC BY 2.0 (danielbuechele)
flower         ``sklearn.datasets.load_sample_images()``        CC BY 2.0 (vultilion)
grace_hopper   matplotlib sample data ``grace_hopper.jpg``      US Navy photo, public domain
=============  ===============================================  =======================================

scikit-image and scikit-learn come with ``pip install 'visualmixer[data]'``, matplotlib with
``visualmixer[train]``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from visualmixer.core.optional import require

__all__ = ["ALL_PHOTOS", "PHOTO_NAMES", "PHOTO_SOURCES", "builtin_photos", "load_photo", "photo_array"]

#: The six photos of the demos (``visualmixer run``, the README picture, the tests).
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "retina", "rocket", "motorcycle")

#: (name, loader description, licence) of each source photo of the ``photos`` classification set.
PHOTO_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage.data.astronaut()", "NASA, public domain"),
    ("coffee", "skimage.data.coffee()", "CC0, Rachel Michetti"),
    ("chelsea", "skimage.data.chelsea()", "CC0, Stefan van der Walt"),
    ("rocket", "skimage.data.rocket()", "SpaceX, public domain"),
    ("retina", "skimage.data.retina()", "CC0, Mikael Häggström (Wikimedia)"),
    ("hubble", "skimage.data.hubble_deep_field()", "NASA, public domain"),
    ("ihc", "skimage.data.immunohistochemistry()", "no known copyright restrictions (CMMI)"),
    ("china", "sklearn.datasets.load_sample_images() china.jpg", "CC BY 2.0, danielbuechele"),
    ("flower", "sklearn.datasets.load_sample_images() flower.jpg", "CC BY 2.0, vultilion"),
    ("grace_hopper", "matplotlib sample_data grace_hopper.jpg", "US Navy photo, public domain"),
)

# name -> function name in skimage.data
_SKIMAGE = {
    "astronaut": "astronaut", "coffee": "coffee", "chelsea": "chelsea", "retina": "retina",
    "rocket": "rocket", "hubble": "hubble_deep_field", "ihc": "immunohistochemistry",
}  # fmt: skip
#: Every photo :func:`photo_array` reads.
ALL_PHOTOS = (*_SKIMAGE, "motorcycle", "china", "flower", "grace_hopper")


def _read(name: str) -> np.ndarray:
    """Read one photo from its package (raises ``MissingExtraError`` when that is not installed)."""
    if name in _SKIMAGE or name == "motorcycle":
        data = require("skimage.data", extra="data", purpose=f"the built-in photo {name!r}")
        if name == "motorcycle":
            return np.asarray(data.stereo_motorcycle()[0])
        return np.asarray(getattr(data, _SKIMAGE[name])())
    if name in ("china", "flower"):
        sk = require("sklearn.datasets", extra="data", purpose=f"the built-in photo {name!r}")
        return np.asarray(sk.load_sample_images().images[0 if name == "china" else 1])
    cbook = require("matplotlib.cbook", extra="train", purpose=f"the built-in photo {name!r}")
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@functools.cache
def _cached(name: str) -> np.ndarray:
    arr = np.asarray(_read(name), dtype=np.uint8)[..., :3]
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def photo_array(name: str, *, missing_ok: bool = False) -> np.ndarray | None:
    """One source photo at its original resolution, as a read-only uint8 array (H, W, 3).

    Cached per process (about 15 MB for all of them).

    Parameters
    ----------
    name : str
        One of :data:`ALL_PHOTOS` (the table in the module docstring).
    missing_ok : bool, default False
        Return ``None`` instead of raising when the package holding the photo is not installed
        (or its file cannot be read).

    Raises
    ------
    ValueError
        Unknown ``name``.
    visualmixer.core.optional.MissingExtraError
        The package holding the photo is not installed (and ``missing_ok`` is false).
    """
    if name not in ALL_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(ALL_PHOTOS)}")
    try:
        return _cached(name)
    except (ImportError, OSError, AttributeError):
        if missing_ok:
            return None
        raise


def load_photo(name: str, size: int | None = 224) -> torch.Tensor:
    """One built-in photo as a ``(3, size, size)`` uint8 tensor (centre square crop, area-resized).

    ``size=None`` keeps the original resolution and aspect ratio: ``(3, H, W)``.
    """
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    img = torch.from_numpy(photo_array(name).copy()).permute(2, 0, 1)
    if size is None:
        return img.contiguous()
    h, w = img.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[:, top : top + side, left : left + side].unsqueeze(0).float()
    out = F.interpolate(crop, size=(size, size), mode="area")
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def builtin_photos(size: int = 224, names=PHOTO_NAMES) -> tuple[list[str], torch.Tensor]:
    """The built-in photos as one ``(N, 3, size, size)`` uint8 batch, with their names."""
    names = list(names)
    return names, torch.stack([load_photo(n, size) for n in names])
