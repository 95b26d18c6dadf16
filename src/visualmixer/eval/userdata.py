"""A user's own images for the audit: ``imagefolder:PATH`` and ``hf:PATH``.

``imagefolder:PATH``
    ``PATH/<class>/<image files>`` (torchvision's ``ImageFolder`` layout, as ``visualmixer train``
    reads it with :func:`visualmixer.data.datasets.load_image_folder`); ``PATH/train/<class>`` with
    ``PATH/test/<class>`` (or ``val``) is pooled.
``hf:PATH``
    A Hugging Face image data set saved with ``save_to_disk`` (read with ``datasets.load_from_disk``;
    every split of a ``DatasetDict`` is pooled). The image column is the first ``Image`` feature and
    the label column the first ``ClassLabel`` feature (or columns named ``image``/``img`` and
    ``label``/``labels``) unless ``image_column`` / ``label_column`` name them.

Every image is decoded here (not by ``load_image_folder``, which stops at the first unreadable
file), the way the tools read files (:func:`visualmixer.tools.imageio.decode_image`: EXIF
orientation applied, 16-bit grey scaled to 8 bits, alpha dropped): unreadable files are skipped
and counted; grey and colour images in one set are all converted to colour (the grey channel
replicated: nothing is lost, and a colour model sees every image the same way), with a note;
images keep their native size when they all share it, and are otherwise resized (shorter side)
and centre-cropped to ``image_size``.

:mod:`visualmixer.eval.usersplit` splits the pool for the audit (its functions are importable
from here too, where they were before).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from visualmixer.core.optional import require
from visualmixer.eval.usersplit import MIN_PER_CLASS, fit_split_sizes, split_user_data  # (their earlier home)
from visualmixer.tools.imageio import (
    decode_image,
    load_image,
    nonblocking,
    pillow_error_limit,
    special_file,
    tensor_to_pil,
)
from visualmixer.tools.progress import progress

__all__ = [
    "USER_DATA_PREFIXES",
    "UserImages",
    "is_user_data",
    "user_data_folders",
    "load_user_images",
    "count_user_images",
    "fingerprint",
    "MIN_PER_CLASS",  # moved to visualmixer.eval.usersplit; importable from here as before
    "split_user_data",
    "fit_split_sizes",
]

USER_DATA_PREFIXES = ("imagefolder:", "hf:")
_SPLIT_DIRS = ("train", "test", "val", "validation")


def is_user_data(name: str) -> bool:
    """True for ``imagefolder:PATH`` and ``hf:PATH`` names."""
    return any(name.startswith(p) and len(name) > len(p) for p in USER_DATA_PREFIXES)


def user_data_folders(names) -> tuple[Path, ...]:
    """The folders of the ``imagefolder:``/``hf:`` sets among ``names`` (a report is never
    written into one: :func:`~visualmixer.eval.report.files.prepare_out_dir`'s ``inputs``)."""
    return tuple(Path(n.partition(":")[2]).expanduser() for n in names if is_user_data(n))


@dataclass
class UserImages:
    """A user's labelled images, decoded.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(N, C, H, W)``, C in {1, 3}.
    labels : torch.Tensor
        int64 ``(N,)``.
    classes : tuple of str
        Class names, indexed by label.
    source : str
        The ``imagefolder:``/``hf:`` name.
    native_sizes : tuple of (int, int)
        The distinct (height, width) sizes before resizing (at most 5 kept).
    notes : list of str
        What was skipped or converted, for the report.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str
    native_sizes: tuple[tuple[int, int], ...] = ()
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        n = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, n, strict=True))


# ----------------------------------------------------------------------------- listing


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_folder(root: Path) -> tuple[list[tuple[str, str]], int]:
    """``[(file, class name)]`` of an ImageFolder tree (split folders pooled) and the number of
    files ignored for their extension."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder:{root}: no such folder")
    subdirs = _class_dirs(root)
    split_dirs = [d for d in subdirs if d.name.lower() in _SPLIT_DIRS]
    bases = split_dirs if split_dirs and len(split_dirs) == len(subdirs) else [root]
    files: list[tuple[str, str]] = []
    ignored = 0
    seen_dirs: set = set()
    seen_files: set = set()  # a file reached twice through links is one image, listed once
    for base in bases:
        for cdir in _class_dirs(base):
            for dirpath, names in _walk(cdir, seen_dirs):
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    if name.lower().endswith(IMG_EXTENSIONS):
                        path = os.path.join(dirpath, name)
                        ident = _identity(path)
                        if ident is None or ident not in seen_files:
                            files.append((path, cdir.name))
                            seen_files.add(ident)
                    else:
                        ignored += 1
    if not files:
        loose = [p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)]
        hint = (f"; it holds {len(loose)} image files directly: move them into one sub-folder per class"
                if loose else "")
        raise ValueError(
            f"imagefolder:{root}: no class sub-folders with images (expected {root}/<class>/<image files>, "
            f"as torchvision's ImageFolder){hint}"
        )
    return files, ignored


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # (a broken link: listed, and reported unreadable when decoded)
        return None
    return st.st_dev, st.st_ino


