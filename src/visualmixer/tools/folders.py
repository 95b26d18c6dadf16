"""Obfuscating and restoring whole folders of images: the library behind ``visualmixer obfuscate``
and ``visualmixer restore``.

:func:`obfuscate_folder` mirrors the source tree into the destination. Each image's id is its path
relative to the source folder (POSIX separators, e.g. ``"cats/001.jpg"``); its output is a PNG of
the obfuscated pixels with no metadata (:mod:`visualmixer.tools.imageio`), at the same relative place, named
``NAME.png`` (``NAME.EXT.png`` when two inputs of one folder would otherwise share a name) or, with
``rename=True``, an opaque keyed name (file names such as ``jane_doe.jpg`` leak). A private
:class:`~visualmixer.tools.manifest.Manifest` records the options, each image's plan, achieved VFE, output
name and status; it lives next to the key (or where the caller says), never in the destination.

Guarantees
----------
- Nothing is ever written inside the source folder; a destination equal to it, inside it, or
  containing it is refused.
- Existing outputs are not replaced unless ``overwrite=True``; every output is written to a temporary
  name and renamed, so a crash leaves no half files.
- Resume: rerunning the same command after an interruption (Ctrl-C, ``kill -9``) skips the images
  already complete and finishes the rest; the final destination is byte-identical to an uninterrupted
  run. Images are processed in fixed chunks of the sorted id list (``batch_size``) and a chunk is
  always computed whole, with one intra-op thread, so every image's bytes are the same however the
  run is split, resumed or distributed.
- Bad files (empty, truncated, not an image, unsupported mode) are recorded as *failed* with a
  one-line reason; images over the decompression-bomb limit are *skipped* with a reason; the run
  goes on. Files without an image extension are ignored (never copied: they could leak).
- Memory stays flat: source bytes are read only for the chunks in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualmixer.tools import imageio as vio
from visualmixer.tools.distributed import check_address, map_unordered

__all__ = [
    "FolderOptions",
    "RunSummary",
    "default_manifest_path",
    "find_manifest",
    "list_images",
    "obfuscate_folder",
    "output_names",
    "restore_folder",
]

_TOOL_VERSION = "visualmixer-tools-1"
_LOSSLESS_SAME = {".png": "png", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff", ".webp": "webp"}
_JPEG_EXT = {".jpg", ".jpeg", ".jpe", ".jfif"}


@dataclass(frozen=True)
class FolderOptions:
    """The options that decide the output bytes (recorded in the manifest; a resume must match).

    Parameters
    ----------
    target_vfe : float
        Requested VFE τ in [0, 1] (SPEC §5.3).
    region : int, optional
        Region side in pixels; default: :func:`visualmixer.default_region` of each image's size.
    channel_order : bool
        Also permute the channel order per region (SPEC §5.5).
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
    """

    target_vfe: float = 0.5
    region: int | None = None
    channel_order: bool = True
    format: str = "png"
    rename: bool = False
    max_pixels: int | None = None
    compress_level: int = 6

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.target_vfe) <= 1.0:
            raise ValueError(f"--target-vfe: expected a number in [0, 1], got {self.target_vfe}")
        if self.region is not None and int(self.region) < 1:
            raise ValueError(f"--region: expected a positive integer, got {self.region}")
        if self.format not in ("png", "same"):
            raise ValueError(f"--format: expected 'png' or 'same', got {self.format!r}")
        if self.max_pixels is not None and int(self.max_pixels) < 1:
            raise ValueError(f"--max-pixels: expected a positive integer, got {self.max_pixels}")
        if not 0 <= int(self.compress_level) <= 9:
            raise ValueError(f"compress_level: expected 0..9, got {self.compress_level}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_vfe": float(self.target_vfe),
            "region": None if self.region is None else int(self.region),
            "channel_order": bool(self.channel_order),
            "format": self.format,
            "rename": bool(self.rename),
            "max_pixels": None if self.max_pixels is None else int(self.max_pixels),
            "compress_level": int(self.compress_level),
        }


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

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0


# -- paths --------------------------------------------------------------------------------------
def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_folders(src: Path, dst: Path, *, src_label: str = "SRC", dst_label: str = "DST") -> None:
    """Refuse a destination equal to, inside, or containing the source (resolved paths)."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src_label} {src} is not a folder")
    if _inside(dst, src):
        raise ValueError(
            f"{dst_label} {dst} is {'the same as' if dst == src else 'inside'} {src_label} {src}: "
            f"choose a {dst_label} outside {src_label} (nothing is ever written inside {src_label})"
        )
    if _inside(src, dst):
        raise ValueError(f"{src_label} {src} is inside {dst_label} {dst}: choose a separate {dst_label}")


