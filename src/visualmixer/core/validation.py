"""Input checks and adapters shared by the public functions (validate once, at the API edge)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["to_batch", "BatchInfo", "from_batch", "check_images_tensor", "is_integer_dtype", "refuse_alpha",
           "standard_strides", "check_ids"]

_CHANNEL_HINT = (
    "allowed: 1 (grey) or 3 (RGB) channels; convert RGBA with img[:3] (or PIL's .convert('RGB')), "
    "other counts by selecting or averaging channels"
)


#: PIL modes with more than 8 bits per pixel: refused (``to_batch`` would have to round them).
_WIDE_PIL_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;32", "I;32L", "I;32B"})


@dataclass(frozen=True)
class BatchInfo:
    """How the caller's input was laid out, so results can be handed back the same way."""

    kind: str  # "tensor4" | "tensor3" | "numpy" | "pil"
    numpy_2d: bool = False
    pil_mode: str | None = None


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds integers (not floating, complex or bool): labels, levels, indices."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_images_tensor(images: torch.Tensor, name: str = "images") -> None:
    """Check a (N, C, H, W) tensor: C in {1, 3}, not empty, uint8 or floating, finite."""
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W); got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"{name} has {c} channels (shape {tuple(images.shape)}); {_CHANNEL_HINT}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)}); need N, H, W >= 1")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(
            f"{name} has dtype {images.dtype}; allowed: torch.uint8 or a floating dtype "
            "(convert with .to(torch.uint8) or .float() / 255)"
        )
    if images.dtype.is_floating_point and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def to_batch(images: Any, name: str = "images") -> tuple[torch.Tensor, BatchInfo]:
    """Turn the accepted user input kinds into a validated (N, C, H, W) tensor and its layout.

    Accepted: a tensor (N, C, H, W) or (C, H, W); a numpy array (H, W, C) or (H, W); a PIL image.
    RGBA numpy/PIL inputs lose their alpha channel (alpha would leak the object's silhouette); PIL
    images with more than 8 bits per pixel (modes ``I;16``, ``I``, ``F``) are refused; modes
    ``1``/``LA`` are read as ``L``, the others (``P``, ``PA``, ``RGBX``, ``CMYK``, ``YCbCr``,
    ``LAB``, ``HSV``) as Pillow's conversion to ``RGB`` — the image handed back, and restored, is
    that ``L``/``RGB`` image (as the folder tools convert them; convert first to choose how).
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            batch, info = images.unsqueeze(0), BatchInfo("tensor3")
        elif images.ndim == 4:
            batch, info = images, BatchInfo("tensor4")
        else:
            raise ValueError(
                f"{name} must be a tensor of shape (N, C, H, W) or (C, H, W); "
                f"got {images.ndim} dimensions {tuple(images.shape)}"
            )
    elif isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 2:
            arr, is2d = arr[:, :, None], True
        elif arr.ndim == 3:
            is2d = False
        else:
            raise ValueError(
                f"{name}: numpy arrays must be (H, W) or (H, W, C); got shape {images.shape}"
            )
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        elif arr.shape[2] not in (1, 3):
            raise ValueError(
                f"{name} has {arr.shape[2]} channels (numpy shape {images.shape}); numpy arrays are "
                f"(H, W) or (H, W, C) with C in 1, 3 or 4 (alpha dropped): transpose a (C, H, W) array "
                "with arr.transpose(1, 2, 0), or pass it as a torch tensor"
            )
        if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{name} has numpy dtype {arr.dtype}; allowed: uint8 or floating")
        batch = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)
        info = BatchInfo("numpy", numpy_2d=is2d)
    else:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            Image = None
        if Image is not None and isinstance(images, Image.Image):
            img = images
            if img.mode in _WIDE_PIL_MODES:  # converting them to 8 bits would lose what restore gives back
                raise TypeError(
                    f"{name} is a PIL image in mode {img.mode!r} (more than 8 bits per pixel); allowed: "
                    "8-bit modes. Pass np.asarray(img, dtype=np.float32) scaled to [0, 1] (e.g. / 65535 for "
                    "16 bits) to keep every value, or convert it to 8 bits yourself"
                )
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            arr = np.array(img)  # writable: np.asarray of a PIL image is read-only (torch warns)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            batch = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)
            info = BatchInfo("pil", pil_mode=img.mode)
        else:
            raise TypeError(
                f"{name} must be a torch.Tensor, numpy array or PIL image; "
                f"got {type(images).__name__}"
            )
    check_images_tensor(batch, name)
    return standard_strides(batch), info


def standard_strides(batch: torch.Tensor) -> torch.Tensor:
    """``batch``, or a copy of it in row-major order where its strides differ from that order's.

    The kernels reinterpret rows of bytes as wider integers (``Tensor.view(dtype)``), which needs
    every stride but the last to be a whole number of those integers. ``Tensor.contiguous()`` is no
    help for a grey channels-last batch, a permuted NHWC one or a numpy ``(H, W, 1)`` array: torch
    counts them contiguous (the channel axis has size 1) and keeps their strides.
    """
    want, step = [], 1
    for size in reversed(batch.shape):
        want.append(step)
        step *= max(size, 1)
    if batch.stride() == tuple(reversed(want)):
        return batch
    return batch.clone(memory_format=torch.contiguous_format)


def from_batch(batch: torch.Tensor, info: BatchInfo) -> Any:
    """Inverse of :func:`to_batch` for the image part: the caller's layout back."""
    if info.kind == "tensor4":
        return batch
    if info.kind == "tensor3":
        return batch[0]
    arr = batch[0].permute(1, 2, 0).cpu().numpy()
    if info.kind == "numpy":
        return arr[:, :, 0] if info.numpy_2d else arr
    from PIL import Image

    return Image.fromarray(arr[:, :, 0] if info.pil_mode == "L" else arr, mode=info.pil_mode)


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def refuse_alpha(image: Any, *, who: str, hint: str = "") -> None:
    """``ValueError`` for an image with an alpha channel: a PIL image in an alpha mode or with
    transparency, or a numpy array ``(H, W, 4)``. For the tools that take images one by one
    (the transform, the Hugging Face helpers), where :func:`to_batch`'s dropping of alpha would
    silently change the image, and keeping it would show the object's outline."""
    from PIL import Image

    if isinstance(image, Image.Image) and (image.mode in _ALPHA_MODES or "transparency" in image.info):
        what = f"a PIL image in mode {image.mode!r}" + (" with transparency" if image.mode not in _ALPHA_MODES else "")
        fix = f"image.convert({'L' if image.mode in ('LA', 'La') else 'RGB'!r})"
    elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 4:
        what, fix = f"a numpy array of shape {image.shape} (RGBA)", "array[..., :3]"
    else:
        return
    raise ValueError(f"{who} got {what}: its alpha channel would be dropped, or, kept as it is, would show the "
                     f"object's outline. Convert it first: {fix}" + (f" ({hint})" if hint else ""))


