"""The shared ground of the folder tools (:mod:`visualmixer.tools.folders`): the options that
decide the output bytes, the run summary, the checks on folders and manifest paths, the listing
of a source tree and the naming of outputs.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualmixer.tools import imageio as vio
from visualmixer.tools.distributed import check_address
from visualmixer.tools.errors import first_few

__all__ = [
    "FolderOptions",
    "RunSummary",
    "check_folders",
    "default_manifest_path",
    "find_manifest",
    "list_images",
    "output_names",
    "recorded_outputs",
]

TOOL_VERSION = "visualmixer-tools-1"
_LOSSLESS_SAME = {".png": "png", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff", ".webp": "webp"}
JPEG_EXT = {".jpg", ".jpeg", ".jpe", ".jfif"}


@dataclass(frozen=True)
class FolderOptions:
    """The options that decide the output bytes (recorded in the manifest; a resume must match).

    Parameters
    ----------
    target_vfe : float
        Requested VFE τ in [0, 1] (docs/method.md).
    region : int, optional
        Region side in pixels; default: :func:`visualmixer.default_region` of each image's size.
    channel_order : bool
        Also permute the channel order per region (docs/method.md).
    format : {"png", "same"}
        ``"png"``: lossless PNG for every output. ``"same"``: keep the input's format where it can be
        written (JPEG is re-encoded lossy: restore is then no longer exact; GIF and other formats
        become PNG).
    rename : bool
        Replace file names by opaque keyed ids.
    max_pixels : int, optional
        Decompression-bomb limit (declared width × height); default Pillow's.
    compress_level : int
        PNG zlib level (0-9).
    mix : int, optional
        Mix regions across groups of ``mix`` images of one class (:mod:`visualmixer.tools.mixrun`,
        :mod:`visualmixer.core.mixing`); the classes are SRC's first-level sub-folders. PNG only.
    grouping : {"random", "similar"}
        How a class's images are put in groups when ``mix`` is set.
    mix_share : float
        With ``mix``: the share of region positions exchanged in each group, in (0, 1]
        (:func:`visualmixer.core.mixing.mix`'s ``share``; default 1, every position).
    mix_balanced : bool
        With ``mix``: every collage holds each group member's regions at the same number of
        positions (:func:`visualmixer.core.mixing.mix`'s ``balanced``; default False).
    """

    target_vfe: float = 0.5
    region: int | None = None
    channel_order: bool = True
    format: str = "png"
    rename: bool = False
    max_pixels: int | None = None
    compress_level: int = 6
    mix: int | None = None
    grouping: str = "random"
    mix_share: float = 1.0
    mix_balanced: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.target_vfe) <= 1.0:
            raise ValueError(f"target_vfe: expected a number in [0, 1], got {self.target_vfe}")
        if self.region is not None and int(self.region) < 1:
            raise ValueError(f"region: expected a positive integer, got {self.region}")
        if self.format not in ("png", "same"):
            raise ValueError(f"format: expected 'png' or 'same', got {self.format!r}")
        if self.max_pixels is not None and int(self.max_pixels) < 1:
            raise ValueError(f"max_pixels: expected a positive integer, got {self.max_pixels}")
        if not 0 <= int(self.compress_level) <= 9:
            raise ValueError(f"compress_level: expected 0..9, got {self.compress_level}")
        if self.grouping not in ("random", "similar"):
            raise ValueError(f"grouping: expected 'random' or 'similar', got {self.grouping!r}")
        from visualmixer.core.mixing import check_balanced, check_share

        check_share(self.mix_share, "mix_share")
        check_balanced(self.mix_balanced, "mix_balanced")
        if self.mix is None:
            if self.grouping != "random":
                raise ValueError(f"grouping={self.grouping!r} needs mix=K (images per mixing group)")
            if self.mix_share != 1.0:
                raise ValueError(f"mix_share={self.mix_share} needs mix=K (images per mixing group)")
            if self.mix_balanced:
                raise ValueError("mix_balanced=True needs mix=K (images per mixing group)")
            return
        if isinstance(self.mix, bool) or int(self.mix) < 2:
            raise ValueError(f"mix: expected an integer >= 2 (images per mixing group), got {self.mix}")
        if self.format != "png":
            raise ValueError("mix=K writes PNG only (format='png'): a lossy output would spoil the "
                             "exact restore of every image of its group")

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_vfe": float(self.target_vfe),
            "region": None if self.region is None else int(self.region),
            "channel_order": bool(self.channel_order),
            "format": self.format,
            "rename": bool(self.rename),
            "max_pixels": None if self.max_pixels is None else int(self.max_pixels),
            "compress_level": int(self.compress_level),
            **self._mix_dict(),
        }

    def _mix_dict(self) -> dict[str, Any]:
        """Mixing options; absent for plain runs, so their manifests stay what they were."""
        if self.mix is None:
            return {}
        from visualmixer.core.mixing import MIX_VERSION

        extra = {} if self.mix_share == 1.0 else {"mix_share": float(self.mix_share)}  # as before the share
        extra.update({"mix_balanced": True} if self.mix_balanced else {})  # and before balanced mixing
        return {"mix": int(self.mix), "grouping": self.grouping, "mix_version": MIX_VERSION, **extra}


@dataclass
class RunSummary:
    """What a folder run did.

    Attributes
    ----------
    done : int
        Outputs written by this run.
    already : int
        Outputs found complete from an earlier run (resume) and left alone.
    skipped, failed : int
        Images not written; ``problems`` lists ``(id, status, reason)`` for each.
    ignored : int
        Files without an image extension (not copied).
    manifest : pathlib.Path
    seconds : float
    warnings : list of str
    never : int
        Restore only: images of the run that obfuscate never finished (an interrupted run).
    whole : bool
        Restore: every image of the run must come back, so images ``skipped`` (obfuscate failed
        or skipped them) or ``never`` obfuscated make the exit code 1 as failures do.
    """

    done: int = 0
    already: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    manifest: Path | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    never: int = 0
    whole: bool = False

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (and, with ``whole``, every image came back), else 1."""
        return 1 if self.failed or (self.whole and (self.skipped or self.never)) else 0


# -- paths --------------------------------------------------------------------------------------
def resolved_path(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def is_inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_folders(src: Path, dst: Path, *, src_label: str = "SRC", dst_label: str = "DST") -> None:
    """Refuse a destination equal to, inside, or containing the source (resolved paths)."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src_label} {src} is not a folder")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst_label} {dst} is a file, not a folder: give a new or existing folder")
    if is_inside(dst, src):
        raise ValueError(
            f"{dst_label} {dst} is {'the same as' if dst == src else 'inside'} {src_label} {src}: "
            f"choose a {dst_label} outside {src_label} (nothing is ever written inside {src_label})"
        )
    if is_inside(src, dst):
        raise ValueError(f"{src_label} {src} is inside {dst_label} {dst}: choose a separate {dst_label}")


def default_manifest_path(key_path: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``KEYDIR/KEYNAME.DSTNAME-<8 hex of DST's absolute path>.manifest.jsonl``."""
    key_path = Path(key_path)
    dst_abs = resolved_path(dst)
    tag = hashlib.sha256(str(dst_abs).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return key_path.with_name(f"{key_path.name}.{dst_abs.name}-{tag}.manifest.jsonl")


def find_manifest(key_path: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Find the manifest of ``dst`` next to the key (exact default name, else a unique match)."""
    from visualmixer.tools.manifest import Manifest

    exact = default_manifest_path(key_path, dst)
    if exact.exists():
        return exact
    key_path = Path(key_path)
    name = resolved_path(dst).name
    matches = []
    for cand in sorted(key_path.parent.glob(f"{key_path.name}.*.manifest.jsonl")):
        try:
            head = Manifest.read(cand).header
        except (OSError, ValueError):
            continue
        if head.get("dst_name") == name:
            matches.append(cand)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileNotFoundError(_no_manifest_message(key_path, dst, exact, name))
    raise ValueError(
        f"several manifests next to {key_path} match {name!r}: "
        + ", ".join(m.name for m in matches) + "; pass manifest=PATH"
    )


def _no_manifest_message(key_path: Path, dst, exact: Path, name: str) -> str:
    """Why no manifest was found beside ``key_path``: maybe the wrong key; where it usually is."""
    from visualmixer.tools.manifest import Manifest

    others = []
    for cand in sorted(key_path.parent.glob(f"*.{name}-*.manifest.jsonl")):
        try:
            if Manifest.read(cand).header.get("dst_name") == name:
                others.append(cand.name)
        except (OSError, ValueError):
            continue
    hint = ""
    if others:
        hint = (f"; {', '.join(others[:3])} beside it belongs to this DST (made with the key "
                f"{others[0].split('.' + name + '-')[0]}?)")
    return (
        f"no manifest for {dst} next to the key {key_path} (looked for {exact.name}){hint}: "
        "is this the key that made the run? The manifest is written beside the key file that "
        "made it, as KEYNAME.<DST name>-<8 hex>.manifest.jsonl (obfuscate prints its path on its "
        "summary line); pass that key, or manifest=PATH"
    )


def list_images(src: str | os.PathLike, *, linked: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Walk ``src`` (sorted, symlinked folders not followed) into ``(image_ids, ignored)``.

    Image ids are POSIX relative paths of files with an image extension; ``ignored`` lists the
    other files (never copied). Temporary files of this package are not listed at all. The links
    to folders that were not followed are appended to ``linked`` when it is given.
    """
    root = Path(src)
    ids: list[str] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
        if linked is not None:
            linked += [prefix + name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        for name in sorted(filenames):
            if name.endswith(vio.TEMP_SUFFIX):
                continue
            (ids if vio.is_image_path(name) else ignored).append(prefix + name)
    return ids, ignored


def out_format(image_id: str, fmt: str) -> str:
    ext = posixpath.splitext(image_id)[1].lower()
    if fmt == "same":
        if ext in JPEG_EXT:
            return "jpeg"
        return _LOSSLESS_SAME.get(ext, "png")
    return "png"


def natural_name(image_id: str, fmt: str = "png") -> str:
    """The output path of ``image_id`` where no other id wants it (:func:`output_names`): the
    name kept when the output keeps its format (``fmt="same"``, or a ``.png`` of any case),
    else the stem with ``.png``."""
    fmt_i = out_format(image_id, fmt)
    stem, ext = posixpath.splitext(image_id)
    if fmt == "same" and fmt_i != "png" or (fmt_i == "png" and ext.lower() == ".png"):
        return image_id
    return stem + ".png"


def output_names(
    ids: Sequence[str], *, fmt: str = "png", rename: bool = False, key: Any = None,
    keep: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map image ids to output paths (relative, POSIX) deterministically, every path distinct.

    ``fmt="png"``: ``dir/NAME.EXT`` → ``dir/NAME.png``; when two ids of one folder would collide,
    those whose extension is not ``.png`` keep it: ``dir/NAME.EXT.png``. ``fmt="same"``: the name is
    kept when the format can be written, else as for PNG. ``rename=True`` (needs ``key``): the file
    name becomes 24 hex digits of ``key.subkey(id, "rename")`` plus the output extension. A name
    that still collides (``a.jpg`` beside ``a.png`` and ``a.jpg.png``) gets a number before its
    extension (``a.jpg-2.png``): :func:`distinct_names`, decided from the ids alone, so a resume
    names every output as the run before it did. ``keep`` (id → path: the outputs a run's manifest
    records) fixes those ids' paths: an image added later whose name would take a recorded output's
    (``a.png`` added beside a finished ``a.bmp`` written as ``a.png``) gets another, never the
    recorded one, which may be all that is left of an image that has left SRC.
    """
    if rename and key is None:
        raise ValueError("rename=True needs the key (names are keyed so they reveal nothing)")
    first = {image_id: natural_name(image_id, fmt) for image_id in ids}
    counts = Counter(v.lower() for v in first.values())
    out: dict[str, str] = {}
    for image_id, cand in first.items():
        d, name = posixpath.split(image_id)
        if counts[cand.lower()] > 1 and cand != image_id:
            cand = posixpath.join(d, name + ".png")
        if rename:
            ext = posixpath.splitext(cand)[1]
            cand = posixpath.join(d, key.subkey(image_id, purpose="rename").hex()[:24] + ext)
        out[image_id] = cand
    return distinct_names(out, keep=keep)


def distinct_names(wanted: dict[str, str], *, keep: Mapping[str, str] | None = None) -> dict[str, str]:
    """``wanted`` (id → output path) with every path distinct, also ignoring case.

    A path equal to its own id is kept; of the others, in sorted id order, the first to ask for a
    path gets it and a later one gets ``STEM-2.EXT`` (``-3``, ...), never a path another id asks
    for. The ids decide, so every run over the same ids gives the same names; ids without a
    collision keep the names earlier versions gave them. An id in ``keep`` gets its path there
    before all of these (recorded outputs keep their names).
    """
    out = {i: p for i, p in (keep or {}).items() if i in wanted}
    recorded = {p.lower() for p in out.values()}
    out.update((i, v) for i, v in wanted.items() if v == i and i not in out and v.lower() not in recorded)
    asked = {v.lower() for v in wanted.values()} | recorded
    taken = {v.lower() for v in out.values()}
    for image_id in sorted(i for i in wanted if i not in out):
        cand = wanted[image_id]
        if cand.lower() in taken:
            stem, ext = posixpath.splitext(cand)
            n = 2
            while f"{stem}-{n}{ext}".lower() in taken | asked:
                n += 1
            cand = f"{stem}-{n}{ext}"
        taken.add(cand.lower())
        out[image_id] = cand
    return {i: out[i] for i in wanted}


def check_parallel(workers: int, dask: str | None, batch_size: int) -> None:
    if int(workers) < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    if dask is not None:
        check_address(dask)


def warner(summary: RunSummary, warn: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(msg: str) -> None:
        summary.warnings.append(msg)
        if warn is not None:
            warn(msg)

    return say


def note_lock_and_damage(lock: Any, man: Any, say: Callable[[str], None]) -> None:
    if lock.stale:
        say(f"an earlier {lock.stale.get('command', 'run')} (PID {lock.stale.get('pid')}, started "
            f"{lock.stale.get('started')}) ended without finishing; resuming after it")
    if man is None:
        return
    sigs = set(man.damaged_sigs)
    for numbers, what, then in (
            ([n for n in man.damaged if n not in sigs], "damaged line(s)",
             "the images they described are done again"),
            (sorted(sigs), "damaged line(s) of output signatures",
             "they held output signatures only: nothing is done again, the outputs they named "
             "are hashed instead")):
        if numbers:
            lines = ", ".join(str(n) for n in numbers[:5]) + (" ..." if len(numbers) > 5 else "")
            say(f"{man.path}: {len(numbers)} {what} skipped (line {lines}; power lost while "
                f"writing?); {then}")


def manifest_location(manifest, key_path, src_p: Path, dst_p: Path) -> Path:
    if manifest is None:
        if key_path is None:
            raise ValueError("give key_path (the manifest goes next to the key) or manifest")
        man_path = default_manifest_path(key_path, dst_p)
    else:
        man_path = Path(manifest)
    man_abs = resolved_path(man_path)
    if man_abs.is_dir():
        raise ValueError(f"manifest: {man_path} is a folder; give the manifest a file path (or leave it out: "
                         "it then goes next to the key)")
    if key_path is not None and man_abs == resolved_path(key_path):
        raise ValueError(f"manifest: {man_path} is the key file: the manifest needs a path of its own "
                         "(by default it goes next to the key)")
    for folder, label in ((src_p, "SRC"), (dst_p, "DST")):
        if is_inside(man_abs, folder):
            raise ValueError(f"manifest: {man_path} is inside {label} {folder}: the manifest is "
                             "private and must live outside both folders (e.g. next to the key)")
    return man_path


def recorded_ids(man) -> list[str]:
    """The images a run's manifest records (finished, failed, skipped or pending), in record order.

    Output and restored names are decided over these and the current ones together: an image
    that failed, is pending or has left SRC keeps its name, so no other image takes it over."""
    return [i for i, r in man.records.items() if i and r.get("t") in ("pending", "done", "failed", "skipped")]


def recorded_outputs(man) -> dict[str, str]:
    """The output path of every image whose latest record is ``pending`` or ``done``: a later run
    keeps these names (:func:`output_names`'s ``keep``), so no image added since takes one over."""
    return {i: r["out"] for i, r in man.records.items()
            if i and r.get("t") in ("pending", "done") and isinstance(r.get("out"), str)}


def listed_images(man) -> int | None:
    """How many images the run's source held at its latest start (``None``: not recorded)."""
    listing = man.records.get("")
    if listing is not None and listing.get("t") == "listing":
        return int(listing["images"])
    count = man.header.get("images")
    return None if count is None else int(count)


def check_restore_target(out_p: Path, man) -> None:
    """Refuse a RESTORED folder holding files this run would not write (``overwrite`` allows it).

    An empty folder, and one made by an earlier restore of the same run (a resume), pass.
    """
    if not out_p.is_dir():
        return
    ids = recorded_ids(man)
    expected = set(output_names(ids, fmt="png").values())
    expected |= set(output_names([r["id"] for r in man.done()], fmt="png").values())
    foreign = []
    for dirpath, dirnames, filenames in os.walk(out_p):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(out_p).as_posix()
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not name.endswith(vio.TEMP_SUFFIX) and rel not in expected:
                foreign.append(rel)
    if foreign:
        shown = first_few(foreign)
        raise FileExistsError(
            f"RESTORED {out_p} is not empty: it holds {len(foreign)} file(s) that this restore does "
            f"not write ({shown}), so restored files would mix with them; restore into a new or empty "
            "folder, or pass overwrite=True to write into it anyway (files of the same name are replaced)"
        )