def _walk(top, seen: set) -> Iterator[tuple[str, list[str]]]:
    """``os.walk(top, followlinks=True)`` that never enters a folder twice (``seen`` holds the
    folders entered, across calls): a link back up the tree would repeat every image below it."""
    for dirpath, dirnames, names in os.walk(top, followlinks=True):
        ident = _identity(dirpath)
        if ident in seen:
            dirnames[:] = []
            continue
        seen.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, names


class _Lazy:
    """One image of a user set, read on demand: :meth:`load` decodes it as the tools do
    (:mod:`visualmixer.tools.imageio`), :meth:`upright_size` reads only its header."""

    def __init__(self, fetch, name: str):
        self._fetch, self.name = fetch, name  # fetch() -> a file path or the file's bytes

    def load(self):
        src = self._fetch()
        if isinstance(src, bytes):
            return decode_image(src, name=self.name, max_pixels=pillow_error_limit())
        return load_image(src, max_pixels=pillow_error_limit())

    def upright_size(self) -> tuple[int, int] | None:
        """``(H, W)`` as decoded (after the EXIF orientation), or None when the header is unreadable
        or the file is no regular file (decoding then fails too, and the image is skipped)."""
        try:
            src = self._fetch()  # a path opens as the decode reads it: never waiting on a FIFO
            with (io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb", opener=nonblocking)) as fh:
                if not isinstance(src, bytes) and special_file(os.fstat(fh.fileno())):
                    return None
                return _header_size(fh)
        except Exception:  # noqa: BLE001 - any header problem: the decode reports it
            return None


def _header_size(fh) -> tuple[int, int]:
    """``(H, W)`` of the image in ``fh`` after its EXIF orientation, from the header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # (the decode refuses what is too large)
        with Image.open(fh) as im:
            w, h = im.size
            # a PNG's getexif() decodes the whole image to look past the pixel data: only an eXIf
            # before it is read here (a later one still turns the decoded sample)
            exif = im.format != "PNG" or "exif" in im.info
            turned = exif and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the sides
    return (w, h) if turned else (h, w)


def _open_file(path: str) -> _Lazy:
    return _Lazy(lambda: path, path)


def _open_row(ds, i: int, column: str) -> _Lazy:
    def fetch():
        item = ds[i][column]
        return item["bytes"] if item.get("bytes") is not None else item["path"]

    return _Lazy(fetch, f"row {i}")


def _hf_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    datasets = require("datasets", extra="hf", purpose="hf: data")
    names = list(features)

    def pick(given, kind, param, fallbacks):
        if given is not None:
            if given not in features:
                raise ValueError(f"{param}={given!r}: no such column; the columns are {', '.join(names)}")
            return given
        for n in names:
            if isinstance(features[n], kind):
                return n
        for n in fallbacks:
            if n in features:
                return n
        raise ValueError(f"cannot tell which column holds the {param.split('_')[0]}s; the columns are "
                         f"{', '.join(names)}: name it with {param}=NAME")

    return (pick(image_column, datasets.Image, "image_column", ("image", "img")),
            pick(label_column, datasets.ClassLabel, "label_column", ("label", "labels")))


def _list_hf(path: Path, image_column: str | None, label_column: str | None):
    """``(openers, label name per item, class names, rows without a label)`` of a saved HF data set
    (images read lazily)."""
    datasets = require("datasets", extra="hf", purpose="hf: data")
    if not path.exists():
        raise FileNotFoundError(f"hf:{path}: no such folder (save a data set there with save_to_disk)")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"hf:{path}: not a data set saved with save_to_disk ({exc})") from None
    parts = list(ds.values()) if isinstance(ds, datasets.DatasetDict) else [ds]
    img_col, lab_col = _hf_columns(parts[0].features, image_column, label_column)
    feature = parts[0].features[lab_col]
    named = isinstance(feature, datasets.ClassLabel)
    openers, labels, unlabelled = [], [], 0
    for part in parts:
        if not isinstance(part.features.get(img_col), datasets.Image):
            raise ValueError(f"image_column={img_col!r} is not an image column ({part.features.get(img_col)})")
        raw = part.cast_column(img_col, datasets.Image(decode=False))
        # rows without a label (None, or ClassLabel's -1) are left out: they belong to no class
        rows = [(i, y) for i, y in enumerate(raw[lab_col])
                if y is not None and not (named and not 0 <= y < len(feature.names))]
        openers += [_open_row(raw, i, img_col) for i, _ in rows]
        labels += [y for _, y in rows]
        unlabelled += len(raw) - len(rows)
    names = [feature.names[y] if named else str(y) for y in labels]
    classes = tuple(feature.names) if named else tuple(str(v) for v in sorted(set(labels)))
    return openers, names, classes, unlabelled


def _listing(name: str, image_column: str | None, label_column: str | None):
    """``(openers, label names, class names, notes)`` of a user set, nothing decoded."""
    kind, _, raw_path = name.partition(":")
    if kind not in ("imagefolder", "hf") or not raw_path:
        raise ValueError(f"unknown user data {name!r}: use imagefolder:PATH or hf:PATH")
    path = Path(raw_path).expanduser()
    notes: list[str] = []
    if kind == "hf":
        openers, names, classes, unlabelled = _list_hf(path, image_column, label_column)
        if unlabelled:
            notes.append(f"{name}: {unlabelled} row(s) without a label (None or -1 in the label column) left out")
    else:
        files, ignored = _list_folder(path)
        openers, names = [_open_file(f) for f, _ in files], [c for _, c in files]
        classes = tuple(sorted(set(names)))
        if ignored:
            notes.append(f"{name}: {ignored} files without an image extension were ignored")
    present = set(names)
    if len(present) < 2:
        raise ValueError(f"{name}: the audit needs at least two classes, found {len(present)} "
                         f"({', '.join(sorted(present))})")
    empty = [c for c in classes if c not in present]
    if empty:
        notes.append(f"{name}: classes without images left out: {', '.join(empty)}")
    return openers, names, tuple(c for c in classes if c in present), notes


def count_user_images(name: str, *, image_column: str | None = None, label_column: str | None = None) -> dict:
    """Files per class name of an ``imagefolder:``/``hf:`` set, from the listing (nothing is decoded,
    so unreadable files still count)."""
    _, names, classes, _ = _listing(name, image_column, label_column)
    return {c: names.count(c) for c in classes}


# ----------------------------------------------------------------------------- decoding


def _to_array(pixels: torch.Tensor, image_size: int | None) -> np.ndarray:
    """One decoded image (uint8 ``(C, H, W)``, ``C`` in {1, 3}, as the tools read it) -> uint8
    ``(H, W)`` (grey) or ``(H, W, 3)``, resized and centre-cropped."""
    from PIL import Image

    im = tensor_to_pil(pixels)
    if image_size is not None and im.size != (image_size, image_size):
        w, h = im.size
        s = image_size / min(w, h)
        nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
    return np.asarray(im, dtype=np.uint8)


class _MixedSizes(ValueError):
    """Images of different sizes without ``image_size`` (raised, never skipped)."""


def _size_error(source: str, sizes) -> ValueError:
    shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:3])
    return _MixedSizes(
        f"{source}: the images differ in size (e.g. {shown} as width x height); pass image_size=N to resize "
        "(shorter side) and centre-crop them all to N x N (e.g. 64 for colour photos; larger is slower)"
    )


def _check_one_size(openers, names, *, per_class, source) -> None:
    """Without ``image_size`` every image must share one size. When only ``per_class`` images of a
    class are decoded, the headers of all are read first, so that whether a set is refused does not
    depend on which images the seed picks."""
    if per_class is None or max(Counter(names).values()) <= per_class:
        return  # every image is decoded, and the decode checks
    sizes = set()
    for opener in openers:
        hw = opener.upright_size()
        if hw is not None:
            sizes.add(hw)
            if len(sizes) > 1:
                raise _size_error(source, sizes)


def _decode(openers, names, classes, *, per_class, image_size, seed, enabled, source):
    """Decode up to ``per_class`` readable images of each class (all with None), in a seeded order,
    replacing unreadable files by the next ones. Returns ``(arrays, label names, failures, info)``."""
    rng = np.random.default_rng(seed)
    by_class = {c: [] for c in classes}
    for i, c in enumerate(names):
        by_class[c].append(i)
    total = sum(len(v) if per_class is None else min(per_class, len(v)) for v in by_class.values())
    arrays, kept, failures = [], [], []
    info = {"sizes": set(), "alpha": 0}
    bar = progress(total=total, enabled=enabled, desc="reading images", unit="img")
    for c, idx in by_class.items():
        order = idx if per_class is None else [idx[j] for j in rng.permutation(len(idx))]
        got = 0
        for i in order:
            if per_class is not None and got >= per_class:
                break
            try:
                loaded = openers[i].load()
                info["alpha"] += loaded.mode in ("RGBA", "LA", "PA")
                info["sizes"].add(tuple(loaded.pixels.shape[1:]))  # (upright: after the EXIF orientation)
                if image_size is None and len(info["sizes"]) > 1:
                    raise _size_error(source, info["sizes"])
                arrays.append(_to_array(loaded.pixels, image_size))
            except _MixedSizes:
                raise
            except Exception as exc:  # any decoder error: skip the file and count it
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            kept.append(c)
            got += 1
            bar.update(1)
    bar.close()
    return arrays, kept, failures, info


def _stack(arrays: list[np.ndarray], *, source: str, notes: list[str]) -> torch.Tensor:
    """uint8 arrays (grey ``(H, W)`` or colour ``(H, W, 3)``) -> ``(N, C, H, W)``; grey ones become
    colour when the set mixes them (with a note)."""
    grey = sum(a.ndim == 2 for a in arrays)
    if 0 < grey < len(arrays):
        notes.append(f"{source}: {grey} of {len(arrays)} images are grey and the rest colour: the grey ones were "
                     "converted to colour (grey copied into R, G and B; nothing is lost) so that every image has "
                     "3 channels")
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    t = torch.from_numpy(np.stack(arrays))
    return (t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)).contiguous()


def _stamp(path: Path) -> tuple:
    """(name, size, mtime) of every file under ``path``: the cache key of a loaded set."""
    out = []
    for dirpath, names in _walk(path, set()):
        for n in names:
            try:
                st = os.stat(os.path.join(dirpath, n))
            except OSError:
                continue
            out.append((os.path.join(dirpath, n), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


_CACHE: dict = {}


def load_user_images(name: str, *, image_size: int | None = None, image_column: str | None = None,
                     label_column: str | None = None, per_class: int | None = None, seed: int = 0,
                     progress_bar: bool = False) -> UserImages:
    """Read an ``imagefolder:PATH`` or ``hf:PATH`` set into memory (module docstring).

    Parameters
    ----------
    name : str
        ``"imagefolder:PATH"`` or ``"hf:PATH"``.
    image_size : int, optional
        Working size: every image is resized (shorter side) and centre-cropped to
        ``image_size``×``image_size``. None keeps the native size, which all images must share.
    image_column, label_column : str, optional
        Columns of an ``hf:`` set (default: detected from the features).
    per_class : int, optional
        Decode only this many readable images per class (a seeded random choice; unreadable files
        are replaced by the next ones), so a large set costs only what the audit uses. None: all.
    seed : int
        Seed of that choice.
    progress_bar : bool
        Show a bar while decoding.

    Returns
    -------
    UserImages
        The last set read is cached (keyed by the arguments and the files' names, sizes and times).

    Raises
    ------
    ValueError
        No class sub-folders, fewer than two classes, no readable image, mixed sizes without
        ``image_size``, unknown columns.
    """
    if image_size is not None and not 8 <= int(image_size) <= 1024:  # (the attacks' memory grows with its square)
        raise ValueError(f"image_size: must be from 8 to 1024, got {image_size}")
    path = Path(name.partition(":")[2]).expanduser()
    key = (name, image_size, image_column, label_column, per_class, seed, _stamp(path) if path.exists() else None)
    if key in _CACHE:
        return _CACHE[key]
    openers, names, classes, notes = _listing(name, image_column, label_column)
    if image_size is None:
        _check_one_size(openers, names, per_class=per_class, source=name)
    arrays, kept, failures, info = _decode(openers, names, classes, per_class=per_class, image_size=image_size,
                                           seed=seed, enabled=progress_bar, source=name)
    tried = len(arrays) + len(failures)
    if failures:
        notes.append(f"{name}: skipped {len(failures)} unreadable of {tried} images (first: {failures[0]})")
    if not arrays:
        raise ValueError(f"{name}: none of the {tried} image files could be read (first: {failures[0]})"
                         if failures else f"{name}: no images")
    if per_class is not None and len(arrays) < len(openers):
        notes.append(f"{name}: read {len(arrays)} of {len(openers)} images (at most {per_class} per class: what "
                     "the split needs; a seeded random choice)")
    if info["alpha"]:
        notes.append(f"{name}: the transparency of {info['alpha']} images was dropped (the audit works on R, G, B)")
    sizes = tuple(sorted(info["sizes"])[:5])
    if image_size is not None and sizes != ((image_size, image_size),):
        notes.append(f"{name}: images resized (shorter side) and centre-cropped to {image_size}x{image_size}")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in kept], dtype=torch.int64)
    out = UserImages(_stack(arrays, source=name, notes=notes), y, classes, name, sizes, notes)
    _CACHE.clear()
    _CACHE[key] = out
    return out


def fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' bytes and shapes (what the recommend state file checks)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()
