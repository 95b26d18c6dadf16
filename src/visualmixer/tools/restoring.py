"""Restoring an obfuscated folder: the library behind ``visualmixer restore`` (see
:mod:`visualmixer.tools.folders` for the guarantees shared with ``obfuscate``).

Every ``done`` image of the manifest is restored to its id's place under RESTORED as PNG and
checked against the keyed checksum of its original pixels. A mixed run
(:mod:`visualmixer.tools.mixrun`) is restored group by group. RESTORED must be empty, new, or made
by an earlier restore of the same run (a resume) unless ``overwrite=True``; images the obfuscation
never finished are counted (:attr:`RunSummary.never`) and named in a warning.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visualmixer.tools import imageio as vio
from visualmixer.tools.chunks import pixels_match, restore_chunk
from visualmixer.tools.distributed import map_unordered
from visualmixer.tools.errors import describe_oserror
from visualmixer.tools.layout import (
    RunSummary,
    check_folders,
    check_parallel,
    check_restore_target,
    find_manifest,
    is_inside,
    listed_images,
    natural_name,
    note_lock_and_damage,
    output_names,
    recorded_ids,
    resolved_path,
    warner,
)
from visualmixer.tools.lock import RunLock
from visualmixer.tools.mixchunks import unmix_chunk
from visualmixer.tools.mixrun import restore_mixed_jobs
from visualmixer.tools.progress import progress as progress_bar
from visualmixer.tools.safe_io import StopGuard, check_no_way_into

__all__ = ["restore_folder"]


# -- restore --------------------------------------------------------------------------------------
def _restore_manifest_path(manifest, key_path, dst_p: Path) -> Path:
    if manifest is not None:
        if Path(manifest).is_dir():
            raise ValueError(f"manifest: {manifest} is a folder; give the manifest file (its path is on the "
                             "summary line of the obfuscate run)")
        if not Path(manifest).is_file():
            raise FileNotFoundError(
                f"manifest: there is no manifest file at {manifest} (obfuscate writes it beside the "
                "key file that made the run, as KEYNAME.<DST name>-<8 hex>.manifest.jsonl, or where "
                "its manifest=PATH said, and prints its path on its summary line)"
            )
        return Path(manifest)
    if key_path is None:
        raise ValueError("give key_path (to find the manifest next to the key) or manifest")
    return find_manifest(key_path, dst_p)


def _check_restore_manifest(man, man_path: Path, out_p: Path, key: Any) -> None:
    original_src = man.header.get("src")
    if original_src and is_inside(out_p, resolved_path(original_src)):
        raise ValueError(
            f"RESTORED {out_p} is inside the original SRC {original_src}: choose a folder outside "
            "it (the originals are never written over)"
        )
    if man.header.get("key_fingerprint") != key.fingerprint:
        raise ValueError(
            f"key: this key (fingerprint {key.fingerprint}) is not the one that made {man_path} "
            f"(fingerprint {man.header.get('key_fingerprint')})"
        )


def _check_manifest_dst(man, man_path: Path, dst_p: Path, say: Callable[[str], None]) -> None:
    """A manifest of a run into another folder: refused when none of its outputs is in ``dst_p``
    (the wrong manifest), else a warning (a moved or copied release restores from where it is)."""
    recorded = man.header.get("dst")
    if not recorded or resolved_path(recorded) == dst_p:
        return
    outs = [r["out"] for r in man.done() if r.get("out")]
    if outs and not any((dst_p / o).is_file() for o in outs):
        raise ValueError(
            f"manifest: {man_path} records a run into {recorded}, not DST {dst_p}, and none of its "
            f"{len(outs)} output(s) is in {dst_p}: pass the manifest of {dst_p} (manifest=PATH; "
            f"obfuscate printed its path), or restore {recorded} with this one"
        )
    say(f"{man_path} records a run into {recorded}, not {dst_p}: restoring from {dst_p} (a moved or "
        "copied release); outputs missing there fail")


def _never_inside(man, dst_p: Path) -> dict[str, Path]:
    """The folders no restored file may be written inside, however its path resolves."""
    src = man.header.get("src")
    return {"DST": dst_p, **({"the original SRC": resolved_path(src)} if src else {})}


def _restore_todo(man, out_p: Path, overwrite: bool, summary: RunSummary, say: Callable[[str], None],
                  never_inside: dict[str, Path], key: Any, dst_p: Path) -> tuple[list[dict], dict[str, str]]:
    done = man.done()
    listed = listed_images(man)
    finished = sum(1 for i, r in man.records.items() if i and r.get("t") in ("done", "failed", "skipped"))
    if listed is not None and listed > finished:
        summary.never = listed - finished
        say(f"{summary.never} image(s) of this run were never obfuscated (the obfuscate run was "
            "stopped before them): resume it (run the same obfuscate command again) to finish them, "
            "then restore again")
    for rec in man.records.values():
        if rec.get("t") in ("failed", "skipped"):
            summary.skipped += 1
            summary.problems.append((rec["id"], "skipped", f"not obfuscated: {rec.get('reason')}"))
    # Names from every image the run recorded, not only the finished ones: an image that failed
    # or was pending still holds its name, so a later restore names the others as this one does.
    every = output_names(recorded_ids(man), fmt="png")
    names = {r["id"]: every[r["id"]] for r in done}
    check_no_way_into(out_p, names.values(), never_inside)  # a link in RESTORED must not lead there
    if any(r.get("out_format") == "jpeg" for r in done):
        say("some outputs were written as JPEG (format='same'): their restored pixels are "
            "close to, not equal to, the originals")
    contested = _contested(every)
    todo = []
    for rec in done:
        path = out_p / names[rec["id"]]
        if (not overwrite and path.is_file() and not path.is_symlink()  # a link is no restored file
                and (rec["id"] not in contested and not _older(path, dst_p / rec["out"])
                     or _restored_from(path, rec, key))):
            summary.already += 1
        else:
            todo.append(rec)
    return todo, names


def _contested(names: dict[str, str]) -> set[str]:
    """The ids whose restored file name another id of the run could have had in an earlier
    restore (``a.jpg`` beside ``a.png``: which of them is ``a.png`` depends on which were
    recorded then). A file of such a name is taken as restored only when its pixels are the image's."""
    claims = Counter(natural_name(i).lower() for i in names)
    claims.update(name.lower() for i, name in names.items() if name != natural_name(i))
    return {i for i, name in names.items() if name != natural_name(i) or claims[name.lower()] > 1}