def check_ids(ids: Any, n: int) -> list:
    """One id per image: ints (also numpy/torch integer scalars or a 1-D integer tensor), strs
    or tuples of them. A single str is one id, not a sequence of characters. NumPy integers,
    inside tuples too, become ints (the same subkeys as the ints of the same value)."""
    if ids is None:
        raise ValueError("ids are required when a key is given (one int/str/tuple id per image)")
    if isinstance(ids, (str, bytes, int, np.integer)):
        ids = [_plain_id(ids)]
    elif isinstance(ids, (AbstractSet, Mapping)):  # (a set of strs iterates in a per-process order)
        raise TypeError(f"ids must be an ordered sequence (a list or tuple, one id per image), got a "
                        f"{type(ids).__name__}: its order is not the images' order")
    elif isinstance(ids, torch.Tensor):
        if not is_integer_dtype(ids.dtype) or ids.ndim != 1:
            raise TypeError(f"ids given as a tensor must be 1-D integers, got {ids.dtype} of shape {tuple(ids.shape)}")
        ids = ids.tolist()
    else:
        ids = [_plain_id(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} images; give exactly one id per image")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str, tuple)):
            raise TypeError(f"each id must be an int, str or tuple of them, got {type(i).__name__}")
    return ids


def _plain_id(image_id: Any) -> Any:
    if isinstance(image_id, np.integer):
        return int(image_id)
    if isinstance(image_id, tuple):
        return tuple(_plain_id(part) for part in image_id)
    return image_id
