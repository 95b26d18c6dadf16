"""Image files in and out: read one file into a uint8 tensor, write PNG with no metadata, atomically.

Reading (:func:`load_image`, :func:`read_image`) always gives a ``torch.uint8`` tensor of shape
``(C, H, W)`` with ``C`` in {1, 3}, after these documented conversions:

======================================  ===========================================================
input                                   what you get
======================================  ===========================================================
EXIF orientation tag (2..8)             pixels rotated/flipped upright, as a viewer shows them
``L`` (8-bit grey)                      1 channel, unchanged
``1`` (bi-level)                        1 channel, values 0 / 255
``LA`` / ``La``                         1 channel: **alpha dropped** (colour values kept as stored)
``RGB``                                 3 channels, unchanged
``RGBA`` / ``RGBa`` / ``RGBX``          3 channels: **alpha dropped** (not composited on a background)
``P`` / ``PA`` (palette)                3 channels: palette expanded to RGB, transparency dropped
``CMYK``                                3 channels: Pillow's naive CMYK→RGB (ICC profile ignored)
``YCbCr`` / ``LAB`` / ``HSV``           3 channels: converted to RGB
``I;16*`` / ``I`` (16-bit grey)         1 channel: ``round(v * 255 / 65535)`` (values clipped)
16-bit RGB PNG                          3 channels: Pillow reads it as 8-bit (high bytes)
multi-frame (GIF, TIFF, APNG)           the first frame only
``F`` (32-bit float) and other modes    refused (:class:`ImageReadError`, "unsupported mode")
======================================  ===========================================================

Files that cannot be used raise :class:`ImageReadError`, a ``ValueError`` whose message is one line
saying why: empty file, not a recognised image format, truncated or corrupt image data, declared
dimensions beyond the decompression-bomb limit (``max_pixels``, Pillow's ``MAX_IMAGE_PIXELS`` by
default), unsupported mode. The message never contains pixel data or file contents.

Writing (:func:`encode_image`, :func:`write_png`, :func:`write_bytes_atomic`) builds a fresh image
from the pixel values alone, so no metadata of the input can follow: a PNG written here holds only
the ``IHDR``, ``IDAT`` and ``IEND`` chunks (no EXIF, XMP, ICC profile, text or time chunks). The
bytes are a deterministic function of the pixels (same pixels, same zlib → same bytes). Files are
written to a temporary name in the destination folder (``.NAME.<random>.vmtmp``), flushed, fsynced
and renamed with :func:`os.replace`, so an interrupted run never leaves a half-written file under
the final name; :func:`remove_stale_temps` removes leftovers of a killed run.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from visualmixer.core.atomic import replace_atomically

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "LoadedImage",
    "decode_image",
    "encode_image",
    "is_image_path",
    "load_image",
    "pillow_error_limit",
    "read_regular",
    "pil_to_tensor",
    "tensor_to_pil",
    "read_image",
    "remove_stale_temps",
    "write_bytes_atomic",
    "write_png",
    "TEMP_SUFFIX",
]

#: File-name extensions (lower case) that the tools treat as images.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"}
)

#: Suffix of temporary files written by :func:`write_bytes_atomic`.
TEMP_SUFFIX = ".vmtmp"

#: Output formats :func:`encode_image` can write, by name.
_ENCODE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "bmp": "BMP", "tiff": "TIFF",
                   "webp": "WEBP"}


class ImageReadError(ValueError):
    """An image file that cannot be used; ``str(err)`` is a one-line reason."""


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def nonblocking(path, flags: int) -> int:
    """An ``opener`` for :func:`open` that never waits: a FIFO opens at once (no writer needed)."""
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))


def special_file(st: os.stat_result) -> str:
    """``""`` for a regular file, else the one-line reason it is not read: FIFOs, devices (also
    behind a symbolic link: ``x.png -> /dev/zero``), sockets and folders would hang a run or
    read without end."""
    if stat.S_ISREG(st.st_mode):
        return ""
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
    return f"not a regular file ({kind}); only regular image files are read"


def broken_link(path: str | os.PathLike) -> str:
    """The reason for a ``FileNotFoundError`` on opening ``path`` when it is a symbolic link to
    nothing (``""`` when it is not)."""
    if not os.path.islink(path):
        return ""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"broken symbolic link (its target {target} does not exist)"


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, a regular file (else :class:`ImageReadError` with
    :func:`special_file`'s or :func:`broken_link`'s reason; other ``OSError`` s as they are)."""
    try:
        fh = open(path, "rb", opener=nonblocking)
    except FileNotFoundError:
        why = broken_link(path)
        if why:
            raise ImageReadError(why) from None
        raise
    with fh:
        why = special_file(os.fstat(fh.fileno()))
        if why:
            raise ImageReadError(why)
        return fh.read()