def _older(restored: Path, output: Path) -> bool:
    """Whether ``output`` was written after ``restored`` (its image may have been obfuscated again
    since, from a changed source): the restored file then counts as done only if its pixels pass.
    The output's change time, not its modification time, which settling sets back to whole seconds."""
    try:
        return restored.stat().st_mtime_ns < output.stat().st_ctime_ns
    except OSError:
        return False


def _restored_from(path: Path, rec: dict, key: Any) -> bool:
    """Whether the file ``path`` holds the restored pixels of the image ``rec`` describes."""
    try:
        return pixels_match(key, rec["id"], vio.read_image(path), rec.get("check"))
    except (OSError, ValueError):
        return False


def _read_output(path: Path, rel: str) -> tuple[bytes | None, str]:
    try:
        return vio.read_regular(path), ""  # (a FIFO or device put there would block a plain read)
    except FileNotFoundError:
        return None, f"{rel} is missing"
    except vio.ImageReadError as exc:
        return None, f"{rel}: {exc}"
    except OSError as exc:
        return None, f"cannot read {rel} ({describe_oserror(exc)}); rerun to retry"


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
    skipped unless ``overwrite``, so an interrupted restore can simply be rerun. The run holds the
    manifest's lock (one run per manifest at a time).

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
        As for :func:`obfuscate_folder` (which also lists the errors raised).
    """
    from visualmixer.tools.manifest import Manifest

    t0 = time.perf_counter()
    check_parallel(workers, dask, batch_size)
    dst_p, out_p = resolved_path(dst), resolved_path(restored)
    check_folders(dst_p, out_p, src_label="DST", dst_label="RESTORED")
    man_path = _restore_manifest_path(manifest, key_path, dst_p)
    summary = RunSummary(manifest=man_path, whole=True)
    say = warner(summary, warn)
    with RunLock(man_path, command="restore", target=str(out_p)) as lock, \
            RunLock.for_destination(out_p, command="restore"):
        man = Manifest.read(man_path)
        note_lock_and_damage(lock, man, say)
        _check_restore_manifest(man, man_path, out_p, key)
        _check_manifest_dst(man, man_path, dst_p, say)
        if not overwrite:
            check_restore_target(out_p, man)
        never_inside = _never_inside(man, dst_p)
        todo, names = _restore_todo(man, out_p, overwrite, summary, say, never_inside, key, dst_p)
        guard = StopGuard(man_path, len(todo), never_inside=never_inside)
        guard.mkdir(out_p)
        removed = vio.remove_stale_temps(out_p)
        if removed:
            say(f"removed {removed} temporary file(s) left by an interrupted restore")
        opts = {"compress_level": int(man.header.get("options", {}).get("compress_level", 6))}
        inexact = _run_restore(todo, names, man=man, dst_p=dst_p, out_p=out_p, key=key, opts=opts,
                               guard=guard, summary=summary, workers=workers, dask=dask,
                               batch_size=batch_size, show=progress)
    if inexact:
        summary.warnings.append(f"{inexact} image(s) restored approximately (JPEG outputs)")
    _say_not_restored(summary, say)
    summary.seconds = time.perf_counter() - t0
    return summary


def _say_not_restored(summary: RunSummary, say: Callable[[str], None]) -> None:
    """The warning of a restore that did not give every image of the run back."""
    missing = summary.failed + summary.skipped + summary.never
    if missing:
        parts = [f"{n} {what}" for n, what in ((summary.failed, "failed"),
                 (summary.skipped, "skipped (obfuscate failed or skipped them)"),
                 (summary.never, "never obfuscated")) if n]
        say(f"not every image of the run was restored: {missing} image(s) are not in RESTORED "
            f"({', '.join(parts)})")


def _run_restore(todo, names, *, man, dst_p, out_p, key, opts, guard, summary, workers, dask,
                 batch_size, show) -> int:
    """The chunk loop of a restore; returns how many images came back only approximately.
    A mixed run is restored group by group (:func:`~visualmixer.tools.mixrun.restore_mixed_jobs`)."""

    def read(r: dict) -> tuple:
        return (r["id"], r, *_read_output(dst_p / r["out"], r["out"]))

    def plain_jobs():
        for i in range(0, len(todo), int(batch_size)):
            yield None, ([read(r) for r in todo[i:i + int(batch_size)]],)

    fn, jobs = restore_chunk, plain_jobs()
    if any("mix" in r for r in todo):
        fn, jobs = unmix_chunk, restore_mixed_jobs(man, todo, read, batch_size, summary)
    wanted = {r["id"] for r in todo}
    inexact = 0
    bar = progress_bar(total=len(todo), enabled=show, desc="restore", unit="img")
    try:
        for _tag, results in map_unordered(fn, jobs, workers=workers, dask=dask, shared=(key, opts)):
            results = [r for r in results if r["id"] in wanted]
            for r in results:
                if r["t"] == "done":
                    guard.write_output(out_p / names[r["id"]], r["data"])
                    summary.done += 1
                    inexact += not r["exact"]
                else:
                    summary.failed += 1
                    summary.problems.append((r["id"], "failed", r["reason"]))
            bar.update(len(results))
    finally:
        bar.close()
    return inexact