def default_manifest_path(key_path: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``KEYDIR/KEYNAME.DSTNAME-<8 hex of DST's absolute path>.manifest.jsonl``."""
    key_path = Path(key_path)
    dst_abs = _resolved(dst)
    tag = hashlib.sha256(str(dst_abs).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return key_path.with_name(f"{key_path.name}.{dst_abs.name}-{tag}.manifest.jsonl")


def find_manifest(key_path: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Find the manifest of ``dst`` next to the key (exact default name, else a unique match)."""
    from visualmixer.tools.manifest import Manifest

    exact = default_manifest_path(key_path, dst)
    if exact.exists():
        return exact
    key_path = Path(key_path)
    name = _resolved(dst).name
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
        raise FileNotFoundError(
            f"no manifest for {dst} next to the key {key_path} (looked for {exact.name}); "
            "pass --manifest PATH"
        )
    raise ValueError(
        f"several manifests next to {key_path} match {name!r}: "
        + ", ".join(m.name for m in matches) + "; pass --manifest PATH"
    )


def list_images(src: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Walk ``src`` (sorted, symlinked folders not followed) into ``(image_ids, ignored)``.

    Image ids are POSIX relative paths of files with an image extension; ``ignored`` lists the
    other files (never copied). Temporary files of this package are not listed at all.
    """
    root = Path(src)
    ids: list[str] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if name.endswith(vio.TEMP_SUFFIX):
                continue
            rel = name if rel_dir == "." else posixpath.join(Path(rel_dir).as_posix(), name)
            (ids if vio.is_image_path(name) else ignored).append(rel)
    return ids, ignored


def _out_format(image_id: str, fmt: str) -> str:
    ext = posixpath.splitext(image_id)[1].lower()
    if fmt == "same":
        if ext in _JPEG_EXT:
            return "jpeg"
        return _LOSSLESS_SAME.get(ext, "png")
    return "png"


def output_names(
    ids: Sequence[str], *, fmt: str = "png", rename: bool = False, key: Any = None
) -> dict[str, str]:
    """Map image ids to output paths (relative, POSIX) deterministically.

    ``fmt="png"``: ``dir/NAME.EXT`` → ``dir/NAME.png``; when two ids of one folder would collide,
    those whose extension is not ``.png`` keep it: ``dir/NAME.EXT.png``. ``fmt="same"``: the name is
    kept when the format can be written, else as for PNG. ``rename=True`` (needs ``key``): the file
    name becomes 24 hex digits of ``key.subkey(id, "rename")`` plus the output extension.
    """
    if rename and key is None:
        raise ValueError("rename=True needs the key (names are keyed so they reveal nothing)")
    first: dict[str, str] = {}
    for image_id in ids:
        d, name = posixpath.split(image_id)
        fmt_i = _out_format(image_id, fmt)
        stem, ext = posixpath.splitext(name)
        if fmt == "same" and fmt_i != "png" or (fmt_i == "png" and ext.lower() == ".png"):
            out_name = name
        else:
            out_name = stem + ".png"
        first[image_id] = posixpath.join(d, out_name)
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
    return out


# -- the per-chunk work (runs in worker processes) -------------------------------------------------
def _pixel_check(key: Any, image_id: str, pixels) -> str:
    mac = hmac.new(key.subkey(image_id, purpose="tools-pixel-check"), digestmod=hashlib.sha256)
    mac.update(repr(tuple(pixels.shape)).encode())
    mac.update(pixels.contiguous().numpy().tobytes())
    return mac.hexdigest()[:32]


class _OneThread:
    """Run torch with one intra-op thread (same float reduction order in every back end)."""

    def __enter__(self):
        import torch

        self._n = torch.get_num_threads()
        if self._n != 1:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        if self._n != 1:
            torch.set_num_threads(self._n)


def _obfuscate_chunk(items: list[tuple[str, str, bytes | None]], key: Any, opts: dict) -> list[dict]:
    """Decode, obfuscate (same-size images in one call), encode. Returns one dict per item.

    ``items`` are ``(image id, output format, file bytes or None)``.
    """
    import torch

    from visualmixer.core.mixer import obfuscate

    results: dict[str, dict] = {}
    decoded: dict[str, Any] = {}
    out_formats = {image_id: fmt for image_id, fmt, _data in items}
    for image_id, _fmt, data in items:
        if data is None:
            results[image_id] = {"id": image_id, "t": "failed", "reason": "cannot read file"}
            continue
        try:
            loaded = vio.decode_image(data, max_pixels=opts["max_pixels"])
        except vio.ImageReadError as exc:
            status = "skipped" if "decompression-bomb" in str(exc) else "failed"
            results[image_id] = {"id": image_id, "t": status, "reason": str(exc)}
            continue
        decoded[image_id] = loaded
    groups: dict[tuple, list[str]] = {}
    for image_id, loaded in decoded.items():
        groups.setdefault(tuple(loaded.pixels.shape), []).append(image_id)
    with _OneThread():
        for _shape, ids in groups.items():
            batch = torch.stack([decoded[i].pixels for i in ids])
            try:
                res = obfuscate(
                    batch, key=key, ids=list(ids), target_vfe=opts["target_vfe"],
                    region=opts["region"], channel_order=opts["channel_order"],
                )
            except Exception as exc:  # noqa: BLE001 - reported per file, the run goes on
                reason = f"obfuscation failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                for i in ids:
                    results[i] = {"id": i, "t": "failed", "reason": reason}
                continue
            for n, image_id in enumerate(ids):
                loaded = decoded[image_id]
                out_fmt = out_formats[image_id]
                data = vio.encode_image(
                    res.images[n], out_fmt, compress_level=opts["compress_level"]
                )
                results[image_id] = {
                    "id": image_id,
                    "t": "done",
                    "vfe": round(float(res.vfe[n]), 6),
                    "plan": res.plans[n].to_dict(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "check": _pixel_check(key, image_id, loaded.pixels),
                    "shape": list(loaded.pixels.shape),
                    "src_format": loaded.format,
                    "src_mode": loaded.mode,
                    "conversions": loaded.conversions,
                    "out_format": out_fmt,
                    "data": data,
                }
    return [results[i] for i, _o, _d in items]


def _restore_chunk(items: list[tuple[str, dict, bytes | None]], key: Any, opts: dict) -> list[dict]:
    """Decode obfuscated outputs, restore them (same-size images in one call), encode PNG."""
    import torch

    from visualmixer.core.mixer import Plans, restore

    results: dict[str, dict] = {}
    decoded: dict[str, Any] = {}
    for image_id, rec, data in items:
        if data is None:
            results[image_id] = {"id": image_id, "t": "failed", "reason": f"{rec['out']} is missing"}
            continue
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            results[image_id] = {
                "id": image_id, "t": "failed",
                "reason": f"{rec['out']} changed since it was written (sha256 differs); cannot restore",
            }
            continue
        try:
            loaded = vio.decode_image(data, max_pixels=None)
        except vio.ImageReadError as exc:
            results[image_id] = {"id": image_id, "t": "failed", "reason": str(exc)}
            continue
        decoded[image_id] = loaded.pixels
    recs = {i: r for i, r, _d in items}
    groups: dict[tuple, list[str]] = {}
    for image_id, px in decoded.items():
        groups.setdefault(tuple(px.shape), []).append(image_id)
    with _OneThread():
        for _shape, ids in groups.items():
            batch = torch.stack([decoded[i] for i in ids])
            try:
                plans = Plans.cat([Plans.from_dict(recs[i]["plan"]) for i in ids])
                orig = restore(batch, plans, key=key, ids=list(ids))
            except Exception as exc:  # noqa: BLE001
                reason = f"restore failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                for i in ids:
                    results[i] = {"id": i, "t": "failed", "reason": reason}
                continue
            for n, image_id in enumerate(ids):
                exact = _pixel_check(key, image_id, orig[n]) == recs[image_id].get("check")
                lossy = recs[image_id].get("out_format") == "jpeg"
                if not exact and not lossy:
                    results[image_id] = {
                        "id": image_id, "t": "failed",
                        "reason": "restored pixels do not match the original (wrong key or manifest?)",
                    }
                    continue
                results[image_id] = {
                    "id": image_id, "t": "done", "exact": exact,
                    "data": vio.encode_image(orig[n], "png", compress_level=opts["compress_level"]),
                }
    return [results[i] for i, _r, _d in items]


def _check_parallel(workers: int, dask: str | None, batch_size: int) -> None:
    if int(workers) < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {workers}")
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {batch_size}")
    if dask is not None:
        check_address(dask)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=not enabled, dynamic_ncols=True,
                smoothing=0.1)


# -- obfuscate ------------------------------------------------------------------------------------
def obfuscate_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: Any,
    *,
    key_path: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    options: FolderOptions | None = None,
    overwrite: bool = False,
    workers: int = 1,
    dask: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> RunSummary:
    """Obfuscate every image under ``src`` into a mirrored tree under ``dst`` (module docstring).

    Parameters
    ----------
    src, dst : str or path-like
        Source folder (read only) and destination folder (created).
    key : visualmixer.Key
        Master key.
    key_path : path-like, optional
        Where the key file is; the manifest goes next to it unless ``manifest`` is given.
    manifest : path-like, optional
        Manifest path (must not be inside ``src`` or ``dst``).
    options : FolderOptions
        Output-deciding options.
    overwrite : bool
        Start over: replace existing outputs and the manifest.
    workers : int
        Worker processes (1: this process). With ``dask``, the local cluster's worker count.
    dask : str, optional
        ``"local"`` or ``"tcp://HOST:PORT"`` (:mod:`visualmixer.tools.distributed`).
    batch_size : int
        Images per chunk (a chunk is one job; same-size images of a chunk share one
        :func:`visualmixer.obfuscate` call). Part of what decides the output bytes only through
        the float arithmetic of one batched call; the tools keep it fixed per destination.
    progress : bool
        Show a progress bar (images/s, ETA) on stderr.
    warn : callable, optional
        Called with each warning line (default: collected in the summary only).

    Returns
    -------
    RunSummary
    """
    from visualmixer.tools.manifest import Manifest

    t0 = time.perf_counter()
    options = options or FolderOptions()
    _check_parallel(workers, dask, batch_size)
    src_p, dst_p = _resolved(src), _resolved(dst)
    check_folders(src_p, dst_p)
    if manifest is None:
        if key_path is None:
            raise ValueError("give key_path (the manifest goes next to the key) or manifest")
        man_path = default_manifest_path(key_path, dst_p)
    else:
        man_path = Path(manifest)
    man_abs = _resolved(man_path)
    for folder, label in ((src_p, "SRC"), (dst_p, "DST")):
        if _inside(man_abs, folder):
            raise ValueError(f"--manifest {man_path} is inside {label} {folder}: the manifest is "
                             "private and must live outside both folders (e.g. next to the key)")
    summary = RunSummary(manifest=man_path)

    def _warn(msg: str) -> None:
        summary.warnings.append(msg)
        if warn is not None:
            warn(msg)

    ids, ignored = list_images(src_p)
    summary.ignored = len(ignored)
    if options.format == "same" and any(posixpath.splitext(i)[1].lower() in _JPEG_EXT for i in ids):
        _warn("--format same: JPEG inputs are written as JPEG again (lossy), so restore cannot give "
              "the exact pixels back for them; use --format png (default) for exact restore")
    header = {
        "tool": _TOOL_VERSION,
        "command": "obfuscate",
        "src": str(src_p),
        "dst": str(dst_p),
        "dst_name": dst_p.name,
        "key_fingerprint": key.fingerprint,
        "options": options.as_dict(),
        "batch_size": int(batch_size),
    }
    if man_path.exists() and not overwrite:
        man = Manifest.open(man_path)
        old = man.header
        for field_name in ("options", "key_fingerprint", "batch_size", "src"):
            if old.get(field_name) != header[field_name]:
                what = {"key_fingerprint": "a different key", "src": f"SRC {old.get('src')}"}.get(
                    field_name, f"different {field_name} {old.get(field_name)}")
                raise ValueError(
                    f"{man_path} records a run into {old.get('dst')} with {what}; rerun with the "
                    "same options to resume, pass --overwrite to start over, or choose another DST"
                )
        removed = vio.remove_stale_temps(dst_p) if dst_p.exists() else 0
        if removed:
            _warn(f"removed {removed} temporary file(s) left by an interrupted run")
    else:
        if overwrite and dst_p.exists():
            vio.remove_stale_temps(dst_p)
        man = Manifest.create(man_path, header, overwrite=overwrite)
    dst_p.mkdir(parents=True, exist_ok=True)

    usable = []
    for image_id in ids:
        try:
            image_id.encode("utf-8")
        except UnicodeEncodeError:
            summary.failed += 1
            summary.problems.append((image_id.encode("utf-8", "replace").decode(), "failed",
                                     "file name is not valid UTF-8"))
            continue
        usable.append(image_id)
    ids = usable
    names = output_names(ids, fmt=options.format, rename=options.rename, key=key)
    out_formats = {i: _out_format(i, options.format) for i in ids}
    todo: set[str] = set()
    for image_id in ids:
        rec = man.records.get(image_id)
        out = dst_p / names[image_id]
        if rec and rec.get("t") == "done" and rec.get("out") == names[image_id] and out.exists():
            summary.already += 1
            continue
        ours = rec is not None and rec.get("t") in ("pending", "done") and rec.get("out") == names[image_id]
        if out.exists() and not overwrite and not ours:
            summary.skipped += 1
            summary.problems.append((image_id, "skipped", f"output {names[image_id]} exists and was "
                                     "not written by this run (pass --overwrite to replace it)"))
            continue
        todo.add(image_id)

    opts = options.as_dict()
    chunks = [ids[i:i + int(batch_size)] for i in range(0, len(ids), int(batch_size))]

    def jobs() -> Iterator[tuple[list[str], tuple]]:
        for chunk in chunks:
            if not any(i in todo for i in chunk):
                continue
            items = [(i, out_formats[i], _read_or_none(src_p / i)) for i in chunk]
            yield chunk, (items,)

    bar = _progress(len(todo), progress, "obfuscate")
    try:
        for _chunk, results in map_unordered(
            _obfuscate_chunk, jobs(), workers=workers, dask=dask, shared=(key, opts)
        ):
            mine = [r for r in results if r["id"] in todo]
            man.append({"t": "pending", "id": r["id"], "out": names[r["id"]]}
                       for r in mine if r["t"] == "done")
            records = []
            for r in mine:
                image_id = r["id"]
                if r["t"] == "done":
                    data = r.pop("data")
                    vio.write_bytes_atomic(dst_p / names[image_id], data, overwrite=True)
                    r["out"] = names[image_id]
                    summary.done += 1
                else:
                    if r["t"] == "skipped":
                        summary.skipped += 1
                    else:
                        summary.failed += 1
                    summary.problems.append((image_id, r["t"], r["reason"]))
                records.append(r)
            man.append(records)
            bar.update(len(mine))
    finally:
        bar.close()
        man.close()
    summary.seconds = time.perf_counter() - t0
    return summary


# -- restore --------------------------------------------------------------------------------------
def restore_folder(
    dst: str | os.PathLike,
    restored: str | os.PathLike,
    key: Any,
    *,
    key_path: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    overwrite: bool = False,
    workers: int = 1,
    dask: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> RunSummary:
    """Restore the originals' pixels of an obfuscated folder into ``restored`` (PNG files).

    Each output goes to the image id's place (its path relative to the original source), named as
    :func:`output_names` names PNG outputs (``NAME.png``). Every restored image is checked against
    a keyed checksum of the original pixels recorded in the manifest; a mismatch (wrong key,
    edited file) is a failure, never a silently wrong image. Existing files in ``restored`` are
    skipped unless ``overwrite``, so an interrupted restore can simply be rerun.

    Parameters
    ----------
    dst : path-like
        The obfuscated folder.
    restored : path-like
        Where to write the originals' pixels (must not be inside ``dst``).
    key : visualmixer.Key
    key_path, manifest : path-like, optional
        The manifest (default: found next to the key, see :func:`find_manifest`).
    overwrite, workers, dask, batch_size, progress, warn
        As for :func:`obfuscate_folder`.
    """
    from visualmixer.tools.manifest import Manifest

    t0 = time.perf_counter()
    _check_parallel(workers, dask, batch_size)
    dst_p, out_p = _resolved(dst), _resolved(restored)
    check_folders(dst_p, out_p, src_label="DST", dst_label="RESTORED")
    if manifest is None:
        if key_path is None:
            raise ValueError("give key_path (to find the manifest next to the key) or manifest")
        man_path = find_manifest(key_path, dst_p)
    else:
        man_path = Path(manifest)
    man = Manifest.read(man_path)
    summary = RunSummary(manifest=man_path)
    original_src = man.header.get("src")
    if original_src and _inside(out_p, _resolved(original_src)):
        raise ValueError(
            f"RESTORED {out_p} is inside the original SRC {original_src}: choose a folder outside "
            "it (the originals are never written over)"
        )
    if man.header.get("key_fingerprint") != key.fingerprint:
        raise ValueError(
            f"--key: this key (fingerprint {key.fingerprint}) is not the one that made {man_path} "
            f"(fingerprint {man.header.get('key_fingerprint')})"
        )
    done = man.done()
    for rec in man.records.values():
        if rec.get("t") in ("failed", "skipped"):
            summary.skipped += 1
            summary.problems.append((rec["id"], "skipped", f"not obfuscated: {rec.get('reason')}"))
    names = output_names([r["id"] for r in done], fmt="png")
    if any(r.get("out_format") == "jpeg" for r in done):
        msg = ("some outputs were written as JPEG (--format same): their restored pixels are "
               "close to, not equal to, the originals")
        summary.warnings.append(msg)
        if warn is not None:
            warn(msg)
    todo = []
    for rec in done:
        if (out_p / names[rec["id"]]).exists() and not overwrite:
            summary.already += 1
        else:
            todo.append(rec)
    out_p.mkdir(parents=True, exist_ok=True)
    opts = {"compress_level": int(man.header.get("options", {}).get("compress_level", 6))}
    chunks = [todo[i:i + int(batch_size)] for i in range(0, len(todo), int(batch_size))]

    def jobs():
        for chunk in chunks:
            items = [(r["id"], r, _read_or_none(dst_p / r["out"])) for r in chunk]
            yield None, (items,)

    inexact = 0
    bar = _progress(len(todo), progress, "restore")
    try:
        for _tag, results in map_unordered(
            _restore_chunk, jobs(), workers=workers, dask=dask, shared=(key, opts)
        ):
            for r in results:
                if r["t"] == "done":
                    vio.write_bytes_atomic(out_p / names[r["id"]], r["data"], overwrite=True)
                    summary.done += 1
                    inexact += not r["exact"]
                else:
                    summary.failed += 1
                    summary.problems.append((r["id"], "failed", r["reason"]))
            bar.update(len(results))
    finally:
        bar.close()
    if inexact:
        summary.warnings.append(f"{inexact} image(s) restored approximately (JPEG outputs)")
    summary.seconds = time.perf_counter() - t0
    return summary