@dataclass
class LoadedImage:
    """A decoded image and what was done to it.

    Attributes
    ----------
    pixels : torch.Tensor
        ``uint8`` tensor ``(C, H, W)``, ``C`` in {1, 3}.
    format : str
        Pillow's name of the file format (``"PNG"``, ``"JPEG"``, ...).
    mode : str
        Pillow's mode of the stored image before conversion (``"RGBA"``, ``"CMYK"``, ...).
    conversions : list of str
        Short notes on the conversions applied (empty when the pixels are as stored).
    """

    pixels: torch.Tensor
    format: str
    mode: str
    conversions: list[str] = field(default_factory=list)


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def pillow_error_limit() -> int | None:
    """Where Pillow itself refuses an image (twice ``MAX_IMAGE_PIXELS``; below it only warns): the
    ``max_pixels`` of the data sets' and the audit's readers (the tools refuse at ``MAX_IMAGE_PIXELS``)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[int | None]:
    """Make Pillow's decompression-bomb guard at least as permissive as ``max_pixels``.

    Pillow's own check (in ``Image.open``) uses a process-global limit; when the caller asks for a
    higher one, the global is raised for the duration (not thread-safe; the tools decode in one
    thread per process). Yields the limit to apply.
    """
    default = Image.MAX_IMAGE_PIXELS
    limit = default if max_pixels is None else int(max_pixels)
    if limit is not None and default is not None and limit > default:
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = default
    else:
        yield limit


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _to_uint8_array(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Convert a loaded Pillow image to an (H, W) or (H, W, 3) uint8 array (module docstring)."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode == "1":
        notes.append("bi-level to 8-bit grey")
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in ("LA", "La"):
        notes.append("alpha dropped")
        return np.asarray(im.getchannel(0), dtype=np.uint8)
    if mode in ("RGBA", "RGBa", "RGBX"):
        if mode != "RGBX":
            notes.append("alpha dropped")
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3].copy()
    if mode in ("P", "PA"):
        notes.append("palette expanded to RGB")
        if mode == "PA" or "transparency" in im.info:
            notes.append("transparency dropped")
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3].copy()
    if mode == "CMYK":
        notes.append("CMYK to RGB (naive, ICC profile ignored)")
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if mode in ("YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} to RGB")
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if arr.ndim != 2:
            raise ImageReadError(f"unsupported mode {mode!r} with shape {arr.shape}")
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        notes.append("16-bit to 8-bit")
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    raise ImageReadError(
        f"unsupported mode {mode!r} (supported: L, RGB, 1, LA, RGBA, P, CMYK, YCbCr, LAB, HSV, "
        "I;16, I)"
    )


def decode_image(data: bytes, *, max_pixels: int | None = None, name: str = "image") -> LoadedImage:
    """Decode image file contents into a :class:`LoadedImage` (conversions: module docstring).

    Parameters
    ----------
    data : bytes
        The whole file's contents.
    max_pixels : int, optional
        Refuse images whose declared width × height exceeds this (decompression-bomb guard).
        Default: Pillow's ``Image.MAX_IMAGE_PIXELS`` (about 89.5 million).
    name : str
        Used only in messages.

    Returns
    -------
    LoadedImage

    Raises
    ------
    ImageReadError
        With a one-line reason when the data cannot be used.
    """
    if len(data) == 0:
        raise ImageReadError("empty file (0 bytes)")
    with _pillow_limit(max_pixels) as limit, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(_io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's own limit is not ours: name one
            raise ImageReadError(
                f"declared dimensions ({size.group(1) if size else 'too many'} pixels) exceed the "
                f"decompression-bomb limit of {limit} pixels; raise the limit with "
                "max_pixels=N if the file is trusted"
            ) from None
        except UnidentifiedImageError:
            raise ImageReadError("not a recognised image format (Pillow cannot identify it)") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason, not a crash
            raise ImageReadError(f"truncated or corrupt image header ({_one_line(exc)})") from None
        with im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageReadError(f"declared size {width}x{height} is empty")
            if limit is not None and width * height > limit:
                raise ImageReadError(
                    f"declared dimensions {width}x{height} = {width * height} pixels exceed the "
                    f"decompression-bomb limit of {limit} pixels; raise it with max_pixels=N if "
                    "the file is trusted"
                )
            fmt = im.format or "?"
            mode = im.mode
            notes: list[str] = []
            if getattr(im, "n_frames", 1) > 1:
                notes.append("first frame only")
            try:
                im.load()
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"truncated or corrupt image data ({_one_line(exc)})") from None
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - an unreadable EXIF block means no orientation
                orientation = 1
            if orientation not in (1, None):
                try:
                    upright = ImageOps.exif_transpose(im)
                except Exception as exc:  # noqa: BLE001
                    raise ImageReadError(f"cannot apply EXIF orientation ({_one_line(exc)})") from None
                if upright is not None and upright is not im:
                    notes.append(f"EXIF orientation {orientation} applied")
                    im = upright
            try:
                arr = _to_uint8_array(im, notes)
            except ImageReadError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"cannot convert mode {mode!r}: {_one_line(exc)}") from None
    return LoadedImage(pixels=_array_to_tensor(arr), format=fmt, mode=mode, conversions=notes)


def _array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    if not arr.flags.writeable:
        arr = arr.copy()
    if arr.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(arr)).unsqueeze(0).contiguous()
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).contiguous()


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert a decoded PIL image to ``uint8`` ``(C, H, W)`` with the module's mode conversions.

    EXIF orientation is not applied here (use :func:`load_image` for files).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL.Image.Image, got {type(image).__name__}")
    return _array_to_tensor(_to_uint8_array(image, []))


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """A ``uint8`` ``(C, H, W)`` tensor (``C`` in {1, 3}) as a fresh PIL image (mode L or RGB)."""
    return Image.fromarray(_as_hwc_uint8(image))


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage` (conversions: module docstring).

    Parameters
    ----------
    path : str or path-like
        The file to read. It is opened read-only and never modified.
    max_pixels : int, optional
        Decompression-bomb limit on the declared width × height (default: Pillow's).

    Raises
    ------
    ImageReadError
        One-line reason when the file cannot be used (empty, not an image, truncated, too large,
        unsupported mode, not a regular file: :func:`read_regular`). ``OSError`` from opening the
        file itself (missing, no permission) is turned into an :class:`ImageReadError` as well.
    """
    try:
        data = read_regular(path)
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or _one_line(exc)}") from None
    return decode_image(data, max_pixels=max_pixels, name=str(path))


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file into a ``uint8`` tensor ``(C, H, W)``, ``C`` in {1, 3}.

    Shortcut for ``load_image(path).pixels``; see the module docstring for the conversions.

    Examples
    --------
    >>> import tempfile, torch; from visualmixer.tools.imageio import read_image, write_png
    >>> read_image(write_png(tempfile.mkdtemp() + "/grey.png", torch.zeros(1, 4, 6, dtype=torch.uint8))).shape
    torch.Size([1, 4, 6])
    """
    return load_image(path, max_pixels=max_pixels).pixels


def _as_hwc_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"image: expected a uint8 tensor, got {image.dtype}")
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image: expected shape (C, H, W) with C in {{1, 3}}, got {tuple(image.shape)}")
        arr = image.detach().cpu().numpy()
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise TypeError(f"image: expected a uint8 array, got {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
            raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {arr.shape}")
    return np.ascontiguousarray(arr)


def encode_image(
    image: torch.Tensor | np.ndarray,
    format: str = "png",
    *,
    compress_level: int = 6,
    quality: int = 95,
) -> bytes:
    """Encode pixels to file bytes carrying no metadata at all.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        ``uint8`` tensor ``(C, H, W)`` with ``C`` in {1, 3}, or array ``(H, W)`` / ``(H, W, 3)``.
    format : {"png", "jpeg", "bmp", "tiff", "webp"}
        Output format. PNG, BMP, TIFF and WebP (written lossless) keep the pixels exactly; JPEG
        does not.
    compress_level : int
        zlib level for PNG (0-9).
    quality : int
        JPEG quality.

    Returns
    -------
    bytes
        A deterministic function of the pixels (and the options).
    """
    key = str(format).lower()
    if key not in _ENCODE_FORMATS:
        raise ValueError(f"format: expected one of {sorted(set(_ENCODE_FORMATS))}, got {format!r}")
    pil = Image.fromarray(_as_hwc_uint8(image))
    buf = _io.BytesIO()
    fmt = _ENCODE_FORMATS[key]
    if fmt == "PNG":
        pil.save(buf, format="PNG", compress_level=int(compress_level))
    elif fmt == "JPEG":
        pil.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    elif fmt == "WEBP":
        pil.save(buf, format="WEBP", lossless=True, quality=100, method=4, exif=b"", xmp=b"")
    else:
        pil.save(buf, format=fmt)
    return buf.getvalue()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Parameters
    ----------
    path : str or path-like
        Final file name. Missing parent folders are created.
    data : bytes
        Contents.
    overwrite : bool
        Replace an existing file. Without it, an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_atomically(path, data, mode=0o644, suffix=TEMP_SUFFIX)


def write_png(
    path: str | os.PathLike,
    image: torch.Tensor | np.ndarray,
    *,
    overwrite: bool = False,
    compress_level: int = 6,
) -> Path:
    """Write ``image`` as a metadata-free PNG, atomically (see :func:`write_bytes_atomic`).

    Parameters
    ----------
    path : str or path-like
        Destination file.
    image : torch.Tensor or numpy.ndarray
        ``uint8`` ``(C, H, W)`` tensor (``C`` in {1, 3}) or ``(H, W[, 3])`` array.
    overwrite : bool
        Replace an existing file (default: refuse with ``FileExistsError``).
    compress_level : int
        zlib level (0-9).
    """
    return write_bytes_atomic(
        path, encode_image(image, "png", compress_level=compress_level), overwrite=overwrite
    )


def remove_stale_temps(root: str | os.PathLike) -> int:
    """Delete temporary files (``.*.vmtmp``) left under ``root`` by a killed run; return how many."""
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed
